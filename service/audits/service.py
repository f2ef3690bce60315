"""Audits as the API starts them and feeds them (DESIGN §2 steps 3–4); workers do the rest.

A receipt holder (the customer, but also the provider, which holds its customers' receipts) can never
lock anyone out of auditing a report: a request gets the audit still running, else an audit decided
within `customer_audit_reuse_seconds`, else a new audit while the report's `customer_audit_quota` lasts,
and once it is spent the latest verdict. So spending the quota buys at most one new audit per window,
each a real audit with a fresh CSPRNG sample, and the customer always sees an outcome.
"""

from collections import Counter
from datetime import timedelta
from typing import Any

import blake3
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from auditor.protocol.challenge import Challenge as ChallengeSpec
from auditor.protocol.commitment import Response
from auditor.protocol.encoding import canonical_json
from auditor.protocol.errors import ProtocolError
from service.audits.workflow import lock_audit, start_audit, verify_audit
from service.context import ServiceContext
from service.errors import Conflict, Gone, NotFound, QuotaExceeded
from service.events import append_audit_event, lock_chain
from service.models import (
    Audit,
    AuditStatus,
    AuditTrigger,
    Challenge,
    ChallengeResponse,
    ChallengeStatus,
    Provider,
    Report,
    Verdict,
    utcnow,
)

# Indices named in full in a refusal; the rest are counted.
_NAMED_INDICES = 20


def request_audit(
    session: Session,
    context: ServiceContext,
    report: Report,
    trigger: AuditTrigger,
    *,
    full_exposure: bool = False,
) -> tuple[Audit, bool]:
    """Open an audit of `report`, or return the one still running (for a scheduled draw: the scheduled
    one still running); True when a new one was opened.
    `full_exposure`: the audit reveals its whole exposure plan in the first round (an escalated
    provider's scheduled audit)."""
    lock_chain(session)  # before the report's row: the order of `service.events.lock_chain`
    # Lock the report so that two simultaneous requests open one audit, not two. FOR NO KEY UPDATE:
    # a worker's transaction that inserts a row referencing the report holds its FOR KEY SHARE lock
    # while it waits for the chain, which FOR UPDATE would wait for (a deadlock), and this does not.
    session.scalars(select(Report.id).where(Report.id == report.id).with_for_update(key_share=True)).one()
    running_query = select(Audit).where(Audit.report_id == report.id, Audit.status != AuditStatus.DONE)
    if trigger == AuditTrigger.SCHEDULED:
        # A draw opens its own audit: the provider holds every receipt token, and a customer's audit
        # it opened (and answers late) on each report it fears will be drawn would otherwise take the
        # draw's place, outside the monitor's sample and without an escalated policy's full exposure.
        running_query = running_query.where(Audit.trigger == AuditTrigger.SCHEDULED)
    running = session.scalars(running_query).first()
    if running is not None:
        return running, False
    if trigger == AuditTrigger.CUSTOMER:
        latest = _latest_decided(session, report)
        recent = utcnow() - timedelta(seconds=context.settings.customer_audit_reuse_seconds)
        if latest is not None and latest.verdict is not None and latest.verdict.decided_at >= recent:
            return latest, False
        used = session.scalar(
            select(func.count())
            .select_from(Audit)
            .where(Audit.report_id == report.id, Audit.trigger == AuditTrigger.CUSTOMER)
        )
        if (used or 0) >= context.settings.customer_audit_quota:
            if latest is not None:
                return latest, False
            raise QuotaExceeded("this report may not be audited on a receipt holder's request")
    now = utcnow()
    audit = Audit(
        report_id=report.id,
        provider_id=report.provider_id,
        status=AuditStatus.PENDING,
        trigger=trigger,
        created_at=now,
        updated_at=now,
        enqueue_count=1,
        full_exposure=full_exposure,
    )
    session.add(audit)
    session.flush()
    requested: dict[str, Any] = {"trigger": trigger.value}
    if full_exposure:
        requested["full_exposure"] = True
    append_audit_event(session, audit, "audit.requested", requested)
    context.dispatcher.enqueue(session, start_audit, str(audit.id))
    return audit, True


def _latest_decided(session: Session, report: Report) -> Audit | None:
    return session.scalars(
        select(Audit)
        .join(Verdict, Verdict.audit_id == Audit.id)
        .where(Audit.report_id == report.id)
        .order_by(Verdict.decided_at.desc())
        .limit(1)
    ).first()


def _indices(indices: list[int]) -> str:
    named = ", ".join(str(i) for i in indices[:_NAMED_INDICES])
    more = len(indices) - _NAMED_INDICES
    return f"[{named}{f', … {more} more' if more > 0 else ''}]"


def check_openings(spec: ChallengeSpec, response: Response) -> None:
    """ProtocolError naming the indices unless `response` opens each challenged index exactly once, no
    other, and the content indices with their fingerprint and token. Checked on receipt, so that the
    provider can still send a correct answer before the deadline; verification would fail it for good."""
    opened = Counter(opening.index for opening in response.openings)
    wanted = set(spec.indices)
    faults = []
    missing = sorted(wanted - opened.keys())
    if missing:
        faults.append(f"missing {_indices(missing)}")
    duplicated = sorted(index for index, count in opened.items() if count > 1)
    if duplicated:
        faults.append(f"opened more than once {_indices(duplicated)}")
    unrequested = sorted(opened.keys() - wanted)
    if unrequested:
        faults.append(f"not requested {_indices(unrequested)}")
    content = set(spec.content_indices)
    bare = sorted({o.index for o in response.openings if o.index in content and o.fingerprint is None})
    if bare:
        faults.append(f"content indices opened without fingerprint and token {_indices(bare)}")
    if faults:
        raise ProtocolError(f"response.openings: {'; '.join(faults)}")


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
    # Shape, encodings and indices: a wrong response may be corrected before the deadline.
    check_openings(ChallengeSpec.from_json(challenge.body), Response.from_json(body))
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
