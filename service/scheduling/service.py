"""Sampling policies: how many of a provider's reports the auditor draws for audit, and escalation.

A provider's policy (one row; none means no scheduled sampling) says the share of its reports drawn
(`share`), the audits it gets per UTC day at least (`min_per_day`) and its domain, whose calibration
its monitor and its audits' copy rule use. It escalates — to `escalated_share` and
`escalated_min_per_day`, and its scheduled audits reveal their whole exposure plan in one round — after
a failed audit, when its monitor alarms, or while the monitor's e-value is at or above
`warning_e_value` (evidence rising, not yet an alarm).
It returns to base after `clean_audits` consecutive passing audits once the e-value is back below the
warning level; a `suspect` or `fail` verdict on the way starts the count again (an `inconclusive` one
neither counts nor resets).

The exposure budget stays within the protocol's caps whatever the level (25 % of the blocks, 2 % of
the tokens, `service.audits.workflow.exposure_policy`): an escalated audit spends all of it at once,
where a base audit stops after a clean first round. Every change of terms and every escalation or
return to base is an event in the audit trail (`sampling_policy.*`).
"""

import re
import uuid
from dataclasses import asdict, dataclass

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.errors import ServiceError
from service.events import append_event, lock_chain
from service.models import EscalationReason, Outcome, PolicyLevel, Provider, SamplingPolicy, utcnow

log = structlog.get_logger(__name__)

# Unless the terms say otherwise, escalation multiplies the share (up to every report) and the minimum
# per day by this.
ESCALATION_FACTOR = 4
DEFAULT_CLEAN_AUDITS = 5
# An e-value of 10 is a likelihood ratio of 10 against the honest null: worth more audits, and a tenth
# of the way to the alarm at 1/alpha = 100.
DEFAULT_WARNING_E_VALUE = 10.0
DOMAIN_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
# Upper bounds of the terms (the API's schema states them too): far above any real policy, and inside
# what the store's integer columns and the trail's canonical JSON (finite numbers only) can hold.
MAX_PER_DAY = 1_000_000
MAX_CLEAN_AUDITS = 10_000
MAX_WARNING_E_VALUE = 1e12


@dataclass(frozen=True)
class PolicyTerms:
    """What the auditor's admin sets; the escalated values default from the base ones."""

    domain: str
    share: float
    min_per_day: int
    escalated_share: float | None = None
    escalated_min_per_day: int | None = None
    clean_audits: int = DEFAULT_CLEAN_AUDITS
    warning_e_value: float = DEFAULT_WARNING_E_VALUE

    def resolved(self) -> "PolicyTerms":
        """The terms with their defaults filled in; ServiceError naming the first term out of range (a
        NaN is in no range)."""
        if not DOMAIN_PATTERN.match(self.domain):
            raise ServiceError("domain: lower-case letters, digits, '_', '.' and '-', at most 64")
        if not 0 <= self.share <= 1:
            raise ServiceError("share: between 0 and 1")
        # The given minimums are bounded before the default multiplies one.
        if not 0 <= self.min_per_day <= MAX_PER_DAY:
            raise ServiceError(f"min_per_day: between 0 and {MAX_PER_DAY}")
        if self.escalated_min_per_day is not None and self.escalated_min_per_day > MAX_PER_DAY:
            raise ServiceError(f"escalated_min_per_day: at most {MAX_PER_DAY}")
        escalated_share = (
            min(1.0, ESCALATION_FACTOR * self.share) if self.escalated_share is None else self.escalated_share
        )
        escalated_min = (
            ESCALATION_FACTOR * self.min_per_day
            if self.escalated_min_per_day is None
            else self.escalated_min_per_day
        )
        if not self.share <= escalated_share <= 1:
            raise ServiceError("escalated_share: between share and 1")
        if escalated_min < self.min_per_day:
            raise ServiceError("escalated_min_per_day: at least min_per_day")
        if not 1 <= self.clean_audits <= MAX_CLEAN_AUDITS:
            raise ServiceError(f"clean_audits: between 1 and {MAX_CLEAN_AUDITS}")
        if not 1 < self.warning_e_value <= MAX_WARNING_E_VALUE:
            raise ServiceError(
                f"warning_e_value: above 1 (an e-value of 1 is no evidence) and at most {MAX_WARNING_E_VALUE:g}"
            )
        return PolicyTerms(
            self.domain,
            self.share,
            self.min_per_day,
            escalated_share,
            escalated_min,
            self.clean_audits,
            self.warning_e_value,
        )


def get_policy(session: Session, provider: Provider) -> SamplingPolicy | None:
    return session.get(SamplingPolicy, provider.id)


def _locked(session: Session, provider_id: uuid.UUID) -> SamplingPolicy | None:
    return session.scalars(
        select(SamplingPolicy).where(SamplingPolicy.provider_id == provider_id).with_for_update()
    ).one_or_none()


def set_policy(session: Session, provider: Provider, terms: PolicyTerms, *, actor: str) -> SamplingPolicy:
    """Create or replace the provider's terms (an escalation in progress stays: the terms say what
    escalation means, not whether the provider is escalated). Recorded as `sampling_policy.set`."""
    resolved = terms.resolved()
    now = utcnow()
    lock_chain(session)  # before the policy's row: the order of `service.events.lock_chain`
    policy = _locked(session, provider.id)
    if policy is None:
        # Reports received before the policy existed are not drawn by share; the minimum per day may
        # still draw them while they are inside the retention window.
        policy = SamplingPolicy(
            provider_id=provider.id, level=PolicyLevel.BASE, clean_streak=0, drawn_through=now
        )
        session.add(policy)
    for name, value in asdict(resolved).items():
        setattr(policy, name, value)
    policy.updated_at = now
    session.flush()
    append_event(
        session,
        "sampling_policy.set",
        provider_id=provider.id,
        payload={**asdict(resolved), "level": policy.level.value, "by": actor},
    )
    log.info("sampling_policy.set", provider_id=str(provider.id), by=actor, **asdict(resolved))
    return policy


def _escalation_reason(
    outcome: Outcome, alarm_raised: bool, e_value: float, warning: float
) -> EscalationReason | None:
    if outcome == Outcome.FAIL:
        return EscalationReason.FAIL
    if alarm_raised:
        return EscalationReason.ALARM
    if e_value >= warning:
        return EscalationReason.EVIDENCE
    return None


def apply_verdict(
    session: Session,
    provider_id: uuid.UUID,
    audit_id: uuid.UUID,
    outcome: Outcome,
    *,
    e_value: float,
    alarm_raised: bool,
) -> None:
    """Escalate the provider's policy, or count a clean audit towards its return to base, after a
    verdict (in the verdict's transaction, which holds the chain's lock). Nothing for a provider without
    a policy."""
    policy = _locked(session, provider_id)
    if policy is None:
        return
    reason = _escalation_reason(outcome, alarm_raised, e_value, policy.warning_e_value)
    now = utcnow()
    figures = {"audit_id": str(audit_id), "outcome": outcome.value, "e_value": e_value}
    if reason is not None:
        policy.clean_streak = 0
        if policy.escalated:
            return  # already escalated: the count towards base starts again, nothing else changes
        policy.level = PolicyLevel.ESCALATED
        policy.escalation_reason = reason
        policy.escalated_at = policy.updated_at = now
        payload = {
            **figures,
            "reason": reason.value,
            "share": policy.escalated_share,
            "min_per_day": policy.escalated_min_per_day,
        }
        append_event(
            session, "sampling_policy.escalated", provider_id=provider_id, audit_id=audit_id, payload=payload
        )
        log.warning("sampling_policy.escalated", provider_id=str(provider_id), **payload)
        return
    if not policy.escalated:
        return
    if outcome == Outcome.PASS:
        policy.clean_streak += 1
    elif outcome == Outcome.SUSPECT:
        policy.clean_streak = 0
    if policy.clean_streak >= policy.clean_audits:
        payload = {
            **figures,
            "clean_audits": policy.clean_streak,
            "share": policy.share,
            "min_per_day": policy.min_per_day,
        }
        policy.level = PolicyLevel.BASE
        policy.escalation_reason = None
        policy.escalated_at = None
        policy.clean_streak = 0
        policy.updated_at = now
        append_event(
            session,
            "sampling_policy.returned_to_base",
            provider_id=provider_id,
            audit_id=audit_id,
            payload=payload,
        )
        log.info("sampling_policy.returned_to_base", provider_id=str(provider_id), **payload)
