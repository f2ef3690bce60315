"""The hash-chained audit trail (DESIGN §2 step 6).

Each event stores the hash of the one before it: hash_n = BLAKE3(prev_hash || canonical JSON of event n),
with the genesis `prev_hash` = 64 zeros. Changing any stored field breaks that event's hash; deleting
an event breaks the link of the next one; `verify_chain` reports the first break.

The chain itself is unkeyed, so its head is sealed: every append, under the chain lock, writes
HMAC(COIN_CHAIN_KEY, seq ‖ hash) of the new head to `chain_seal`, and first checks that the head it
found is the one last sealed. An event inserted by someone without the key, events removed from the
end, or a chain re-hashed after an alteration leave a head that no longer matches its seal: the append
records `chain.seal_mismatch` in the trail before linking anything (the break is never sealed over),
and `verify_chain` reports it. Pending events carry the same key's MAC over their content; one without
is recorded as `chain.unvouched_pending`, with its content, rather than linked as what it claims to be.
(What the seal cannot stop is a rollback of the chain and its seal together to an older state: only a
head anchored outside the database would, and there is no transparency log — docs/protocol.md.)

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

import enum
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Protocol

import blake3
import orjson
import structlog
from sqlalchemy import delete, func, insert, select, text, update
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
from service.models import Audit, AuditEvent, ChainSeal, PendingEvent, utcnow
from service.security import ChainKeys

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


def _json_value(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return _timestamp(value)
    return value


def row_digest(row: Mapping[str, Any], fields: Sequence[str]) -> str:
    """BLAKE3 of `fields` of a row, in order: put in the event that records the row, so that the integrity
    check can tell whether the row still says what the trail vouched for.

    The service alone computes it, on the row as written and as read back, so it needs a deterministic
    encoding rather than an interoperable one: orjson with sorted keys (ids, timestamps and enums
    natively), at a third of canonical JSON's cost on the intake path."""
    values = orjson.dumps([row[name] for name in fields], option=orjson.OPT_SORT_KEYS)
    return blake3.blake3(values).hexdigest()


# Set in `Session.info` (`Database(session_info=chain_session_info(...))`): the keys that seal the chain.
_CHAIN_KEYS = "coin_chain_keys"


def chain_session_info(keys: ChainKeys) -> dict[str, Any]:
    return {_CHAIN_KEYS: keys}


def chain_keys(session: Session) -> ChainKeys:
    keys = session.info.get(_CHAIN_KEYS)
    if not isinstance(keys, ChainKeys):
        raise RuntimeError("this Database was built without the chain keys (see chain_session_info)")
    return keys


def _seal_message(seq: int, head_hash: str) -> bytes:
    return f"coin-chain-seal/1:{seq}:{head_hash}".encode("ascii")


def _pending_message(row: Any) -> bytes:
    """What a pending event's MAC covers: its id, time and content (encoded as `row_digest` encodes)."""
    content = [row.id, row.occurred_at, row.kind, row.provider_id, row.report_id, row.audit_id, row.payload]
    return b"coin-pending-event/1:" + orjson.dumps(content, option=orjson.OPT_SORT_KEYS)


def pending_vouched(keys: ChainKeys, row: Any) -> bool:
    """Whether a `pending_events` row carries the chain key's MAC over its content."""
    return keys.verify(_pending_message(row), row.mac)


def _head_json(row: Any) -> dict[str, Any] | None:
    return None if row is None else {"seq": row.seq, "hash": row.hash}


def seal_fault(keys: ChainKeys, seal: Any, head: Any) -> dict[str, Any] | None:
    """Why the seal does not vouch for the chain's head (`seal` and `head` are rows with seq and hash,
    or None), as the payload of a `chain.seal_mismatch` event; None when it does."""
    if seal is None and head is None:
        return None
    if seal is None:
        reason = f"events up to {head.seq} were written without a seal (or the seal was removed)"
    elif not keys.knows(seal.key_id):
        reason = f"the seal was made with a key that is not configured (key id {seal.key_id})"
    elif not keys.verify(_seal_message(seal.seq, seal.hash), seal.mac, seal.key_id):
        reason = "the seal's MAC does not verify: it was written without the chain key"
    elif head is None:
        reason = f"the seal names event {seal.seq} but the chain is empty"
    elif head.seq > seal.seq:
        reason = f"events {seal.seq + 1}..{head.seq} were added without the chain key"
    elif head.seq < seal.seq:
        reason = f"events {head.seq + 1}..{seal.seq} were removed"
    elif head.hash != seal.hash:
        reason = f"event {head.seq} is not the event that was sealed (the chain was re-hashed)"
    else:
        return None
    return {"reason": reason, "sealed": _head_json(seal), "head": _head_json(head)}


@dataclass(frozen=True)
class NewEvent:
    """What happened, to what; `append_events` gives it its place in the chain."""

    kind: str
    provider_id: uuid.UUID | None = None
    report_id: uuid.UUID | None = None
    audit_id: uuid.UUID | None = None
    payload: dict[str, Any] = field(default_factory=dict)


def _chain_head(session: Session) -> Any:
    return session.execute(
        select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
    ).first()


def _chain_seal(session: Session) -> Any:
    return session.execute(select(ChainSeal.seq, ChainSeal.hash, ChainSeal.key_id, ChainSeal.mac)).first()


def _seal_and_head(session: Session) -> tuple[Any, Any]:
    """The seal and the head, read by one statement: between two statements an append may commit."""
    head = select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1).subquery()
    columns = {
        "seal_seq": ChainSeal.seq, "seal_hash": ChainSeal.hash, "key_id": ChainSeal.key_id,
        "mac": ChainSeal.mac, "head_seq": head.c.seq, "head_hash": head.c.hash,
    }  # fmt: skip
    row = session.execute(
        select(*(select(column).scalar_subquery().label(name) for name, column in columns.items()))
    ).one()
    seal = None
    if row.seal_seq is not None:
        seal = SimpleNamespace(seq=row.seal_seq, hash=row.seal_hash, key_id=row.key_id, mac=row.mac)
    return seal, None if row.head_seq is None else SimpleNamespace(seq=row.head_seq, hash=row.head_hash)


def _unvouched(row: Any) -> NewEvent:
    """A pending row without a valid MAC, recorded with its content but filed under no report or audit:
    it vouches for nothing."""
    body = {name: _json_value(value) for name, value in _content(row).items()}
    return NewEvent(
        "chain.unvouched_pending",
        payload={"pending_id": str(row.id), "occurred_at": _timestamp(row.occurred_at), **body},
    )


def lock_chain(session: Session) -> None:
    """Take the chain's lock until the end of the caller's transaction (again: a no-op).

    Appending takes it anyway; a transaction that will append and also locks a sampling policy, a
    monitor or a report row takes it first, so that every such transaction waits for these in one
    order — the chain, then those rows — and none holds a row another one waits for while waiting for
    the chain (a deadlock)."""
    if is_postgres(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CHAIN_LOCK_KEY})


def append_events(session: Session, events: Sequence[NewEvent]) -> None:
    """Link the pending events, then `events` in order, into the chain inside the caller's transaction:
    one lock and one read of the chain's head whatever their number; the new head is sealed."""
    lock_chain(session)
    keys = chain_keys(session)
    # Under the lock: every event deferred by a transaction that committed before is taken, and linked now.
    pending = sorted(
        session.execute(delete(PendingEvent).returning(*PendingEvent.__table__.columns)).all(),
        key=lambda row: row.occurred_at,
    )
    if not events and not pending:
        return
    last = _chain_head(session)
    seal = _chain_seal(session)
    seq, prev_hash = (last.seq, last.hash) if last else (0, GENESIS_HASH)
    # Microsecond precision is what both back ends store, so the hash is recomputed exactly.
    now = utcnow()
    timed: list[tuple[_EventContent, datetime]] = []
    fault = seal_fault(keys, seal, last)
    if fault is not None:
        # Recorded before anything is linked after it: the new seal must not vouch for the break.
        log.error("events.chain_seal_mismatch", **fault)
        timed.append((NewEvent("chain.seal_mismatch", payload=fault), now))
    for row in pending:
        if pending_vouched(keys, row):
            timed.append((row, row.occurred_at))
        else:
            log.error("events.pending_without_mac", pending_id=str(row.id), kind=row.kind)
            timed.append((_unvouched(row), now))
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
    sealed = {
        "seq": seq,
        "hash": prev_hash,
        "key_id": keys.current_id,
        "mac": keys.mac(_seal_message(seq, prev_hash)),
        "sealed_at": now,
    }
    if seal is None:
        session.execute(insert(ChainSeal).values(id=1, **sealed))
    else:
        session.execute(update(ChainSeal).where(ChainSeal.id == 1).values(**sealed))


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


class _Row:
    """A dict read as a row (attribute access), so that one function MACs pending rows as written and
    as read back."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


# Set in `Session.info` by a process that runs a `ChainWriter`: called once a transaction that deferred
# events has committed.
_WAKE_CHAIN_WRITER = "coin_wake_chain_writer"


def defer_events(session: Session, events: Sequence[NewEvent]) -> None:
    """Commit `events` with the caller's transaction without taking the chain lock; the next append
    links them (this process's chain writer is woken as soon as the transaction commits)."""
    if not events:
        return
    now = utcnow()
    keys = chain_keys(session)
    rows = [{"id": uuid.uuid4(), "occurred_at": now, **_content(event)} for event in events]
    for row in rows:
        row["mac"] = keys.mac(_pending_message(_Row(row)))
    insert_rows(session, PendingEvent, rows)
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
        self._db.sessions.configure(info={**self._db.session_info, _WAKE_CHAIN_WRITER: self._wanted.set})
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wanted.set()
        self._thread.join(timeout=30)
        self._db.sessions.configure(info=dict(self._db.session_info))
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
class ChainProblem:
    seq: int | None  # the event at fault, or None for the seal of the head
    reason: str


@dataclass(frozen=True)
class ChainCheck:
    events: int  # events verified, up to the first broken link
    problems: tuple[ChainProblem, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad_seq(self) -> int | None:
        return self.problems[0].seq if self.problems else None

    @property
    def reason(self) -> str | None:
        return self.problems[0].reason if self.problems else None


# Events that the chain writer appends when it finds the trail tampered with: each is a problem for good.
_TAMPERING_RECORDS = {
    "chain.seal_mismatch": "the head did not match its seal when this event was appended",
    "chain.unvouched_pending": "a pending event without the chain key's MAC was found (recorded here, "
    "not linked as what it claimed to be)",
}


def _walk(session: Session, batch: int) -> tuple[int, list[ChainProblem]]:
    """Recompute every link and hash in order, up to the first break (everything after it is suspect)."""
    expected_prev, expected_seq, checked = GENESIS_HASH, 1, 0
    problems: list[ChainProblem] = []
    while True:
        # Plain rows, not ORM objects: a long chain must not pile up in the caller's identity map.
        rows = session.execute(
            select(*AuditEvent.__table__.columns)
            .where(AuditEvent.seq >= expected_seq)
            .order_by(AuditEvent.seq)
            .limit(batch)
        ).all()
        if not rows:
            return checked, problems
        for event in rows:
            if event.seq != expected_seq:
                return checked, [*problems, ChainProblem(expected_seq, f"event {expected_seq} is missing")]
            if event.prev_hash != expected_prev:
                broken = ChainProblem(event.seq, "prev_hash does not match the previous event")
                return checked, [*problems, broken]
            if event.hash != event_hash(event):
                broken = ChainProblem(event.seq, "stored hash does not match the event's content")
                return checked, [*problems, broken]
            if event.kind in _TAMPERING_RECORDS:
                detail = event.payload.get("reason") or event.payload.get("kind")
                problems.append(ChainProblem(event.seq, f"{_TAMPERING_RECORDS[event.kind]}: {detail}"))
            expected_prev, expected_seq, checked = event.hash, event.seq + 1, checked + 1


def verify_chain(session: Session, batch: int = 1000) -> ChainCheck:
    """Walk the whole chain, recomputing every link and hash, and check the seal of its head.

    Against a live store, give it a `Database.snapshot()` session: otherwise an append that commits
    during the walk moves the head away from the seal that was read."""
    checked, problems = _walk(session, batch)
    fault = seal_fault(chain_keys(session), *_seal_and_head(session))
    if fault is not None:
        problems.append(ChainProblem(None, f"seal of the head: {fault['reason']}"))
    return ChainCheck(checked, tuple(problems))
