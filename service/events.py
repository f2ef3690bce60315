"""The hash-chained audit trail (DESIGN §2 step 6).

Each event stores the hash of the one before it: hash_n = BLAKE3(prev_hash || canonical JSON of event n),
with the genesis `prev_hash` = 64 zeros. Changing any stored field breaks that event's hash; deleting
an event breaks the link of the next one; `verify_chain` reports the first break. (Removing events from
the *end* leaves a shorter valid chain: the transparency log's signed checkpoints are what pin the head.)

Appending is serialised: on PostgreSQL by a transaction-scoped advisory lock, on SQLite by the
`BEGIN IMMEDIATE` every transaction starts with; the unique `prev_hash` would reject a fork anyway.
The lock is held until the transaction ends, so the hot path (report intake) does not take it for a
few reports: `defer_events` stores their events in `pending_events` inside the request's own
transaction, and a `ChainWriter` thread links them in batches (group commit), woken as soon as the
request commits; a large batch of reports is its own group (`append_with_commit`). Every
append under the lock first links whatever is pending, so cause still precedes effect in the chain (a
report's event precedes those of its audits). An event is thus committed atomically with its cause and
chained milliseconds later; the periodic `coin.events.link` job links what a crashed process left behind.
"""

import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import blake3
import structlog
from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from auditor.protocol.encoding import canonical_json
from service.database import (
    Database,
    after_commit,
    before_commit,
    insert_rows,
    is_postgres,
    streamed_insert,
)
from service.jobs import job
from service.models import Audit, AuditEvent, PendingEvent, utcnow

if TYPE_CHECKING:
    from service.context import ServiceContext

log = structlog.get_logger(__name__)

GENESIS_HASH = "0" * 64
# Arbitrary constant naming "the audit_events chain" among PostgreSQL advisory locks.
_CHAIN_LOCK_KEY = 0x436F496E4C6F67


def _timestamp(value: datetime) -> str:
    return value.isoformat(timespec="microseconds")


def _optional_id(value: uuid.UUID | None) -> str | None:
    return str(value) if value is not None else None


class _EventContent(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def provider_id(self) -> uuid.UUID | None: ...
    @property
    def report_id(self) -> uuid.UUID | None: ...
    @property
    def audit_id(self) -> uuid.UUID | None: ...
    @property
    def payload(self) -> dict[str, Any]: ...


class _EventFields(_EventContent, Protocol):
    @property
    def seq(self) -> int: ...
    @property
    def occurred_at(self) -> datetime: ...
    @property
    def prev_hash(self) -> str: ...


def _link_hash(prev_hash: str, seq: int, occurred_at: datetime, content: _EventContent) -> str:
    body = {
        "seq": seq,
        "occurred_at": _timestamp(occurred_at),
        "kind": content.kind,
        "provider_id": _optional_id(content.provider_id),
        "report_id": _optional_id(content.report_id),
        "audit_id": _optional_id(content.audit_id),
        "payload": content.payload,
    }
    return blake3.blake3(bytes.fromhex(prev_hash) + canonical_json(body)).hexdigest()


def event_hash(event: _EventFields) -> str:
    return _link_hash(event.prev_hash, event.seq, event.occurred_at, event)


@dataclass(frozen=True)
class NewEvent:
    """What happened, to what; `append_events` gives it its place in the chain."""

    kind: str
    provider_id: uuid.UUID | None = None
    report_id: uuid.UUID | None = None
    audit_id: uuid.UUID | None = None
    payload: dict[str, Any] = field(default_factory=dict)


def append_events(session: Session, events: Sequence[NewEvent]) -> None:
    """Link the pending events, then `events` in order, into the chain inside the caller's transaction:
    one lock and one read of the chain's head whatever their number."""
    if is_postgres(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CHAIN_LOCK_KEY})
    # Under the lock: every event deferred by a transaction that committed before is taken, and linked now.
    pending = sorted(
        session.execute(delete(PendingEvent).returning(*PendingEvent.__table__.columns)).all(),
        key=lambda row: row.occurred_at,
    )
    if not events and not pending:
        return
    last = session.execute(
        select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
    ).first()
    seq, prev_hash = (last.seq, last.hash) if last else (0, GENESIS_HASH)
    # Microsecond precision is what both back ends store, so the hash is recomputed exactly.
    now = utcnow()
    timed: list[tuple[_EventContent, datetime]] = [(row, row.occurred_at) for row in pending]
    timed += [(event, now) for event in events]
    # In chunks: the server inserts one while the next is hashed.
    with streamed_insert(session, AuditEvent) as stream:
        for start in range(0, len(timed), _INSERT_CHUNK_EVENTS):
            rows = []
            for event, occurred_at in timed[start : start + _INSERT_CHUNK_EVENTS]:
                seq += 1
                link = _link_hash(prev_hash, seq, occurred_at, event)
                rows.append(
                    {
                        "seq": seq,
                        "occurred_at": occurred_at,
                        **_content(event),
                        "prev_hash": prev_hash,
                        "hash": link,
                    }
                )
                prev_hash = link
            stream.send(rows)


_INSERT_CHUNK_EVENTS = 250


def _content(event: _EventContent) -> dict[str, Any]:
    """The columns that say what happened, to what: the same in `pending_events` and `audit_events`."""
    return {
        "kind": event.kind,
        "provider_id": event.provider_id,
        "report_id": event.report_id,
        "audit_id": event.audit_id,
        "payload": event.payload,
    }


# Set in `Session.info` by a process that runs a `ChainWriter`: called once a transaction that deferred
# events has committed.
_WAKE_CHAIN_WRITER = "coin_wake_chain_writer"


def defer_events(session: Session, events: Sequence[NewEvent]) -> None:
    """Commit `events` with the caller's transaction without taking the chain lock; the next append
    links them (this process's chain writer is woken as soon as the transaction commits)."""
    if not events:
        return
    now = utcnow()
    insert_rows(
        session,
        PendingEvent,
        [{"id": uuid.uuid4(), "occurred_at": now, **_content(event)} for event in events],
    )
    wake = session.info.get(_WAKE_CHAIN_WRITER)
    if wake is not None:
        after_commit(session, wake)


# A submission with this many events or more is a group already: it takes the chain lock itself, once,
# rather than writing its events twice (pending, then chained).
OWN_GROUP_MIN_EVENTS = 32


def append_with_commit(session: Session, events: Sequence[NewEvent]) -> None:
    """Put `events` in the chain with the caller's transaction: a large group is appended just before
    the commit (the lock is held for the append and the commit only); a few are deferred, for the
    chain writer to link together with other requests' events."""
    if len(events) >= OWN_GROUP_MIN_EVENTS:
        before_commit(session, lambda: append_events(session, events))
    else:
        defer_events(session, events)


def pending_count(session: Session) -> int:
    """Events committed but not linked into the chain yet."""
    return int(session.scalar(select(func.count()).select_from(PendingEvent)) or 0)


def link_pending_events(db: Database) -> int:
    """Link every pending event into the chain; returns how many there were."""
    with db.unit_of_work() as session:
        count = pending_count(session)
        if count:
            append_events(session, [])
        return count


@job("coin.events.link", every=lambda settings: settings.sweep_interval_seconds)
def link_events(context: "ServiceContext") -> int:
    """Link events that a process committed but never linked into the chain (it crashed)."""
    return link_pending_events(context.db)


class ChainWriter:
    """Links deferred events into the chain from a background thread (group commit).

    Woken after each commit that deferred events, it lingers a few milliseconds so that the requests of
    a burst share one transaction; every `period` seconds it also links what another process committed
    and never linked (it crashed, or runs no writer)."""

    def __init__(self, db: Database, *, linger: float = 0.02, period: float = 2.0) -> None:
        self._db = db
        self._linger = linger
        self._period = period
        self._wanted = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chain-writer", daemon=True)

    def start(self) -> None:
        self._db.sessions.configure(info={_WAKE_CHAIN_WRITER: self._wanted.set})
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wanted.set()
        self._thread.join(timeout=30)
        self._db.sessions.configure(info={})
        self._link()  # what the last requests deferred

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wanted.wait(self._period)
            if self._stopping.wait(self._linger):
                return
            self._wanted.clear()
            self._link()

    def _link(self) -> None:
        try:
            link_pending_events(self._db)
        except Exception:
            # The events are safe in pending_events: the next wake-up or period tries again.
            log.exception("events.link_failed")


def append_event(
    session: Session,
    kind: str,
    *,
    provider_id: uuid.UUID | None = None,
    report_id: uuid.UUID | None = None,
    audit_id: uuid.UUID | None = None,
    payload: dict[str, Any] | None = None,
) -> None:
    """Add one event to the chain inside the caller's transaction (it commits or rolls back with it)."""
    append_events(
        session,
        [
            NewEvent(
                kind, provider_id=provider_id, report_id=report_id, audit_id=audit_id, payload=payload or {}
            )
        ],
    )


def append_audit_event(session: Session, audit: Audit, kind: str, payload: dict[str, Any]) -> None:
    """An event about one audit, filed under its provider, report and audit."""
    append_event(
        session,
        kind,
        provider_id=audit.provider_id,
        report_id=audit.report_id,
        audit_id=audit.id,
        payload=payload,
    )


@dataclass(frozen=True)
class ChainCheck:
    ok: bool
    events: int
    first_bad_seq: int | None = None
    reason: str | None = None


def verify_chain(session: Session, batch: int = 1000) -> ChainCheck:
    """Walk the whole chain in order and recompute every link and hash."""
    expected_prev, expected_seq, checked = GENESIS_HASH, 1, 0
    while True:
        # Plain rows, not ORM objects: a long chain must not pile up in the caller's identity map.
        rows = session.execute(
            select(*AuditEvent.__table__.columns)
            .where(AuditEvent.seq >= expected_seq)
            .order_by(AuditEvent.seq)
            .limit(batch)
        ).all()
        if not rows:
            return ChainCheck(ok=True, events=checked)
        for event in rows:
            if event.seq != expected_seq:
                return ChainCheck(False, checked, expected_seq, f"event {expected_seq} is missing")
            if event.prev_hash != expected_prev:
                return ChainCheck(False, checked, event.seq, "prev_hash does not match the previous event")
            if event.hash != event_hash(event):
                return ChainCheck(False, checked, event.seq, "stored hash does not match the event's content")
            expected_prev, expected_seq, checked = event.hash, event.seq + 1, checked + 1


def chain_length(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(AuditEvent)) or 0)
