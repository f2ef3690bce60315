"""The scheduled draw (a periodic job): which of a provider's reports the auditor audits unasked.

Every `schedule_interval_seconds`, for each provider with a sampling policy (`service.scheduling.service`):

- share draws: each report received since the last draw is drawn when its score under the key of its
  receipt's UTC day is below the share in force (the base share, or the escalated one);
- minimum draws: while fewer audits were drawn today than the minimum per day in force, the reports not
  drawn yet with the lowest scores under today's key, among a pool of `MINIMUM_POOL` of them (so that a
  high-volume provider's whole window is not scored every day): those whose ids follow the day's keyed
  starting point in id order, wrapping round. Ids are the auditor's random UUIDs, so neither the time
  of a report nor its content steers it into the pool (a pool of the most recent reports let a provider
  fill it with honest reports sent just before the draw).

A score is HMAC-SHA256 under a key the provider never sees (`service.security.ScheduleKey`), so which
reports will be drawn is unpredictable until the challenge arrives. Each draw keeps what justifies it —
the day whose key scored it, the key's id, the score, and the share (or, for a minimum draw, its rank
among the day's scores): after the day the auditor may disclose that day's key, and anyone can
recompute the scores and see that a report was drawn by the rule and not chosen.

Only reports inside the retention window are drawn: received at most `retention_days` ago, less
`AUDIT_ROUNDS` (3) times the provider's challenge deadline (`earliest_drawable`), so that every round's
challenge, each with a fresh deadline, falls due while the provider must still keep the openings (the
receipt states the window). A report is considered `schedule_settle_seconds` after its
receipt, so that no intake transaction still in flight commits behind the draw's progress.

Idempotent and single-instance: a draw is a row unique per (provider, report), written in the
transaction that opens its audit (trigger `scheduled`; an escalated provider's audits reveal their whole
plan in one round), with the share draw's progress (`drawn_through`); a draw running twice, or a beat
restarted mid-draw, opens one audit per drawn report. On PostgreSQL a session advisory lock lets one
draw run at a time (another one returns at once); the embedded default runs its jobs in one process.
"""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import ColumnElement, func, select, text
from sqlalchemy.orm import Session

from service.audits.service import request_audit
from service.database import Database
from service.errors import ServiceError
from service.events import append_audit_event, lock_chain
from service.jobs import job
from service.models import (
    AuditTrigger,
    DrawReason,
    Provider,
    Report,
    SamplingPolicy,
    ScheduledDraw,
    utcnow,
)
from service.security import score_below
from service.settings import AUDIT_ROUNDS

if TYPE_CHECKING:
    from service.context import ServiceContext

log = structlog.get_logger(__name__)

# The minimum draws choose among this many of the provider's undrawn reports (`_minimum_pool`).
MINIMUM_POOL = 10_000
# Arbitrary constant naming "the scheduled draw" among PostgreSQL advisory locks ("CoInDraw").
_DRAW_LOCK_KEY = 0x436F496E44726177


def utc_day(at: datetime) -> str:
    """YYYY-MM-DD: the UTC day of `at`, which names the key that scores a report."""
    return at.astimezone(UTC).date().isoformat()


@dataclass(frozen=True)
class Candidate:
    report_id: uuid.UUID
    reason: DrawReason
    key_period: str
    score: str
    share: float | None = None
    rank: int | None = None


@contextmanager
def single_instance(db: Database) -> Iterator[bool]:
    """Whether this process holds the draw's lock (PostgreSQL: a session advisory lock, released at the
    end of the block or when the connection drops; SQLite: always)."""
    if not db.is_postgres:
        yield True
        return
    with db.engine.connect() as connection:
        acquired = bool(connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": _DRAW_LOCK_KEY}))
        connection.commit()
        try:
            yield acquired
        finally:
            if acquired:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _DRAW_LOCK_KEY})
                connection.commit()


class DrawFailed(Exception):
    """Some providers' draws raised (each logged as `schedule.draw_failed`); the job fails, so that its
    failure is counted, after the other providers' draws were made."""


def _undrawn(provider_id: uuid.UUID) -> ColumnElement[bool]:
    drawn = select(ScheduledDraw.report_id).where(ScheduledDraw.provider_id == provider_id)
    return Report.id.not_in(drawn)


def earliest_drawable(now: datetime, retention_days: float, deadline_seconds: float) -> datetime:
    """The oldest report a draw at `now` may pick: one whose audit, every round of it answered at its
    deadline (each round's challenge gets a fresh one), is over before the receipt lets the provider
    delete its openings (`retention_days` after the report was received)."""
    audit_seconds = AUDIT_ROUNDS * deadline_seconds
    return now - timedelta(days=retention_days) + timedelta(seconds=audit_seconds)


def _candidates(
    session: Session,
    context: "ServiceContext",
    policy: SamplingPolicy,
    window_start: datetime,
    settled: datetime,
    now: datetime,
) -> list[Candidate]:
    """The reports to draw for `policy`'s provider: share draws since the last draw, then minimum draws."""
    key = context.schedule_key
    provider_id = policy.provider_id
    of_provider = [Report.provider_id == provider_id, Report.received_at <= settled, _undrawn(provider_id)]
    share = policy.effective_share
    chosen: list[Candidate] = []
    if share > 0:
        since = max(policy.drawn_through, window_start)
        rows = session.execute(
            select(Report.id, Report.received_at).where(*of_provider, Report.received_at > since)
        )
        for report_id, received_at in rows:
            day = utc_day(received_at)
            score = key.score(day, report_id)
            if score_below(score, share):
                chosen.append(Candidate(report_id, DrawReason.SHARE, day, score, share=share))
    midnight = datetime.combine(now.astimezone(UTC).date(), time(), tzinfo=UTC)
    today = session.scalar(
        select(func.count())
        .select_from(ScheduledDraw)
        .where(ScheduledDraw.provider_id == provider_id, ScheduledDraw.drawn_at >= midnight)
    )
    needed = policy.effective_min_per_day - int(today or 0) - len(chosen)
    if needed > 0:
        day = utc_day(now)
        taken = {c.report_id for c in chosen}
        eligible = _minimum_pool(
            session, [*of_provider, Report.received_at >= window_start], key.pool_start(day)
        )
        ranked = sorted(
            (key.score(day, report_id), report_id) for report_id in eligible if report_id not in taken
        )
        chosen += [
            Candidate(report_id, DrawReason.MINIMUM, day, score, rank=rank)
            for rank, (score, report_id) in enumerate(ranked[:needed], start=1)
        ]
    return chosen


def _minimum_pool(session: Session, eligible: list[ColumnElement[bool]], start: uuid.UUID) -> list[uuid.UUID]:
    """The first `MINIMUM_POOL` eligible reports in id order from `start`, wrapping round."""
    after = list(
        session.scalars(
            select(Report.id).where(*eligible, Report.id >= start).order_by(Report.id).limit(MINIMUM_POOL)
        )
    )
    before = session.scalars(
        select(Report.id)
        .where(*eligible, Report.id < start)
        .order_by(Report.id)
        .limit(MINIMUM_POOL - len(after))
    )
    return after + list(before)


def _in_force(policy: SamplingPolicy) -> tuple[datetime, float, int, bool]:
    """What the candidates of a draw were chosen under."""
    return policy.drawn_through, policy.effective_share, policy.effective_min_per_day, policy.escalated


def draw_for_provider(context: "ServiceContext", provider_id: uuid.UUID, now: datetime) -> int:
    """Draw the provider's reports at `now` and open their audits, in one transaction; returns how many
    were drawn."""
    settings = context.settings
    with context.db.unit_of_work() as session:
        policy = session.get(SamplingPolicy, provider_id)
        if policy is None:
            return 0
        provider = session.get_one(Provider, provider_id)
        deadline = provider.challenge_deadline_seconds or settings.challenge_deadline_seconds
        if deadline > settings.longest_challenge_deadline_seconds:
            # Registered before COIN_RETENTION_DAYS was shortened: its reports leave the window before
            # the first draw sees them, so staff must hear of it.
            log.warning(
                "schedule.deadline_beyond_retention",
                provider_id=str(provider_id),
                deadline_seconds=deadline,
                longest_seconds=settings.longest_challenge_deadline_seconds,
            )
        window_start = earliest_drawable(now, settings.retention_days, deadline)
        settled = now - timedelta(seconds=settings.schedule_settle_seconds)
        scanned = _in_force(policy)
        # Scored before the chain's lock is taken: every report since the last draw is scored.
        candidates = _candidates(session, context, policy, window_start, settled, now)
        lock_chain(session)  # before the policy's and the reports' rows: the order of `lock_chain`
        policy = session.scalars(
            select(SamplingPolicy)
            .where(SamplingPolicy.provider_id == provider_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one()
        if _in_force(policy) != scanned:
            # Another draw got there first, or the policy escalated or changed meanwhile: the next
            # run draws under what is in force then.
            return 0
        policy.drawn_through = max(policy.drawn_through, settled)
        for candidate in candidates:
            _open(session, context, policy, candidate, now)
    if candidates:
        log.info(
            "schedule.drawn",
            provider_id=str(provider_id),
            share_draws=sum(c.reason == DrawReason.SHARE for c in candidates),
            minimum_draws=sum(c.reason == DrawReason.MINIMUM for c in candidates),
            level=policy.level.value,
        )
    return len(candidates)


def _open(
    session: Session, context: "ServiceContext", policy: SamplingPolicy, candidate: Candidate, now: datetime
) -> None:
    report = session.get_one(Report, candidate.report_id)
    audit, _ = request_audit(session, context, report, AuditTrigger.SCHEDULED, full_exposure=policy.escalated)
    draw = ScheduledDraw(
        provider_id=policy.provider_id,
        report_id=report.id,
        audit_id=audit.id,
        reason=candidate.reason,
        key_period=candidate.key_period,
        key_id=context.schedule_key.key_id,
        score=candidate.score,
        share=candidate.share,
        rank=candidate.rank,
        level=policy.level,
        drawn_at=now,
    )
    session.add(draw)
    session.flush()  # the unique (provider, report) refuses a second draw: the transaction rolls back
    justification: dict[str, Any] = {
        "draw_id": str(draw.id),
        "reason": draw.reason.value,
        "key_period": draw.key_period,
        "key_id": draw.key_id,
        "score": draw.score,
        "level": draw.level.value,
    }
    if draw.reason == DrawReason.SHARE:
        justification["share"] = draw.share
    else:
        justification["rank"] = draw.rank
    append_audit_event(session, audit, "schedule.drawn", justification)


def disclosable_day_key(session: Session, context: "ServiceContext", day: date, now: datetime) -> bytes:
    """The key that scored `day`'s draws, to publish so that anyone can recompute them; ServiceError
    while it still decides a draw. A day's key scores the share draws of the reports received that day
    and the minimum draws made that day: both are over once the day has ended and every policy's share
    draws have passed its end (`drawn_through`), so a disclosed key predicts no draw to come."""
    # Compared as days: the end of the last day of the calendar (date.max) is no datetime.
    if day >= now.astimezone(UTC).date():
        raise ServiceError(
            f"{day.isoformat()} has not ended: a day's key is disclosed once its draws are over"
        )
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC)
    behind = session.scalar(select(func.min(SamplingPolicy.drawn_through)))
    if behind is not None and behind < end:
        raise ServiceError(
            f"the share draws have not passed the end of {day.isoformat()} for every provider yet "
            f"(the earliest is at {behind.isoformat(timespec='seconds')}): try after the next draw"
        )
    return context.schedule_key.day_key(day.isoformat())


@job("coin.schedule.draw", every=lambda settings: settings.schedule_interval_seconds)
def draw_scheduled_audits(context: "ServiceContext") -> int:
    """Draw the reports of every provider with a sampling policy (one transaction per provider) and open
    their audits; returns how many were drawn (0 when another draw holds the lock)."""
    with single_instance(context.db) as ours:
        if not ours:
            log.info("schedule.draw_skipped", reason="another draw is running")
            return 0
        now = utcnow()
        with context.db.unit_of_work() as session:
            providers = session.scalars(
                select(SamplingPolicy.provider_id).order_by(SamplingPolicy.provider_id)
            ).all()
        drawn, failed = 0, 0
        for provider_id in providers:
            try:
                drawn += draw_for_provider(context, provider_id, now)
            except Exception:
                # Its transaction rolled back and the next run tries it again; the other providers'
                # draws must not wait for whatever broke this one.
                log.exception("schedule.draw_failed", provider_id=str(provider_id))
                failed += 1
    if failed:
        raise DrawFailed(f"the draws of {failed} of {len(providers)} providers failed; the others were made")
    return drawn
