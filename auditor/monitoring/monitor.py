"""One provider's monitoring over one period: a state of a few counts, updated after every audit.

The service keeps one `MonitorState` per provider and period (JSON, well under a kilobyte) and calls
`state.update(evidence)` when an audit's verdict is written. Two ways to alarm:

- `proof`: the first audit that fails a proof check. Proof checks cannot fire on honest text
  (docs/protocol.md), so this adds no false alarm.
- `statistical`: the mixture e-process of `auditor.monitoring.eprocess` over the thresholds of the
  policy's composite null reaches 1/α. By Ville's inequality an honest provider (every audit's
  conditional rate below t_j at most r_j) reaches it with probability at most α over the whole period,
  however often the state is looked at.

An alarm stays raised for the rest of the period; `anytime_p_value` (1 / the largest e-value so far)
says how strong the evidence has been. The policy — the null bound and the bets — is part of the state
and fixed for the period: a new calibration applies from the next period, because changing the null
half-way would void the guarantee. α holds per provider and period: over many periods, spend it (e.g.
α / (k (k + 1)) in the k-th period, which sums to α) if one lifetime guarantee is wanted.
"""

import math
from dataclasses import dataclass, replace
from typing import Any, Literal

from auditor.monitoring.bounds import DetectionReference, NullBound
from auditor.monitoring.eprocess import BET_FRACTIONS, log_e_values
from auditor.monitoring.estimate import (
    CONFIDENCE,
    MIN_INFLATION_RATIO,
    inflated_reports_lower,
    token_share_lower,
)
from auditor.monitoring.evidence import AuditEvidence

ALPHA = 0.01
Alarm = Literal["proof", "statistical"]


@dataclass(frozen=True)
class MonitorPolicy:
    """Everything the test and the estimate are computed against, fixed for a period."""

    bound: NullBound
    alpha: float = ALPHA
    fractions: tuple[float, ...] = BET_FRACTIONS
    confidence: float = CONFIDENCE
    min_inflation_ratio: float = MIN_INFLATION_RATIO
    reference: DetectionReference | None = None  # for the labelled point estimate only

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1 or not 0 < self.confidence < 1:
            raise ValueError("alpha and confidence: in (0, 1)")
        if not self.fractions or any(not 0 < f < 1 for f in self.fractions):
            raise ValueError("bet fractions: in (0, 1)")
        if self.min_inflation_ratio <= 0:
            raise ValueError("min_inflation_ratio: positive")
        if self.reference is not None and self.reference.thresholds != self.bound.thresholds:
            raise ValueError("the detection reference is summarised at other thresholds than the bound")

    def to_json(self) -> dict[str, Any]:
        return {
            "bound": self.bound.to_json(),
            "alpha": self.alpha,
            "fractions": list(self.fractions),
            "confidence": self.confidence,
            "min_inflation_ratio": self.min_inflation_ratio,
            "reference": None if self.reference is None else self.reference.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "MonitorPolicy":
        reference = data.get("reference")
        return cls(
            bound=NullBound.from_json(data["bound"]),
            alpha=float(data["alpha"]),
            fractions=tuple(data["fractions"]),
            confidence=float(data["confidence"]),
            min_inflation_ratio=float(data["min_inflation_ratio"]),
            reference=None if reference is None else DetectionReference.from_json(reference),
        )


@dataclass(frozen=True)
class InflationEstimate:
    """See `auditor.monitoring.estimate`: a lower confidence bound on the share of inflated reports and
    the token-share interval that follows from it (the labelled point estimate under an assumed attack,
    `point_estimate`, is the research harness's: a monitor states only what its null guarantees)."""

    audits: int
    confidence: float
    inflated_reports_lower: float
    token_share_interval: tuple[float, float]


@dataclass(frozen=True)
class MonitorState:
    """One provider's period: its audits, proof failures and flags per threshold (S < t_j or a proof
    failure), the largest log e-value so far, and the alarm if one was raised."""

    period: str
    policy: MonitorPolicy
    audits: int = 0
    proof_failures: int = 0
    flags: tuple[int, ...] = ()  # audits that failed a proof or scored below t_j
    max_log_e: float = 0.0
    alarm: Alarm | None = None
    alarm_at: int | None = None  # the audit (1-based, in the period) that raised it

    def __post_init__(self) -> None:
        if len(self.flags) != len(self.policy.bound.thresholds):
            raise ValueError("one flag count per threshold of the policy's bound")

    @classmethod
    def start(cls, period: str, policy: MonitorPolicy) -> "MonitorState":
        return cls(period, policy, flags=(0,) * len(policy.bound.thresholds))

    @classmethod
    def for_period(cls, state: "MonitorState | None", period: str, policy: MonitorPolicy) -> "MonitorState":
        """`state` while `period` is its period, else a fresh state under `policy`."""
        return state if state is not None and state.period == period else cls.start(period, policy)

    @property
    def log_e(self) -> float:
        """log of the current e-value (0 before any audit)."""
        bound = self.policy.bound
        return float(log_e_values(self.audits, self.flags, bound.rates, self.policy.fractions))

    @property
    def anytime_p_value(self) -> float:
        """min(1, 1 / the largest e-value so far): valid at any stopping time (Ville)."""
        return min(1.0, math.exp(-self.max_log_e))

    def update(self, evidence: AuditEvidence) -> "MonitorState":
        score = evidence.score()
        thresholds = self.policy.bound.thresholds
        state = replace(
            self,
            audits=self.audits + 1,
            proof_failures=self.proof_failures + evidence.proof_failure,
            flags=tuple(k + (score < t) for k, t in zip(self.flags, thresholds, strict=True)),
        )
        log_e = state.log_e
        state = replace(state, max_log_e=max(self.max_log_e, log_e))
        if self.alarm is None:
            if evidence.proof_failure:
                state = replace(state, alarm="proof", alarm_at=state.audits)
            elif log_e >= -math.log(self.policy.alpha):
                state = replace(state, alarm="statistical", alarm_at=state.audits)
        return state

    def estimate(self) -> InflationEstimate:
        policy = self.policy
        lower = float(
            inflated_reports_lower(
                self.audits,
                self.proof_failures,
                self.flags,
                policy.bound,
                confidence=policy.confidence,
                fractions=policy.fractions,
            )
        )
        return InflationEstimate(
            audits=self.audits,
            confidence=policy.confidence,
            inflated_reports_lower=lower,
            token_share_interval=(float(token_share_lower(lower, policy.min_inflation_ratio)), 1.0),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "policy": self.policy.to_json(),
            "audits": self.audits,
            "proof_failures": self.proof_failures,
            "flags": list(self.flags),
            "max_log_e": self.max_log_e,
            "alarm": self.alarm,
            "alarm_at": self.alarm_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "MonitorState":
        alarm = data["alarm"]
        if alarm not in (None, "proof", "statistical"):
            raise ValueError(f"alarm: {alarm!r}")
        return cls(
            period=str(data["period"]),
            policy=MonitorPolicy.from_json(data["policy"]),
            audits=int(data["audits"]),
            proof_failures=int(data["proof_failures"]),
            flags=tuple(int(k) for k in data["flags"]),
            max_log_e=float(data["max_log_e"]),
            alarm=alarm,
            alarm_at=None if data["alarm_at"] is None else int(data["alarm_at"]),
        )
