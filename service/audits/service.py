"""Audits as the API starts them and feeds them (DESIGN §2 steps 3–4); workers do the rest."""

from typing import Any

import blake3
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from auditor.protocol.commitment import Response
from auditor.protocol.encoding import canonical_json
from service.audits.workflow import lock_audit, start_audit, verify_audit
from service.context import ServiceContext
from service.errors import Conflict, Gone, NotFound, QuotaExceeded
from service.events import append_audit_event
from service.models import (
    Audit,
    AuditStatus,
    AuditTrigger,
    Challenge,
    ChallengeResponse,
    ChallengeStatus,
    Provider,
    Report,
    utcnow,
)


def request_audit(
    session: Session, context: ServiceContext, report: Report, trigger: AuditTrigger
) -> tuple[Audit, bool]:
    """Open an audit of `report`, or return the one still running; True when a new one was opened."""
    # Lock the report so that two simultaneous requests open one audit, not two.
    session.scalars(select(Report.id).where(Report.id == report.id).with_for_update()).one()
    running = session.scalars(
        select(Audit).where(Audit.report_id == report.id, Audit.status != AuditStatus.DONE)
    ).first()
    if running is not None:
        return running, False
    if trigger == AuditTrigger.CUSTOMER:
        used = session.scalar(
            select(func.count())
            .select_from(Audit)
            .where(Audit.report_id == report.id, Audit.trigger == AuditTrigger.CUSTOMER)
        )
        if (used or 0) >= context.settings.customer_audit_quota:
            raise QuotaExceeded(
                f"this receipt has used its {context.settings.customer_audit_quota} audit requests"
            )
    now = utcnow()
    audit = Audit(
        report_id=report.id,
        provider_id=report.provider_id,
        status=AuditStatus.PENDING,
        trigger=trigger,
        created_at=now,
        updated_at=now,
        enqueue_count=1,
    )
    session.add(audit)
    session.flush()
    append_audit_event(session, audit, "audit.requested", {"trigger": trigger.value})
    context.dispatcher.enqueue(session, start_audit, str(audit.id))
    return audit, True


def accept_response(
    session: Session, context: ServiceContext, provider: Provider, challenge_id: Any, body: dict[str, Any]
) -> Audit:
    """Store a provider's response to its open challenge and queue the verification."""
    challenge = session.scalars(
        select(Challenge).where(Challenge.id == challenge_id).with_for_update()
    ).one_or_none()
    if challenge is None or challenge.provider_id != provider.id:
        raise NotFound("challenge not found")
    if challenge.status == ChallengeStatus.ANSWERED:
        raise Conflict("this challenge was already answered; a response cannot be replaced")
    now = utcnow()
    if challenge.status == ChallengeStatus.EXPIRED or challenge.deadline <= now:
        raise Gone(
            f"the deadline of this challenge passed at {challenge.deadline.isoformat()}; the audit fails"
        )
    Response.from_json(body)  # shape and encodings; a malformed response may be corrected before the deadline
    audit = lock_audit(session, challenge.audit_id)
    if audit is None or audit.status != AuditStatus.CHALLENGED:
        raise Conflict("the audit of this challenge is not waiting for a response")
    session.add(
        ChallengeResponse(
            challenge_id=challenge.id,
            body=body,
            digest=blake3.blake3(canonical_json(body)).hexdigest(),
            received_at=now,
        )
    )
    challenge.status = ChallengeStatus.ANSWERED
    audit.status = AuditStatus.VERIFYING
    audit.updated_at = now
    audit.enqueue_count += 1
    session.flush()
    append_audit_event(
        session,
        audit,
        "response.received",
        {"challenge_id": str(challenge.id), "openings": len(body["openings"])},
    )
    context.dispatcher.enqueue(session, verify_audit, str(audit.id))
    return audit
