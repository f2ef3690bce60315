"""What a client needs to know about this auditor: its public key and what it verifies with."""

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import ContextDep
from api.reporting import RECEIPT_VERSION, accepted_embd_id
from auditor import PROTOCOL_VERSION
from auditor.tokenize import known_tokenizers
from workers.jobs import VERDICT_VERSION

router = APIRouter(prefix="/v1/auditor", tags=["auditor"])


class AuditorInfo(BaseModel):
    public_key: str = Field(description="Ed25519 key that signs receipts and verdicts, hex")
    protocol_version: str
    receipt_version: str
    verdict_version: str
    embd_id: str = Field(description="the only embedding model id reports may name")
    tokenizers: list[str]


@router.get("", response_model=AuditorInfo)
def auditor_info(context: ContextDep) -> AuditorInfo:
    """Public, no credentials needed: check receipts and verdicts offline with `public_key`."""
    return AuditorInfo(
        public_key=context.signer.public_key_hex,
        protocol_version=PROTOCOL_VERSION,
        receipt_version=RECEIPT_VERSION,
        verdict_version=VERDICT_VERSION,
        embd_id=accepted_embd_id(),
        tokenizers=known_tokenizers(),
    )
