"""Reports as the staff look them up: filtered, newest first, a page at a time."""

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, selectinload

from service.listing import Cursor, Filters, Ordering, Page, PageRequest, paginate
from service.models import Audit, Outcome, Report, Verdict

_NEWEST_FIRST: Ordering[Report] = Ordering(
    Report.received_at, Report.id, key=lambda report: Cursor(report.received_at, report.id)
)


def list_reports(
    session: Session, filters: Filters, page: PageRequest, *, outcome: Outcome | None = None
) -> Page[Report]:
    """Reports matching `filters` (on `received_at`), each with its audits and their verdicts; with
    `outcome`, only reports that have an audit whose verdict says it."""
    query = select(Report).where(*filters.conditions(Report.received_at))
    if outcome is not None:
        query = query.where(
            exists()
            .where(Audit.report_id == Report.id, Verdict.audit_id == Audit.id)
            .where(Verdict.outcome == outcome)
        )
    query = query.options(
        selectinload(Report.provider), selectinload(Report.audits).selectinload(Audit.verdict)
    )
    return paginate(session, query, _NEWEST_FIRST, page)
