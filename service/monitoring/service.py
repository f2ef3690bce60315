"""A provider's monitor (`auditor.monitoring`), kept per provider and period and updated with the verdict of
every scheduled audit, and of any other audit that fails (`record_verdict` says why).

`write_verdict` opens the provider's monitor for the current period (`open_monitor`: the row locked,
created from `service.monitoring.calibration.policy_for` when the period starts), names its calibration
in the signed statement, and `record_verdict` counts the verdict in the same transaction — so a counted
verdict is counted exactly once, under the calibration it names (an uncounted one names the calibration
in force). The evidence of an audit is its
verdict and the number of blocks its exposure plan allows (`AuditEvidence.from_verdict`).

When the monitor alarms (a proof failure, or the e-process reaching 1/alpha) the trail records
`monitor.alarm`, the staff get a webhook and the sampling policy escalates; a failed audit sends its own
webhook, and every counted verdict moves the policy's escalation (`service.scheduling.service.apply_verdict`).

A period is a UTC calendar month: the monitor's guarantee (an honest provider alarms with probability
at most alpha) holds per provider and period.
"""

import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from auditor.monitoring import AuditEvidence, MonitorPolicy, MonitorState
from service.database import insert_rows
from service.events import append_event, lock_chain
from service.models import Audit, AuditTrigger, MonitorAlarm, Outcome, ProviderMonitor, utcnow
from service.monitoring.calibration import policy_for
from service.scheduling.service import apply_verdict
from service.webhooks.service import notify

if TYPE_CHECKING:
    from service.context import ServiceContext

log = structlog.get_logger(__name__)

# exp(700) ~ 1e304: an e-value beyond it is as good as infinite, and JSON has no infinity.
MAX_LOG_E = 700.0


def monitor_period(at: datetime) -> str:
    """The period `at` falls in: its UTC month, YYYY-MM."""
    return at.astimezone(UTC).strftime("%Y-%m")


def e_value(log_e: float) -> float:
    return math.exp(min(log_e, MAX_LOG_E))


@dataclass
class OpenMonitor:
    """A provider's monitor row for the period, locked by the caller's transaction, and its state."""

    row: ProviderMonitor
    state: MonitorState

    @property
    def calibration(self) -> str:
        return self.row.calibration


def _locked(session: Session, provider_id: uuid.UUID, period: str) -> ProviderMonitor | None:
    return session.scalars(
        select(ProviderMonitor)
        .where(ProviderMonitor.provider_id == provider_id, ProviderMonitor.period == period)
        .with_for_update()
    ).one_or_none()


def open_monitor(session: Session, provider_id: uuid.UUID, now: datetime) -> OpenMonitor:
    """The provider's monitor for the period of `now`, locked; a period's first verdict starts it under
    the policy `policy_for` chooses (kept for the whole period)."""
    lock_chain(session)  # before the monitor's and the policy's rows: the order of `lock_chain`
    period = monitor_period(now)
    row = _locked(session, provider_id, period)
    if row is None:
        policy, label = policy_for(session, provider_id)
        state = MonitorState.start(period, policy)
        fresh = {
            "id": uuid.uuid4(),
            "provider_id": provider_id,
            "period": period,
            "calibration": label,
            "state": state.to_json(),
            "audits": 0,
            "proof_failures": 0,
            "log_e": 0.0,
            "max_log_e": 0.0,
            "alarm": None,
            "alarm_at": None,
            "alarmed_at": None,
            "inflated_reports_lower": 0.0,
            "token_share_lower": 0.0,
            "updated_at": now,
        }
        # A concurrent verdict of the same provider may start the period first: then its row is ours.
        insert_rows(session, ProviderMonitor, [fresh], skip_conflicts_on=["provider_id", "period"])
        row = _locked(session, provider_id, period)
        assert row is not None
    return OpenMonitor(row, MonitorState.from_json(row.state))


def record_verdict(
    session: Session,
    context: "ServiceContext",
    monitor: OpenMonitor,
    audit: Audit,
    statement: dict[str, Any],
    planned_blocks: int,
) -> None:
    """Count a verdict in the provider's monitor, and act on it: the alarm (event, webhook), the failed
    audit's webhook, the sampling policy's escalation.

    The monitor's statistics hold for the auditor's random draw, so only a scheduled audit counts
    whatever its outcome. Any other audit counts only when it fails — a proof needs no sample — and
    is otherwise left out: the provider issues every receipt token, so customer audits of reports it
    knows to be honest would dilute its evidence and walk an escalated policy back to base, and the
    staff's audits of reports they chose (the same odd trace, again and again) would pile flags on an
    honest provider."""
    provider_id = audit.provider_id
    outcome = Outcome(statement["outcome"])
    if outcome == Outcome.FAIL:
        failed = {
            "audit_id": str(audit.id),
            "report_id": statement["report_id"],
            "request_id": statement["request_id"],
            "reasoning_tokens": statement["reasoning_tokens"],
            "proof_failures": statement["evidence"]["proof_failures"],
            "decided_at": statement["decided_at"],
        }
        notify(session, context, "audit.failed", str(audit.id), failed, provider_id=provider_id)
    if audit.trigger != AuditTrigger.SCHEDULED and outcome != Outcome.FAIL:
        return
    evidence = AuditEvidence.from_verdict(statement, planned_blocks)
    if not evidence.carries_evidence:
        # The auditor could not read the trace (its verification kept raising, or a check raised): a
        # clean count here would dilute the provider's evidence. The verdict says so to the staff.
        log.warning("monitor.audit_not_counted", audit_id=str(audit.id), provider_id=str(provider_id))
        return
    before = monitor.state
    after = before.update(evidence)
    estimate = after.estimate()
    now = utcnow()
    row = monitor.row
    row.state = after.to_json()
    row.audits, row.proof_failures = after.audits, after.proof_failures
    row.log_e, row.max_log_e = after.log_e, after.max_log_e
    row.inflated_reports_lower = estimate.inflated_reports_lower
    row.token_share_lower = estimate.token_share_interval[0]
    row.updated_at = now
    raised = after.alarm if before.alarm is None else None  # an alarm is raised once per period
    log.info(
        "monitor.updated",
        provider_id=str(provider_id),
        period=after.period,
        audits=after.audits,
        e_value=e_value(after.log_e),
        alarm=after.alarm,
    )
    if raised is not None:
        row.alarm, row.alarm_at, row.alarmed_at = MonitorAlarm(raised), after.alarm_at, now
        alarm = {
            "period": after.period,
            "alarm": raised,
            "alarm_at": after.alarm_at,
            "audits": after.audits,
            "e_value": e_value(after.max_log_e),
            "anytime_p_value": after.anytime_p_value,
            "inflated_reports_lower": estimate.inflated_reports_lower,
            "calibration": row.calibration,
        }
        append_event(session, "monitor.alarm", provider_id=provider_id, audit_id=audit.id, payload=alarm)
        log.warning("monitor.alarm", provider_id=str(provider_id), audit_id=str(audit.id), **alarm)
        notify(
            session,
            context,
            "monitor.alarm",
            f"{provider_id}:{after.period}",
            {**alarm, "audit_id": str(audit.id)},
            provider_id=provider_id,
        )
    apply_verdict(
        session, provider_id, audit.id, outcome, e_value=e_value(after.log_e), alarm_raised=raised is not None
    )


@dataclass(frozen=True)
class Standing:
    """A provider's monitor this period, for the staff: how strong the evidence is, whether it alarmed,
    and what it bounds."""

    period: str
    calibration: str
    audits: int
    proof_failures: int
    e_value: float  # now
    max_e_value: float  # the largest so far: 1 / the anytime-valid p-value
    alpha: float  # the alarm is at e-value 1 / alpha
    alarm: MonitorAlarm | None
    alarm_at: int | None
    alarmed_at: datetime | None
    confidence: float
    inflated_reports_lower: float  # lower confidence bound on the share of inflated reports
    token_share_interval: tuple[float, float]  # of billed tokens; its upper end is 1 (see auditor.monitoring)

    @property
    def anytime_p_value(self) -> float:
        return min(1.0, 1.0 / self.max_e_value)

    @property
    def risk_key(self) -> tuple[int, float]:
        """Sort key, riskiest first: a proof alarm, a statistical one, then the strongest evidence."""
        order = {MonitorAlarm.PROOF: 0, MonitorAlarm.STATISTICAL: 1, None: 2}
        return order[self.alarm], -self.max_e_value

    @classmethod
    def of(cls, row: ProviderMonitor) -> "Standing":
        policy = MonitorState.from_json(row.state).policy
        return cls(
            period=row.period,
            calibration=row.calibration,
            audits=row.audits,
            proof_failures=row.proof_failures,
            e_value=e_value(row.log_e),
            max_e_value=e_value(row.max_log_e),
            alpha=policy.alpha,
            alarm=row.alarm,
            alarm_at=row.alarm_at,
            alarmed_at=row.alarmed_at,
            confidence=policy.confidence,
            inflated_reports_lower=row.inflated_reports_lower,
            token_share_interval=(row.token_share_lower, 1.0),
        )

    @classmethod
    def unaudited(cls, period: str, policy: MonitorPolicy, calibration: str) -> "Standing":
        """A period without a verdict yet."""
        return cls(
            period,
            calibration,
            0,
            0,
            1.0,
            1.0,
            policy.alpha,
            None,
            None,
            None,
            policy.confidence,
            0.0,
            (0.0, 1.0),
        )


def standings(session: Session, provider_ids: list[uuid.UUID] | None = None) -> dict[uuid.UUID, Standing]:
    """The standing of every provider (or those given) audited this period, by provider."""
    query = select(ProviderMonitor).where(ProviderMonitor.period == monitor_period(utcnow()))
    if provider_ids is not None:
        query = query.where(ProviderMonitor.provider_id.in_(provider_ids))
    return {row.provider_id: Standing.of(row) for row in session.scalars(query)}


def standing(session: Session, provider_id: uuid.UUID) -> Standing:
    """The provider's standing this period (a period not yet audited: no evidence, under the policy its
    first verdict would start it with)."""
    found = standings(session, [provider_id]).get(provider_id)
    if found is not None:
        return found
    period = monitor_period(utcnow())
    policy, label = policy_for(session, provider_id)
    return Standing.unaudited(period, policy, label)
