"""The integrity check: the audit trail, and every row it vouches for (`coin verify-chain`, and a job).

The chain alone proves only that the events were not changed. What the API serves comes from rows —
reports, verdicts, audits — so each row is checked against the event that recorded it, in one
consistent snapshot of the store:

- a report against its `report.received` event: the row's digest (`REPORT_ROW_FIELDS`) and, through
  the stored `digest`, its body; the counts and ids in the row against the body;
- a verdict against its `verdict.issued` event (`VERDICT_ROW_FIELDS`), its `outcome` against the
  signed statement, and the statement against its Ed25519 signature;
- an audit against its events: its trigger (and full exposure) against `audit.requested`, its status
  against the last event that moved it (audits change status legitimately, so it is their history
  that is checked, not immutability);
- and the other way round: no `report.received`, `verdict.issued` or `audit.requested` event whose row
  is gone.

An event vouches for a row when it is in the chain, or still pending with the chain key's MAC.
`check_integrity` lists what disagrees, by table and row; the periodic job logs each problem, sets the
`coin_integrity_problems` gauge (through the `integrity.checked` event it appends) and alerts.
"""

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from auditor.protocol.errors import EncodingError
from service.audits.verdicts import VERDICT_ROW_FIELDS
from service.database import Database
from service.events import (
    append_event,
    chain_keys,
    pending_count,
    pending_vouched,
    row_digest,
    verify_chain,
)
from service.jobs import job
from service.models import Audit, AuditEvent, AuditStatus, PendingEvent, Report, Verdict
from service.reports.service import REPORT_ROW_FIELDS, report_digest
from service.security import verify_signature

if TYPE_CHECKING:
    from service.context import ServiceContext

log = structlog.get_logger(__name__)

# Rows read per query: the check streams the store, whatever its size.
BATCH = 1000
# Problems kept in full (all are counted): enough to act on, bounded when everything disagrees.
MAX_LISTED = 1000

# The status an audit is in after each event that moves it (the others leave it where it was).
STATUS_AFTER = {
    "audit.requested": AuditStatus.PENDING,
    "challenge.issued": AuditStatus.CHALLENGED,
    "response.received": AuditStatus.VERIFYING,
    "verdict.issued": AuditStatus.DONE,
}


@dataclass(frozen=True)
class Problem:
    table: str
    row: str  # the row's id (the event's seq for audit_events; "seal" for the seal of the head)
    reason: str

    def __str__(self) -> str:
        return f"{self.table} {self.row}: {self.reason}"


@dataclass
class IntegrityReport:
    events: int = 0
    pending: int = 0
    rows: dict[str, int] = field(default_factory=lambda: {"reports": 0, "verdicts": 0, "audits": 0})
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def add(self, table: str, row: object, reason: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_LISTED:
            self.problems.append(Problem(table, str(row), reason))


def _batches(session: Session, model: Any) -> Iterator[Sequence[Any]]:
    """Every row of `model`'s table, as plain rows, in batches by primary key."""
    table = model.__table__
    last: uuid.UUID | None = None
    while True:
        query = select(*table.columns).order_by(table.c.id).limit(BATCH)
        if last is not None:
            query = query.where(table.c.id > last)
        rows = session.execute(query).all()
        if not rows:
            return
        yield rows
        last = rows[-1].id


def _vouching_payloads(
    session: Session, kind: str, column: Any, ids: list[uuid.UUID]
) -> dict[Any, list[Any]]:
    """The payloads of the `kind` events that vouch for each id: chained, or pending with a valid MAC."""
    found: dict[Any, list[Any]] = {}
    chained = session.execute(
        select(getattr(AuditEvent, column), AuditEvent.payload).where(
            AuditEvent.kind == kind, getattr(AuditEvent, column).in_(ids)
        )
    )
    for owner, payload in chained:
        found.setdefault(owner, []).append(payload)
    keys = chain_keys(session)
    pending = session.execute(
        select(*PendingEvent.__table__.columns).where(
            PendingEvent.kind == kind, getattr(PendingEvent, column).in_(ids)
        )
    )
    for row in pending:
        if pending_vouched(keys, row):
            found.setdefault(getattr(row, column), []).append(row.payload)
    return found


def _one(report: IntegrityReport, table: str, row_id: object, kind: str, payloads: list[Any] | None) -> Any:
    if not payloads:
        report.add(table, row_id, f"no {kind} event vouches for this row")
        return None
    if len(payloads) > 1:
        report.add(table, row_id, f"{len(payloads)} {kind} events claim this row")
    return payloads[0]


def _differs(payload: dict[str, Any], row: Any, fields: Sequence[str], legacy: dict[str, Any]) -> str | None:
    """Why the row is not what its event recorded: the row digest, or for events written before row
    digests, the fields the event carries."""
    if "row_digest" in payload:
        if payload["row_digest"] != row_digest(row._mapping, fields):
            return "the row differs from what its event recorded (row digest)"
        return None
    changed = [name for name, value in legacy.items() if payload.get(name) != value]
    return f"{', '.join(changed)} differ from its event" if changed else None


def _check_reports(session: Session, report: IntegrityReport) -> None:
    for rows in _batches(session, Report):
        vouched = _vouching_payloads(session, "report.received", "report_id", [row.id for row in rows])
        for row in rows:
            report.rows["reports"] += 1
            payload = _one(report, "reports", row.id, "report.received", vouched.get(row.id))
            if payload is not None:
                legacy = {
                    "request_id": row.request_id,
                    "digest": row.digest,
                    "reasoning_tokens": row.reasoning_tokens,
                }
                reason = _differs(payload, row, REPORT_ROW_FIELDS, legacy)
                if reason:
                    report.add("reports", row.id, reason)
            try:
                body_digest = report_digest(row.body)
            except EncodingError as exc:  # a body the store changed into one canonical JSON cannot write
                report.add("reports", row.id, f"the body has no canonical JSON ({exc})")
            else:
                if body_digest != row.digest:
                    report.add("reports", row.id, "the body does not match its digest (the receipt's)")
            usage = row.body.get("usage", {})
            columns = {
                "request_id": (row.request_id, row.body.get("request_id")),
                "model": (row.model, row.body.get("model")),
                "input_tokens": (row.input_tokens, usage.get("input_tokens")),
                "output_tokens": (row.output_tokens, usage.get("output_tokens")),
                "reasoning_tokens": (row.reasoning_tokens, usage.get("reasoning_tokens")),
            }
            wrong = [name for name, (stored, sent) in columns.items() if stored != sent]
            if wrong:
                report.add("reports", row.id, f"{', '.join(wrong)} differ from the report's body")


def _check_verdicts(session: Session, report: IntegrityReport) -> None:
    for rows in _batches(session, Verdict):
        vouched = _vouching_payloads(session, "verdict.issued", "audit_id", [row.audit_id for row in rows])
        for row in rows:
            report.rows["verdicts"] += 1
            payload = _one(report, "verdicts", row.id, "verdict.issued", vouched.get(row.audit_id))
            if payload is not None:
                if payload.get("verdict_id") != str(row.id):
                    report.add("verdicts", row.id, "its event names another verdict")
                legacy = {"outcome": row.outcome.value, "signature": row.signature}
                reason = _differs(payload, row, VERDICT_ROW_FIELDS, legacy)
                if reason:
                    report.add("verdicts", row.id, reason)
            if row.statement.get("outcome") != row.outcome.value:
                report.add("verdicts", row.id, "outcome differs from the signed statement's")
            if not verify_signature(row.signing_key, row.statement, row.signature):
                report.add("verdicts", row.id, "the signature does not verify over the statement")


def _check_audits(session: Session, report: IntegrityReport) -> None:
    for rows in _batches(session, Audit):
        history: dict[uuid.UUID, list[Any]] = {}
        events = session.execute(
            select(
                AuditEvent.kind,
                AuditEvent.audit_id,
                AuditEvent.report_id,
                AuditEvent.provider_id,
                AuditEvent.payload,
            )
            .where(AuditEvent.audit_id.in_([row.id for row in rows]))
            .order_by(AuditEvent.seq)
        )
        for event in events:
            history.setdefault(event.audit_id, []).append(event)
        for row in rows:
            report.rows["audits"] += 1
            trail = history.get(row.id, [])
            if not trail or trail[0].kind != "audit.requested":
                report.add("audits", row.id, "no audit.requested event vouches for this row")
                continue
            first = trail[0]
            if (first.report_id, first.provider_id) != (row.report_id, row.provider_id):
                report.add("audits", row.id, "report or provider differs from its audit.requested event")
            if first.payload.get("trigger") != row.trigger.value:
                report.add("audits", row.id, "trigger differs from its audit.requested event")
            if first.payload.get("full_exposure", False) != row.full_exposure:
                report.add("audits", row.id, "full_exposure differs from its audit.requested event")
            moves = [STATUS_AFTER[event.kind] for event in trail if event.kind in STATUS_AFTER]
            if moves[-1] != row.status:
                report.add(
                    "audits", row.id, f"status is {row.status.value} but its events say {moves[-1].value}"
                )


def _check_orphans(session: Session, report: IntegrityReport) -> None:
    """Events whose row is gone (a deleted report, verdict or audit)."""
    orphans = (
        (
            "report.received",
            AuditEvent.report_id,
            "reports",
            exists().where(Report.id == AuditEvent.report_id),
        ),
        (
            "verdict.issued",
            AuditEvent.audit_id,
            "verdicts",
            exists().where(Verdict.audit_id == AuditEvent.audit_id),
        ),
        ("audit.requested", AuditEvent.audit_id, "audits", exists().where(Audit.id == AuditEvent.audit_id)),
    )
    for kind, column, table, row_exists in orphans:
        for seq, owner in session.execute(
            select(AuditEvent.seq, column)
            .where(AuditEvent.kind == kind, ~row_exists)
            .order_by(AuditEvent.seq)
        ):
            report.add(table, owner, f"recorded by event {seq} ({kind}) but missing")


def check_integrity(db: Database) -> IntegrityReport:
    """The chain (links, hashes, the seal of its head) and every report, verdict and audit row against the
    events that vouch for them, in one consistent snapshot."""
    report = IntegrityReport()
    with db.snapshot() as session:
        chain = verify_chain(session)
        report.events = chain.events
        for problem in chain.problems:
            report.add("audit_events", problem.seq if problem.seq is not None else "seal", problem.reason)
        report.pending = pending_count(session)
        _check_reports(session, report)
        _check_verdicts(session, report)
        _check_audits(session, report)
        _check_orphans(session, report)
    return report


@job("coin.integrity.check", every=lambda settings: settings.integrity_check_interval_seconds)
def integrity_check(context: "ServiceContext") -> int:
    """Run `check_integrity`, log every problem it lists (an operator alerts on `integrity.problem`) and
    record the outcome in the trail (`integrity.checked`, which /metrics reads). Returns the count."""
    report = check_integrity(context.db)
    for problem in report.problems:
        log.error("integrity.problem", table=problem.table, row=problem.row, reason=problem.reason)
    log.info("integrity.checked", problems=report.problem_count, events=report.events, **report.rows)
    with context.db.unit_of_work() as session:
        append_event(
            session,
            "integrity.checked",
            payload={"problems": report.problem_count, "events": report.events, "rows": report.rows},
        )
    return report.problem_count
