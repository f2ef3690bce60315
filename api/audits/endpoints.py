"""Audits: opened by the auditor or by a customer holding the receipt; read by the admin and the provider."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from api.audits.schemas import AuditAccepted, AuditCreate, AuditOut, AuditPage
from api.deps import (
    CallerDep,
    ContextDep,
    ListQuery,
    Role,
    SessionDep,
    StaffDep,
    forbidden,
    list_query,
    unauthorized,
)
from api.problems import COMMON_PROBLEMS, problem_responses
from service.audits.repository import list_audits, load_audit
from service.audits.service import request_audit
from service.errors import NotFound
from service.models import AuditStatus, AuditTrigger, Outcome, Report
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


@router.get("/{audit_id}", response_model=AuditOut, responses=problem_responses(401, 403, 404))
def get_audit(audit_id: uuid.UUID, session: SessionDep, caller: StaffDep) -> AuditOut:
    """Status, verdict and evidence of one audit (the admin, or the audited provider)."""
    audit = load_audit(session, audit_id)
    if audit is None or (caller.role == Role.PROVIDER and audit.provider_id != caller.provider_id):
        raise NotFound("audit not found")
    return AuditOut.of(audit)


@router.get("", response_model=AuditPage, responses=problem_responses(401, 403))
def get_audits(
    session: SessionDep,
    listed: Annotated[ListQuery, Depends(list_query("created"))],
    audit_status: Annotated[AuditStatus | None, Query(alias="status")] = None,
    outcome: Annotated[
        Outcome | None,
        Query(description="only audits whose verdict has this outcome (fail = proof, suspect = statistical)"),
    ] = None,
) -> AuditPage:
    """Audits, newest first, filtered; a page at a time (`next_cursor`). A provider sees only its own."""
    page = list_audits(session, listed.filters, listed.page, status=audit_status, outcome=outcome)
    return AuditPage.of(page, AuditOut.of)
