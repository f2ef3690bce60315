"""Response schema of the auditor's public parameters."""

from pydantic import BaseModel, Field


class AuditorInfo(BaseModel):
    public_key: str = Field(description="Ed25519 key that signs receipts and verdicts, hex")
    protocol_version: str
    receipt_version: str
    verdict_version: str
    embd_id: str = Field(description="the only embedding model id reports may name")
    tokenizers: list[str]
