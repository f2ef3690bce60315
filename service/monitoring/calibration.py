"""What a provider's monitor tests against — the shipped composite null, or its domain's own calibration —
and the copy rule its audits' `copied_spans` check applies.

The shipped policy (`shipped_calibration.json`, packaged with the service) is the composite null that
`coin monitor-eval` fits on every leave-one-domain-out fold: the worst honest rate of any measured
domain below each threshold. It names the head checkpoint it goes with
(`auditor/semantic/weights/heads.pt`): a verifying process refuses to start when the two differ
(`service.audits.verification.preload_models`), and retraining the heads means refitting it.

A domain unlike every measured one calls for honest reference traces of its own (`coin calibrate`,
`service.monitoring.references`): their audits give one `FoldRates`, from which `composite_null` builds
the bound just as it does from the folds. Calibrations are versioned per domain and never changed; a
provider's monitor takes the latest one of its policy's domain made with the shipped checkpoint, else
the shipped policy, when a period starts — a null changed half-way through a period would void the
monitor's guarantee, so a new calibration applies from the next period.

A calibration also carries its domain's copy rule (`auditor.protocol.copies.rule_for_references`): the
shipped thresholds, raised where the domain's honest references copy more. It applies from the
provider's next audit, whatever head checkpoint the calibration was made with: the rule reads only the
repetition profile, and raising it only ever turns a `fail` into a `pass`.
"""

import dataclasses
import json
import uuid
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import structlog
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from auditor.monitoring import THRESHOLDS, DetectionReference, FoldRates, MonitorPolicy, composite_null
from auditor.protocol.copies import COPY_RULE, CopyRule
from service.events import append_event
from service.models import MonitorCalibration, SamplingPolicy, utcnow

log = structlog.get_logger(__name__)

SHIPPED = "shipped"  # what a verdict's `decided_by.calibration` says when no domain calibration applies


@dataclass(frozen=True)
class ShippedCalibration:
    heads: str  # the head checkpoint the policy goes with
    policy: MonitorPolicy


@cache
def shipped_calibration() -> ShippedCalibration:
    document = json.loads(
        resources.files("service.monitoring").joinpath("shipped_calibration.json").read_text("utf-8")
    )
    return ShippedCalibration(document["heads"], MonitorPolicy.from_json(document["policy"]))


def _domain_of(session: Session, provider_id: uuid.UUID) -> str | None:
    return session.scalar(select(SamplingPolicy.domain).where(SamplingPolicy.provider_id == provider_id))


def policy_for(session: Session, provider_id: uuid.UUID) -> tuple[MonitorPolicy, str]:
    """The policy a new period of the provider's monitor starts with, and its label: the latest
    calibration of the provider's domain made with the shipped checkpoint, else the shipped policy."""
    shipped = shipped_calibration()
    domain = _domain_of(session, provider_id)
    if domain is not None:
        calibration = latest_calibration(session, domain, heads=shipped.heads)
        if calibration is not None:
            return MonitorPolicy.from_json(calibration.policy), calibration.label
    return shipped.policy, SHIPPED


def copy_rule_for(session: Session, provider_id: uuid.UUID) -> CopyRule:
    """The copy rule of the provider's next audit: the latest calibration's of its domain, else the
    shipped one."""
    domain = _domain_of(session, provider_id)
    calibration = latest_calibration(session, domain) if domain is not None else None
    if calibration is None:
        return COPY_RULE
    return CopyRule(**calibration.copy_rule, label=calibration.label)


def copy_rule_json(rule: CopyRule) -> dict[str, Any]:
    """What a calibration stores of its copy rule (the label is the calibration's own)."""
    return {"copied": rule.copied, "repeated": rule.repeated, "min_tokens": rule.min_tokens}


def latest_calibration(
    session: Session, domain: str, *, heads: str | None = None
) -> MonitorCalibration | None:
    query = select(MonitorCalibration).where(MonitorCalibration.domain == domain)
    if heads is not None:
        query = query.where(MonitorCalibration.heads == heads)
    return session.scalars(query.order_by(MonitorCalibration.version.desc()).limit(1)).first()


def reference_policy(domain: str, scores: list[float]) -> tuple[FoldRates, MonitorPolicy]:
    """The monitor policy of a domain from the scores of its honest reference audits: the null bound of
    that one set of references (`composite_null` of one fold), the shipped policy's alpha and bets. The
    labelled point estimate keeps the shipped detection rates, with this domain's honest rates."""
    if not scores:
        raise ValueError("a calibration needs at least one reference trace")
    shipped = shipped_calibration().policy
    rates = FoldRates.from_scores(domain, THRESHOLDS, scores)
    reference = shipped.reference
    if reference is not None:
        honest = tuple(k / rates.honest_audits for k in rates.honest_flags)
        reference = DetectionReference(
            rates.thresholds, honest, reference.inflated_rates, reference.inflation_ratio
        )
    return rates, dataclasses.replace(shipped, bound=composite_null([rates]), reference=reference)


def register_calibration(
    session: Session,
    domain: str,
    scores: list[float],
    *,
    copy_rule: CopyRule,
    heads: str,
    embd_id: str,
    actor: str,
) -> MonitorCalibration:
    """Store the next version of `domain`'s calibration from its reference audits' scores and the copy rule
    its references set, recorded as `calibration.registered` in the audit trail."""
    rates, policy = reference_policy(domain, scores)
    latest = session.scalar(
        select(func.max(MonitorCalibration.version)).where(MonitorCalibration.domain == domain)
    )
    calibration = MonitorCalibration(
        domain=domain,
        version=(latest or 0) + 1,
        traces=len(scores),
        rates=_rates_json(rates),
        policy=policy.to_json(),
        copy_rule=copy_rule_json(copy_rule),
        heads=heads,
        embd_id=embd_id,
        created_at=utcnow(),
    )
    session.add(calibration)
    session.flush()
    append_event(
        session,
        "calibration.registered",
        payload={
            "calibration": calibration.label,
            "traces": len(scores),
            "heads": heads,
            "bound": policy.bound.to_json(),
            "copy_rule": copy_rule_json(copy_rule),
            "by": actor,
        },
    )
    log.info("calibration.registered", calibration=calibration.label, traces=len(scores), heads=heads)
    return calibration


def _rates_json(rates: FoldRates) -> dict[str, Any]:
    return {
        "thresholds": list(rates.thresholds),
        "honest_audits": rates.honest_audits,
        "honest_flags": list(rates.honest_flags),
    }
