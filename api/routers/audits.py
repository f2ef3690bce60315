"""Audits: opened by the auditor or by a customer holding the receipt; read by the admin and the provider."""

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from api.auditing import request_audit
from api.deps import CallerDep, ContextDep, Role, SessionDep, StaffDep, forbidden, unauthorized
from api.errors import NotFound
from api.models import Audit, AuditStatus, AuditTrigger, Report
from api.reporting import holds_receipt

router = APIRouter(prefix="/v1/audits", tags=["audits"])


class AuditCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"report_id": "6a0e2b8c-54c7-4b59-8f0e-6f7f4f1b9a21"}]},
    )

    report_id: uuid.UUID = Field(strict=False, description="the report to audit")


class AuditAccepted(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"audit_id": "1d4b2f3a-7c55-4e0b-b1a8-2f5c8d9e0a11", "status": "pending", "created": True}
            ]
        }
    )

    audit_id: uuid.UUID
    status: str
    created: bool = Field(description="False when an audit of this report was already running: that one")


class ChallengeSummary(BaseModel):
    challenge_id: uuid.UUID
    round: int
    status: str
    issued_at: datetime
    deadline: datetime


class VerdictOut(BaseModel):
    outcome: str = Field(description="pass | fail | inconclusive")
    decided_at: datetime
    statement: dict[str, Any] = Field(
        description="what is signed: outcome, evidence (every check's figure), ids"
    )
    signature: str = Field(description="Ed25519 over canonical_json(statement), hex")
    signing_key: str = Field(description="the auditor's public key, hex")


class AuditOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "audit_id": "1d4b2f3a-7c55-4e0b-b1a8-2f5c8d9e0a11",
                    "report_id": "6a0e2b8c-54c7-4b59-8f0e-6f7f4f1b9a21",
                    "provider_id": "0b5e6d1e-3f0c-4d8a-9a57-1c1f8b0e2a44",
                    "request_id": "chatcmpl-9f2c4e1a",
                    "status": "done",
                    "trigger": "admin",
                    "created_at": "2025-01-01T12:00:00Z",
                    "updated_at": "2025-01-01T12:00:09Z",
                    "challenges": [],
                    "verdict": None,
                }
            ]
        }
    )

    audit_id: uuid.UUID
    report_id: uuid.UUID
    provider_id: uuid.UUID
    request_id: str
    status: str = Field(description="pending | challenged | verifying | done")
    trigger: str
    created_at: datetime
    updated_at: datetime
    challenges: list[ChallengeSummary]
    verdict: VerdictOut | None


def _out(audit: Audit) -> dict[str, Any]:
    verdict = audit.verdict
    return {
        "audit_id": audit.id,
        "report_id": audit.report_id,
        "provider_id": audit.provider_id,
        "request_id": audit.report.request_id,
        "status": audit.status,
        "trigger": audit.trigger,
        "created_at": audit.created_at,
        "updated_at": audit.updated_at,
        "challenges": [
            {
                "challenge_id": c.id,
                "round": c.round,
                "status": c.status,
                "issued_at": c.issued_at,
                "deadline": c.deadline,
            }
            for c in audit.challenges
        ],
        "verdict": None
        if verdict is None
        else {
            "outcome": verdict.outcome,
            "decided_at": verdict.decided_at,
            "statement": verdict.statement,
            "signature": verdict.signature,
            "signing_key": verdict.signing_key,
        },
    }


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=AuditAccepted,
    responses={429: {"description": "the receipt's audit quota is used up"}},
)
def create_audit(
    payload: AuditCreate, session: SessionDep, context: ContextDep, caller: CallerDep
) -> dict[str, Any]:
    """Audit a report: the auditor admin, or a customer with the report's receipt token (within a quota)."""
    report = session.get(Report, payload.report_id)
    if caller.role == Role.PROVIDER:
        raise forbidden("a provider cannot open audits of itself")
    if caller.role == Role.RECEIPT:
        if report is None or caller.token is None or not holds_receipt(report, caller.token):
            raise unauthorized("this receipt token does not belong to that report")
        trigger = AuditTrigger.CUSTOMER
    else:
        if report is None:
            raise NotFound("report not found")
        trigger = AuditTrigger.ADMIN
    audit, created = request_audit(session, context, report, trigger)
    return {"audit_id": audit.id, "status": audit.status, "created": created}


def _audits_query() -> Any:
    return select(Audit).options(
        selectinload(Audit.report), selectinload(Audit.challenges), selectinload(Audit.verdict)
    )


@router.get("/{audit_id}", response_model=AuditOut)
def get_audit(audit_id: uuid.UUID, session: SessionDep, caller: StaffDep) -> dict[str, Any]:
    """Status, verdict and evidence of one audit (the admin, or the audited provider)."""
    audit = session.scalars(_audits_query().where(Audit.id == audit_id)).one_or_none()
    if audit is None or (caller.role == Role.PROVIDER and audit.provider_id != caller.provider_id):
        raise NotFound("audit not found")
    return _out(audit)


@router.get("", response_model=list[AuditOut])
def list_audits(
    session: SessionDep,
    caller: StaffDep,
    provider: Annotated[uuid.UUID | None, Query(description="only this provider's audits")] = None,
    audit_status: Annotated[AuditStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[dict[str, Any]]:
    """Audits, newest first. A provider sees only its own."""
    if caller.role == Role.PROVIDER:
        if provider is not None and provider != caller.provider_id:
            raise forbidden("a provider can only list its own audits")
        provider = caller.provider_id
    query = _audits_query().order_by(Audit.created_at.desc(), Audit.id).limit(limit).offset(offset)
    if provider is not None:
        query = query.where(Audit.provider_id == provider)
    if audit_status is not None:
        query = query.where(Audit.status == audit_status.value)
    return [_out(audit) for audit in session.scalars(query)]
