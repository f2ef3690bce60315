"""Audits: opened by the auditor or by a customer holding the receipt; read by the admin and the provider."""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from api.audits.schemas import AuditAccepted, AuditCreate, AuditOut
from api.deps import CallerDep, ContextDep, Role, SessionDep, StaffDep, forbidden, unauthorized
from api.problems import COMMON_PROBLEMS, problem_responses
from service.audits.service import request_audit
from service.errors import NotFound
from service.models import Audit, AuditStatus, AuditTrigger, Outcome, Report, Verdict
from service.reports.service import holds_receipt

router = APIRouter(prefix="/v1/audits", tags=["audits"], responses=COMMON_PROBLEMS)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=AuditAccepted,
    responses=problem_responses(401, 403, 404, 429),
)
def create_audit(
    payload: AuditCreate, session: SessionDep, context: ContextDep, caller: CallerDep
) -> AuditAccepted:
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
    return AuditAccepted(audit_id=audit.id, status=audit.status, created=created)


def _audits_query() -> Any:
    return select(Audit).options(
        selectinload(Audit.report), selectinload(Audit.challenges), selectinload(Audit.verdict)
    )


@router.get("/{audit_id}", response_model=AuditOut, responses=problem_responses(401, 403, 404))
def get_audit(audit_id: uuid.UUID, session: SessionDep, caller: StaffDep) -> AuditOut:
    """Status, verdict and evidence of one audit (the admin, or the audited provider)."""
    audit = session.scalars(_audits_query().where(Audit.id == audit_id)).one_or_none()
    if audit is None or (caller.role == Role.PROVIDER and audit.provider_id != caller.provider_id):
        raise NotFound("audit not found")
    return AuditOut.of(audit)


@router.get("", response_model=list[AuditOut], responses=problem_responses(401, 403))
def list_audits(
    session: SessionDep,
    caller: StaffDep,
    provider: Annotated[uuid.UUID | None, Query(description="only this provider's audits")] = None,
    audit_status: Annotated[AuditStatus | None, Query(alias="status")] = None,
    outcome: Annotated[
        Outcome | None,
        Query(description="only audits whose verdict has this outcome (fail = proof, suspect = statistical)"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[AuditOut]:
    """Audits, newest first, optionally by status or by verdict outcome. A provider sees only its own."""
    if caller.role == Role.PROVIDER:
        if provider is not None and provider != caller.provider_id:
            raise forbidden("a provider can only list its own audits")
        provider = caller.provider_id
    query = _audits_query().order_by(Audit.created_at.desc(), Audit.id).limit(limit).offset(offset)
    if provider is not None:
        query = query.where(Audit.provider_id == provider)
    if audit_status is not None:
        query = query.where(Audit.status == audit_status)
    if outcome is not None:
        query = query.join(Verdict, Verdict.audit_id == Audit.id).where(Verdict.outcome == outcome)
    return [AuditOut.of(audit) for audit in session.scalars(query)]
