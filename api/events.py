"""The hash-chained audit trail (DESIGN §2 step 6).

Each event stores the hash of the one before it: hash_n = BLAKE3(prev_hash || canonical JSON of event n),
with the genesis `prev_hash` = 64 zeros. Changing any stored field breaks that event's hash; deleting
an event breaks the link of the next one; `verify_chain` reports the first break. (Removing events from
the *end* leaves a shorter valid chain: the transparency log's signed checkpoints are what pin the head.)

Appending is serialised: on PostgreSQL by a transaction-scoped advisory lock, on SQLite by the
`BEGIN IMMEDIATE` every transaction starts with; the unique `prev_hash` would reject a fork anyway.
The lock is held until the transaction ends, so hot paths append just before committing
(`append_at_commit`), and append many events under one lock (`append_events`).
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, cast

import blake3
from sqlalchemy import Table, func, insert, select, text
from sqlalchemy.orm import Session

from api.database import before_commit
from api.models import Audit, AuditEvent, utcnow
from auditor.encoding import canonical_json

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
    """Add `events`, in order, to the chain inside the caller's transaction: one lock, one read of the
    chain's head and one multi-row insert, whatever their number."""
    if not events:
        return
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CHAIN_LOCK_KEY})
    last = session.execute(
        select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
    ).first()
    seq, prev_hash = (last.seq, last.hash) if last else (0, GENESIS_HASH)
    # Microsecond precision is what both back ends store, so the hash is recomputed exactly.
    occurred_at = utcnow()
    rows = []
    for event in events:
        seq += 1
        link = _link_hash(prev_hash, seq, occurred_at, event)
        rows.append(
            {
                "seq": seq,
                "occurred_at": occurred_at,
                "kind": event.kind,
                "provider_id": event.provider_id,
                "report_id": event.report_id,
                "audit_id": event.audit_id,
                "payload": event.payload,
                "prev_hash": prev_hash,
                "hash": link,
            }
        )
        prev_hash = link
    # On the table, not the mapped class: the ORM's bulk machinery costs more than the insert itself.
    session.execute(insert(cast(Table, AuditEvent.__table__)), rows)


def append_at_commit(session: Session, events: Sequence[NewEvent]) -> None:
    """Append `events` when the caller's transaction commits: the chain lock is then held only for the
    append and the commit, not for the rest of the caller's work."""
    before_commit(session, lambda: append_events(session, events))


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
