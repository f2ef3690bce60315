"""The hash-chained audit trail (DESIGN §2 step 6).

Each event stores the hash of the one before it: hash_n = BLAKE3(prev_hash || canonical JSON of event n),
with the genesis `prev_hash` = 64 zeros. Changing any stored field breaks that event's hash; deleting
an event breaks the link of the next one; `verify_chain` reports the first break. (Removing events from
the *end* leaves a shorter valid chain: the transparency log's signed checkpoints are what pin the head.)

Appending is serialised: on PostgreSQL by a transaction-scoped advisory lock, on SQLite by the
`BEGIN IMMEDIATE` every transaction starts with; the unique `prev_hash` would reject a fork anyway.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import blake3
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from api.models import AuditEvent, utcnow
from auditor.encoding import canonical_json

GENESIS_HASH = "0" * 64
# Arbitrary constant naming "the audit_events chain" among PostgreSQL advisory locks.
_CHAIN_LOCK_KEY = 0x436F496E4C6F67


def _timestamp(value: datetime) -> str:
    return value.isoformat(timespec="microseconds")


def _optional_id(value: uuid.UUID | None) -> str | None:
    return str(value) if value is not None else None


class _EventFields(Protocol):
    seq: int
    occurred_at: datetime
    kind: str
    provider_id: uuid.UUID | None
    report_id: uuid.UUID | None
    audit_id: uuid.UUID | None
    payload: dict[str, Any]
    prev_hash: str


def event_hash(event: _EventFields) -> str:
    body = {
        "seq": event.seq,
        "occurred_at": _timestamp(event.occurred_at),
        "kind": event.kind,
        "provider_id": _optional_id(event.provider_id),
        "report_id": _optional_id(event.report_id),
        "audit_id": _optional_id(event.audit_id),
        "payload": event.payload,
    }
    return blake3.blake3(bytes.fromhex(event.prev_hash) + canonical_json(body)).hexdigest()


def append_event(
    session: Session,
    kind: str,
    *,
    provider_id: uuid.UUID | None = None,
    report_id: uuid.UUID | None = None,
    audit_id: uuid.UUID | None = None,
    payload: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add one event to the chain inside the caller's transaction (it commits or rolls back with it)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CHAIN_LOCK_KEY})
    last = session.execute(
        select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
    ).first()
    seq, prev_hash = (last.seq + 1, last.hash) if last else (1, GENESIS_HASH)
    event = AuditEvent(
        seq=seq,
        # Microsecond precision is what both back ends store, so the hash is recomputed exactly.
        occurred_at=utcnow(),
        kind=kind,
        provider_id=provider_id,
        report_id=report_id,
        audit_id=audit_id,
        payload=payload or {},
        prev_hash=prev_hash,
    )
    event.hash = event_hash(event)
    session.add(event)
    session.flush()
    return event


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
