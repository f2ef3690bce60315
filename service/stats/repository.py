"""Figures for the staff dashboard, aggregated by the store: activity per UTC day, verdict outcomes, and
providers ranked by risk.

Risk ranks providers by their monitoring standing first (`service.monitoring.service.Standing`: a proof
alarm, a statistical alarm, then the strongest evidence this period), then by the share of their decided
audits whose verdict is `suspect` or `fail`, with the count beside it (`ProviderSummary.risk`, ordered
by `risk_rank`). Each summary carries the provider's sampling policy too.
"""

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, FromClause, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from service.audits.repository import list_challenges
from service.database import is_postgres
from service.listing import Filters, Page, PageRequest
from service.models import (
    ApiKey,
    Audit,
    AuditStatus,
    Challenge,
    ChallengeStatus,
    Outcome,
    Provider,
    Report,
    SamplingPolicy,
    Verdict,
    utcnow,
)
from service.monitoring.service import Standing, standings

DEFAULT_DAYS = 30


@dataclass(frozen=True)
class Activity:
    """Per UTC day, oldest first: reports received, reasoning tokens they billed, audits opened, and
    verdicts issued by outcome."""

    days: list[date]
    reports: list[int]
    reasoning_tokens: list[int]
    audits: list[int]
    verdicts: dict[Outcome, list[int]]


def _day(session: Session, timestamp: InstrumentedAttribute[datetime]) -> ColumnElement[str]:
    """The UTC day of `timestamp` as 'YYYY-MM-DD' (SQLite keeps UTC timestamps as ISO text)."""
    if is_postgres(session):
        return func.to_char(func.timezone("UTC", timestamp), "YYYY-MM-DD")
    return func.date(timestamp)


def _daily(
    session: Session,
    source: FromClause | type[Any],
    timestamp: InstrumentedAttribute[datetime],
    measures: list[ColumnElement[Any]],
    since: datetime,
    conditions: list[ColumnElement[bool]],
    group: InstrumentedAttribute[Any] | None = None,
) -> dict[tuple[str, Any], list[int]]:
    """The `measures` per (day, `group`) of the rows of `source` since `since`."""
    day = _day(session, timestamp)
    keys: list[Any] = [day] if group is None else [day, group]
    rows = session.execute(
        select(*keys, *measures).select_from(source).where(timestamp >= since, *conditions).group_by(*keys)
    )
    return {
        (row[0], row[1] if group is not None else None): [int(v or 0) for v in row[len(keys) :]]
        for row in rows
    }


def activity(session: Session, *, days: int = DEFAULT_DAYS, provider_id: uuid.UUID | None = None) -> Activity:
    """The last `days` UTC days (today included), for one provider or for all."""
    today = utcnow().date()
    calendar = [today - timedelta(days=n) for n in range(days - 1, -1, -1)]
    since = datetime.combine(calendar[0], time(), tzinfo=UTC)

    def where(column: InstrumentedAttribute[uuid.UUID]) -> list[ColumnElement[bool]]:
        return [] if provider_id is None else [column == provider_id]

    reports = _daily(
        session,
        Report,
        Report.received_at,
        [func.count(), func.sum(Report.reasoning_tokens)],
        since,
        where(Report.provider_id),
    )
    audits = _daily(session, Audit, Audit.created_at, [func.count()], since, where(Audit.provider_id))
    verdicts = _daily(
        session,
        Verdict.__table__.join(Audit.__table__, Audit.id == Verdict.audit_id),
        Verdict.decided_at,
        [func.count()],
        since,
        where(Audit.provider_id),
        group=Verdict.outcome,
    )
    keys = [d.isoformat() for d in calendar]
    return Activity(
        days=calendar,
        reports=[reports.get((k, None), [0, 0])[0] for k in keys],
        reasoning_tokens=[reports.get((k, None), [0, 0])[1] for k in keys],
        audits=[audits.get((k, None), [0])[0] for k in keys],
        verdicts={o: [verdicts.get((k, o), [0])[0] for k in keys] for o in Outcome},
    )


@dataclass(frozen=True)
class ProviderSummary:
    """A provider's volume, outcomes and keys."""

    provider: Provider
    reports: int = 0
    reasoning_tokens: int = 0
    audits: int = 0
    outcomes: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))
    active_keys: int = 0
    policy: SamplingPolicy | None = None  # none: not audited on a schedule
    standing: Standing | None = None  # its monitor this period; none before a verdict this period

    @property
    def decided(self) -> int:
        """Audits with a verdict."""
        return sum(self.outcomes.values())

    @property
    def flagged(self) -> int:
        """Verdicts that found something: `fail` (proof) or `suspect` (statistical evidence)."""
        return self.outcomes[Outcome.FAIL] + self.outcomes[Outcome.SUSPECT]

    @property
    def risk(self) -> float | None:
        """The share of decided audits flagged; None before any verdict."""
        return self.flagged / self.decided if self.decided else None


# Where a provider without a verdict this period ranks on its standing: after any alarm, with no evidence.
_NO_STANDING = (2, -1.0)


def risk_rank(summary: ProviderSummary) -> tuple[int, float, float, int, int, str]:
    """Sort key, riskiest first: the monitoring standing (an alarm, then the largest e-value this
    period), then the flagged share, the flagged count (more evidence), then proof (`fail`) before
    statistics; providers without a verdict last."""
    standing = summary.standing.risk_key if summary.standing is not None else _NO_STANDING
    share = summary.risk
    return (*standing, -(share if share is not None else -1.0), -summary.flagged,
            -summary.outcomes[Outcome.FAIL], summary.provider.name)  # fmt: skip


def _grouped(session: Session, query: Any) -> dict[Any, Any]:
    return {row[0]: row[1:] for row in session.execute(query)}


def provider_summaries(session: Session, provider_id: uuid.UUID | None = None) -> list[ProviderSummary]:
    """Every provider (or one), riskiest first: one grouped query per figure, not one per provider."""
    providers = select(Provider)
    if provider_id is not None:
        providers = providers.where(Provider.id == provider_id)
    volume = _grouped(
        session,
        select(
            Report.provider_id, func.count(), func.coalesce(func.sum(Report.reasoning_tokens), 0)
        ).group_by(Report.provider_id),
    )
    audits = _grouped(session, select(Audit.provider_id, func.count()).group_by(Audit.provider_id))
    keys = _grouped(
        session,
        select(ApiKey.provider_id, func.count())
        .where(ApiKey.revoked_at.is_(None))
        .group_by(ApiKey.provider_id),
    )
    outcomes: dict[uuid.UUID, dict[Outcome, int]] = {}
    for owner, outcome, count in session.execute(
        select(Audit.provider_id, Verdict.outcome, func.count())
        .join(Verdict, Verdict.audit_id == Audit.id)
        .group_by(Audit.provider_id, Verdict.outcome)
    ):
        outcomes.setdefault(owner, dict.fromkeys(Outcome, 0))[outcome] = int(count)
    only = None if provider_id is None else [provider_id]
    policy_rows = select(SamplingPolicy)
    if only is not None:
        policy_rows = policy_rows.where(SamplingPolicy.provider_id.in_(only))
    policies = {policy.provider_id: policy for policy in session.scalars(policy_rows)}
    monitors = standings(session, only)
    summaries = [
        ProviderSummary(
            provider=provider,
            reports=int(volume.get(provider.id, (0, 0))[0]),
            reasoning_tokens=int(volume.get(provider.id, (0, 0))[1]),
            audits=int(audits.get(provider.id, (0,))[0]),
            outcomes=outcomes.get(provider.id, dict.fromkeys(Outcome, 0)),
            active_keys=int(keys.get(provider.id, (0,))[0]),
            policy=policies.get(provider.id),
            standing=monitors.get(provider.id),
        )
        for provider in session.scalars(providers)
    ]
    return sorted(summaries, key=risk_rank)


@dataclass(frozen=True)
class Overview:
    activity: Activity
    providers: list[ProviderSummary]  # riskiest first
    open_audits: int  # not done yet
    open_challenges: Page[Challenge]  # soonest deadline first

    @property
    def outcomes(self) -> dict[Outcome, int]:
        return {o: sum(p.outcomes[o] for p in self.providers) for o in Outcome}

    @property
    def reports(self) -> int:
        return sum(p.reports for p in self.providers)

    @property
    def audits(self) -> int:
        return sum(p.audits for p in self.providers)


def overview(session: Session, *, days: int = DEFAULT_DAYS, challenges: int = 20) -> Overview:
    open_audits = session.scalar(
        select(func.count()).select_from(Audit).where(Audit.status != AuditStatus.DONE)
    )
    return Overview(
        activity=activity(session, days=days),
        providers=provider_summaries(session),
        open_audits=int(open_audits or 0),
        open_challenges=list_challenges(
            session, Filters(), PageRequest(limit=challenges), status=ChallengeStatus.OPEN
        ),
    )
