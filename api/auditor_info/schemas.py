"""Response schema of the auditor's public parameters."""

from pydantic import BaseModel, Field


class AuditorInfo(BaseModel):
    public_key: str = Field(description="Ed25519 key that signs receipts and verdicts, hex")
    protocol_version: str
    receipt_version: str
    verdict_version: str
    embd_id: str = Field(description="the only embedding model id reports may name")
    tokenizers: list[str]
    retention_days: int = Field(
        description="how long a provider must keep a report's openings after its receipt: the auditor "
        "may draw it for audit, unannounced, until then (also in each coin-receipt/3)"
    )
