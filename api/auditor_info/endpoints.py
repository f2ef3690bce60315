"""What a client needs to know about this auditor: its public key and what it verifies with."""

from fastapi import APIRouter

from api.auditor_info.schemas import AuditorInfo
from api.deps import ContextDep
from api.problems import COMMON_PROBLEMS
from auditor.protocol import PROTOCOL_VERSION
from auditor.protocol.tokenize import known_tokenizers
from service.audits.verdicts import VERDICT_VERSION
from service.reports.service import RECEIPT_VERSION, accepted_embd_id

router = APIRouter(prefix="/v1/auditor", tags=["auditor"], responses=COMMON_PROBLEMS)


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
        retention_days=context.settings.retention_days,
    )
