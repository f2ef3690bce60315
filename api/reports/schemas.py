"""Request and response schemas of the reports resource."""

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from api.schemas import Page, StorableBody, StrictModel
from api.validation import MAX_JSON_INTEGER
from service.models import AuditStatus, AuditTrigger, Outcome, Report
from service.text import check_identifier

MAX_BATCH = 1000
# Far beyond any real request; the largest integer RFC 8785 canonical JSON (an IEEE double) holds exactly.
MAX_TOKENS = MAX_JSON_INTEGER

TokenCount = Annotated[int, Field(ge=0, le=MAX_TOKENS)]
# The most leaves a commitment may claim: two hundred times the longest reasoning trace of the corpus.
# Drawing an audit's challenge walks the claimed blocks (auditor.protocol.challenge), so an unbounded
# claim would let one report make every audit of it arbitrarily slow.
MAX_COMMITTED_LEAVES = 2**24
# Ids people read and compare: no control, bidi-override or invisible characters, and NFC. Refused rather
# than normalised: the provider signs the report as sent (service/text.py).
ReadableId = Annotated[str, AfterValidator(check_identifier)]

EXAMPLE_REPORT: dict[str, Any] = {
    "request_id": "chatcmpl-9f2c4e1a",
    "model": "example-reasoner-1",
    "usage": {
        "input_tokens": 42,
        "output_tokens": 1310,
        "reasoning_tokens": 1187,
        "raw": {"prompt_tokens": 42, "completion_tokens": 1310, "reasoning_tokens": 1187},
    },
    "commitment": {
        "version": "coin/2",
        "root": "5f1d0c2e" * 8,
        "size": 1187,
        "block_size": 256,
        "embd_id": "all-MiniLM-L6-v2@0123456789abcdef",
        "tokenizer_id": "qwen2",
        "repetition": {"digest": "7d2e" * 16, "key_root": "c0a1" * 16},
    },
    "answer": {"digest": "a3c1" * 16, "embedding": "<base64 of 384 int8>"},
}


class Usage(StrictModel):
    input_tokens: TokenCount
    output_tokens: TokenCount = Field(description="visible answer tokens plus reasoning tokens")
    reasoning_tokens: TokenCount = Field(description="hidden tokens, counted inside output_tokens")
    raw: dict[str, Any] | None = Field(None, description="the provider's own usage object, verbatim")


class RepetitionIn(StrictModel):
    digest: str = Field(max_length=64, description="BLAKE3 of the repetition profile, hex")
    key_root: str = Field(max_length=64, description="RFC 9162 root of the profile's bucket keys, hex")


class CommitmentIn(StrictModel):
    version: str = Field(max_length=32, examples=["coin/2", "coin/1"])
    root: str = Field(max_length=64, description="RFC 9162 Merkle root, 64 lowercase hex")
    size: int = Field(
        le=MAX_COMMITTED_LEAVES,
        description="number of committed leaves; must equal usage.reasoning_tokens (at most 2**24)",
    )
    block_size: int = Field(description="tokens per block, 16..1024")
    embd_id: str = Field(max_length=200)
    tokenizer_id: str = Field(max_length=100)
    repetition: RepetitionIn | None = Field(
        None, description="coin/2 only: what fixes the repetition profile (docs/protocol.md)"
    )


class AnswerIn(StrictModel):
    digest: str = Field(max_length=64, description="BLAKE3 of the answer's UTF-8, hex")
    embedding: str = Field(max_length=1024, description="base64 of q(Embd(answer)), 384 int8")
    text: str | None = Field(None, max_length=1_000_000)


class ReportIn(StrictModel, StorableBody):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_REPORT]})

    request_id: ReadableId = Field(
        min_length=1,
        max_length=256,
        description="the provider's id of the billed request (NFC; no control, bidi or invisible characters)",
    )
    model: ReadableId = Field(min_length=1, max_length=200)
    usage: Usage
    commitment: CommitmentIn
    answer: AnswerIn
    signature: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{128}$",
        description="Ed25519 signature (hex) over the canonical JSON of the report without this field",
    )


class ReceiptBody(BaseModel):
    version: str
    report_id: uuid.UUID
    provider_id: uuid.UUID
    request_id: str
    digest: str = Field(description="BLAKE3 of the canonical report, hex")
    received_at: str
    retention_days: int | None = Field(
        None,
        description="coin-receipt/3: the provider keeps this report's openings for this many days after "
        "received_at, within which the auditor may draw it for audit (absent from coin-receipt/2)",
    )
    auditor_key: str = Field(description="the auditor's Ed25519 public key, hex")


class ReceiptOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "report_id": "6a0e2b8c-54c7-4b59-8f0e-6f7f4f1b9a21",
                    "receipt": {
                        "version": "coin-receipt/3",
                        "report_id": "6a0e2b8c-54c7-4b59-8f0e-6f7f4f1b9a21",
                        "provider_id": "0b5e6d1e-3f0c-4d8a-9a57-1c1f8b0e2a44",
                        "request_id": "chatcmpl-9f2c4e1a",
                        "digest": "9c4e" * 16,
                        "received_at": "2025-01-01T12:00:00.000000+00:00",
                        "retention_days": 30,
                        "auditor_key": "d75a9801" * 8,
                    },
                    "signature": "e5564300" * 16,
                    "receipt_token": "rt_Pq0…",
                }
            ]
        }
    )

    report_id: uuid.UUID
    receipt: ReceiptBody
    signature: str = Field(description="the auditor's Ed25519 signature over canonical_json(receipt), hex")
    receipt_token: str | None = Field(
        description="secret for the customer: status lookups and audit requests. A replay returns the same "
        "token; null only when the key that derived it has been rotated out (the token still works)"
    )


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"reports": [EXAMPLE_REPORT]}]})

    # Items are validated one by one, so that one bad report does not sink the other 999.
    reports: list[Any] = Field(
        min_length=1, max_length=MAX_BATCH, description="up to 1,000 reports (ReportIn)"
    )


class BatchItemOut(BaseModel):
    index: int
    status: int = Field(description="what a single POST would have answered: 201, 200, 400, 409 or 422")
    report_id: uuid.UUID | None = None
    receipt: ReceiptOut | None = None
    error: Any = None


class BatchOut(BaseModel):
    results: list[BatchItemOut]


class AuditSummary(BaseModel):
    audit_id: uuid.UUID
    status: AuditStatus
    trigger: AuditTrigger
    created_at: datetime
    outcome: Outcome | None = Field(
        description="the verdict, once decided: fail = proof of inflation; suspect = statistical "
        "evidence, which raises the provider's monitoring and accuses nobody"
    )
    decided_at: datetime | None


class BilledUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    reasoning_tokens: int


class ReportStatus(BaseModel):
    """What a customer may see about its request."""

    report_id: uuid.UUID
    request_id: str
    model: str
    usage: BilledUsage
    digest: str
    received_at: datetime
    audits: list[AuditSummary]

    @classmethod
    def of(cls, report: Report) -> "ReportStatus":
        return cls(**_status_fields(report))


class ReportListed(ReportStatus):
    """A report in a list: what its customer sees, and whose it is."""

    provider_id: uuid.UUID

    @classmethod
    def of(cls, report: Report) -> "ReportListed":
        return cls(**_status_fields(report), provider_id=report.provider_id)


class ReportPage(Page[ReportListed]):
    """Reports, newest first."""


class ReportOut(ReportListed):
    """The stored report and its receipt (the provider that owns it, or the admin)."""

    body: dict[str, Any]
    receipt: dict[str, Any]

    @classmethod
    def of(cls, report: Report) -> "ReportOut":
        return cls(
            **_status_fields(report), provider_id=report.provider_id, body=report.body, receipt=report.receipt
        )


def _status_fields(report: Report) -> dict[str, Any]:
    return {
        "report_id": report.id,
        "request_id": report.request_id,
        "model": report.model,
        "usage": BilledUsage(
            input_tokens=report.input_tokens,
            output_tokens=report.output_tokens,
            reasoning_tokens=report.reasoning_tokens,
        ),
        "digest": report.digest,
        "received_at": report.received_at,
        "audits": [
            AuditSummary(
                audit_id=audit.id,
                status=audit.status,
                trigger=audit.trigger,
                created_at=audit.created_at,
                outcome=audit.verdict.stated_outcome if audit.verdict else None,
                decided_at=audit.verdict.decided_at if audit.verdict else None,
            )
            for audit in report.audits
        ],
    }
