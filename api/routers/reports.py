"""Reports: providers submit one per billed request and get a signed receipt (DESIGN §2 step 2, §3)."""

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from anyio import to_thread
from fastapi import APIRouter, Response, status
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy.orm import Session

from api.context import ServiceContext
from api.deps import (
    CallerDep,
    ContextDep,
    ProviderKey,
    ProviderKeyDep,
    Role,
    SessionDep,
    StaffDep,
    unauthorized,
)
from api.errors import NotFound, ServiceError
from api.jsonio import FastJSONResponse
from api.models import Provider, Report
from api.reporting import Submission, holds_receipt, receipt_of, submit_report, submit_reports
from api.validation import check_storable

router = APIRouter(prefix="/v1/reports", tags=["reports"])

Result = TypeVar("Result")

MAX_BATCH = 1000
MAX_TOKENS = 2**53  # far beyond any real request; keeps every count inside a BIGINT and a JSON double

TokenCount = Annotated[int, Field(ge=0, le=MAX_TOKENS)]

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
        "version": "coin/1",
        "root": "5f1d0c2e" * 8,
        "size": 1187,
        "block_size": 256,
        "embd_id": "all-MiniLM-L6-v2@0123456789abcdef",
        "tokenizer_id": "qwen2",
    },
    "answer": {"digest": "a3c1" * 16, "embedding": "<base64 of 384 int8>"},
}


class StrictModel(BaseModel):
    """Strict JSON types (no "5" for 5) and no unknown fields: a valid report validates to itself."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Usage(StrictModel):
    input_tokens: TokenCount
    output_tokens: TokenCount = Field(description="visible answer tokens plus reasoning tokens")
    reasoning_tokens: TokenCount = Field(description="hidden tokens, counted inside output_tokens")
    raw: dict[str, Any] | None = Field(None, description="the provider's own usage object, verbatim")


class CommitmentIn(StrictModel):
    version: str = Field(max_length=32, examples=["coin/1"])
    root: str = Field(max_length=64, description="RFC 9162 Merkle root, 64 lowercase hex")
    size: int = Field(description="number of committed leaves; must equal usage.reasoning_tokens")
    block_size: int = Field(description="tokens per block, 16..1024")
    embd_id: str = Field(max_length=200)
    tokenizer_id: str = Field(max_length=100)


class AnswerIn(StrictModel):
    digest: str = Field(max_length=64, description="BLAKE3 of the answer's UTF-8, hex")
    embedding: str = Field(max_length=1024, description="base64 of q(Embd(answer)), 384 int8")
    text: str | None = Field(None, max_length=1_000_000)


class ReportIn(StrictModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_REPORT]})

    @model_validator(mode="before")
    @classmethod
    def storable(cls, data: Any) -> Any:
        """Only text the store can hold, anywhere in the report (one walk, here, for every part)."""
        return check_storable(data)

    request_id: str = Field(
        min_length=1, max_length=256, description="the provider's id of the billed request"
    )
    model: str = Field(min_length=1, max_length=200)
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
    auditor_key: str = Field(description="the auditor's Ed25519 public key, hex")


class ReceiptOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "report_id": "6a0e2b8c-54c7-4b59-8f0e-6f7f4f1b9a21",
                    "receipt": {
                        "version": "coin-receipt/1",
                        "report_id": "6a0e2b8c-54c7-4b59-8f0e-6f7f4f1b9a21",
                        "provider_id": "0b5e6d1e-3f0c-4d8a-9a57-1c1f8b0e2a44",
                        "request_id": "chatcmpl-9f2c4e1a",
                        "digest": "9c4e" * 16,
                        "received_at": "2025-01-01T12:00:00.000000+00:00",
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
    receipt_token: str = Field(description="secret for the customer: status lookups and audit requests")


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
    status: str
    trigger: str
    created_at: datetime
    outcome: str | None
    decided_at: datetime | None


class ReportStatus(BaseModel):
    report_id: uuid.UUID
    request_id: str
    model: str
    usage: dict[str, int]
    digest: str
    received_at: datetime
    audits: list[AuditSummary]


class ReportOut(ReportStatus):
    provider_id: uuid.UUID
    body: dict[str, Any]
    receipt: dict[str, Any]


def _status_of(report: Report) -> dict[str, Any]:
    return {
        "report_id": report.id,
        "request_id": report.request_id,
        "model": report.model,
        "usage": {
            "input_tokens": report.input_tokens,
            "output_tokens": report.output_tokens,
            "reasoning_tokens": report.reasoning_tokens,
        },
        "digest": report.digest,
        "received_at": report.received_at,
        "audits": [
            {
                "audit_id": audit.id,
                "status": audit.status,
                "trigger": audit.trigger,
                "created_at": audit.created_at,
                "outcome": audit.verdict.outcome if audit.verdict else None,
                "decided_at": audit.verdict.decided_at if audit.verdict else None,
            }
            for audit in report.audits
        ],
    }


async def _in_one_thread(
    context: ServiceContext, key: ProviderKey, work: Callable[[Session, Provider], Result]
) -> Result:
    """Authenticate and run `work` in one unit of work, in one worker thread.

    Intake is the hot path. With the usual dependencies, a request holds its connection across several
    thread hops: under load, requests holding connections then wait for threads held by requests waiting
    for connections, and the chain lock's holder waits for a thread to commit. Here a connection is
    taken and given back within one thread, so connections in use never exceed threads."""

    def run() -> Result:
        with context.db.unit_of_work() as session:
            return work(session, key.provider(session))

    return await to_thread.run_sync(run)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ReceiptOut,
    responses={
        200: {
            "description": "the same report was already stored: the same receipt again",
            "model": ReceiptOut,
        },
        400: {"description": "protocol violation (size ≠ reasoning_tokens, unknown embd_id or tokenizer, …)"},
        409: {"description": "this request_id was already reported with a different body"},
    },
)
async def submit(
    payload: ReportIn, response: Response, context: ContextDep, key: ProviderKeyDep
) -> dict[str, Any]:
    """Submit one report; idempotent on `request_id`."""
    body = payload.model_dump(mode="json", exclude_unset=True)
    submission = await _in_one_thread(
        context, key, lambda session, provider: submit_report(session, context, provider, body)
    )
    if not submission.created:
        response.status_code = status.HTTP_200_OK
    return receipt_of(context, submission)


def _schema_errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


def _submit_items(
    session: Session, context: ServiceContext, provider: Provider, items: list[Any]
) -> list[dict[str, Any]]:
    results: dict[int, dict[str, Any]] = {}
    bodies: dict[int, dict[str, Any]] = {}  # index -> schema-valid report
    for index, item in enumerate(items):
        try:
            ReportIn.model_validate(item)
            bodies[index] = item  # strict: a valid report validates to itself, so no dump is needed
        except ValidationError as exc:
            results[index] = {"index": index, "status": 422, "error": _schema_errors(exc)}
    outcomes = submit_reports(session, context, provider, list(bodies.values()))
    for index, outcome in zip(bodies, outcomes, strict=True):
        if isinstance(outcome, Submission):
            results[index] = {
                "index": index,
                "status": 201 if outcome.created else 200,
                "report_id": str(outcome.report_id),
                "receipt": receipt_of(context, outcome),
            }
        else:
            code = outcome.status_code if isinstance(outcome, ServiceError) else status.HTTP_400_BAD_REQUEST
            results[index] = {"index": index, "status": code, "error": str(outcome)}
    return [results[index] for index in range(len(items))]


@router.post("/batch", response_model=BatchOut)
async def submit_batch(payload: BatchIn, context: ContextDep, key: ProviderKeyDep) -> FastJSONResponse:
    """Submit up to 1,000 reports; each gets its own outcome, and each stored report is atomic."""
    results = await _in_one_thread(
        context, key, lambda session, provider: _submit_items(session, context, provider, payload.reports)
    )
    # The results are built here, not taken from the caller: re-validating up to 1,000 receipts
    # against BatchOut cost as much as storing them. `response_model` still documents the shape.
    return FastJSONResponse({"results": results})


def _readable_report(session: SessionDep, report_id: uuid.UUID, caller: CallerDep) -> Report:
    report = session.get(Report, report_id)
    if caller.role == Role.RECEIPT:
        if report is None or caller.token is None or not holds_receipt(report, caller.token):
            raise unauthorized("this receipt token does not belong to that report")
        return report
    if report is None or (caller.role == Role.PROVIDER and report.provider_id != caller.provider_id):
        raise NotFound("report not found")
    return report


@router.get("/{report_id}/status", response_model=ReportStatus)
def report_status(report_id: uuid.UUID, session: SessionDep, caller: CallerDep) -> dict[str, Any]:
    """What a customer may see about its request: the billed counts and the outcome of its audits.

    Authorised by the report's receipt token (or by the provider that owns it, or the admin)."""
    return _status_of(_readable_report(session, report_id, caller))


@router.get("/{report_id}", response_model=ReportOut)
def get_report(report_id: uuid.UUID, session: SessionDep, caller: StaffDep) -> dict[str, Any]:
    """The full stored report and its receipt (the provider that owns it, or the admin)."""
    report = _readable_report(session, report_id, caller)
    return {
        **_status_of(report),
        "provider_id": report.provider_id,
        "body": report.body,
        "receipt": report.receipt,
    }
