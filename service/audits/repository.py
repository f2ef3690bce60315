"""Audits and challenges as the staff and the providers read them: one audit with everything it holds,
and filtered lists a page at a time."""

import uuid

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, selectinload

from service.listing import Cursor, Filters, Ordering, Page, PageRequest, paginate
from service.models import Audit, AuditStatus, Challenge, ChallengeStatus, Outcome, Report, Verdict

_AUDITS_NEWEST_FIRST: Ordering[Audit] = Ordering(
    Audit.created_at, Audit.id, key=lambda audit: Cursor(audit.created_at, audit.id)
)
# Soonest deadline first: what a provider answering its open challenges works through.
_CHALLENGES_BY_DEADLINE: Ordering[Challenge] = Ordering(
    Challenge.deadline, Challenge.id, key=lambda c: Cursor(c.deadline, c.id), ascending=True
)


def _audits() -> Select[Audit]:
    return select(Audit).options(
        selectinload(Audit.report).selectinload(Report.provider),
        selectinload(Audit.challenges),
        selectinload(Audit.verdict),
    )


def load_audit(session: Session, audit_id: uuid.UUID) -> Audit | None:
    """One audit with its report, challenge rounds (and their responses) and verdict."""
    return session.scalars(
        _audits()
        .options(selectinload(Audit.challenges).selectinload(Challenge.response))
        .where(Audit.id == audit_id)
    ).one_or_none()


def list_audits(
    session: Session,
    filters: Filters,
    page: PageRequest,
    *,
    status: AuditStatus | None = None,
    outcome: Outcome | None = None,
) -> Page[Audit]:
    """Audits matching `filters` (on `created_at`), newest first; by state, or by verdict outcome."""
    query = _audits().join(Report, Report.id == Audit.report_id).where(*filters.conditions(Audit.created_at))
    if status is not None:
        query = query.where(Audit.status == status)
    if outcome is not None:
        query = query.join(Verdict, Verdict.audit_id == Audit.id).where(Verdict.outcome == outcome)
    return paginate(session, query, _AUDITS_NEWEST_FIRST, page)


def list_challenges(
    session: Session, filters: Filters, page: PageRequest, *, status: ChallengeStatus | None = None
) -> Page[Challenge]:
    """Challenges matching `filters` (on `issued_at`), soonest deadline first, each with its audit and
    report loaded."""
    query = (
        select(Challenge)
        .join(Audit, Audit.id == Challenge.audit_id)
        .join(Report, Report.id == Audit.report_id)
        .where(*filters.conditions(Challenge.issued_at))
        .options(selectinload(Challenge.audit).selectinload(Audit.report))
    )
    if status is not None:
        query = query.where(Challenge.status == status)
    return paginate(session, query, _CHALLENGES_BY_DEADLINE, page)
