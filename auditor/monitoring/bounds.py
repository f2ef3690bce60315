"""The composite null: how often an honest provider's audits may score below each threshold.

One audit's verifier p-value is calibrated on the training domains; on an unseen domain its honest
rate below a threshold moves a lot (leave-one-domain-out: 0.9% of general-reasoning audits and 4.7%
of math audits score under 0.006). So the monitor does not trust the p-value's
nominal rate. Its null is composite: an honest provider's audits satisfy P(S < t_j | past) <= r_j for
every threshold t_j, where r_j is the *worst* honest rate measured over the domains held out one at a
time — the upper end of the Wilson 95% interval of the worst fold — and never below t_j itself, the
rate a p-value exact on that domain would have (the Bonferroni-adjusted p-value is conservative, so
at the upper thresholds the floor is what binds, and it guards against a domain shifted where none of
the measured ones is). Any mix of the measured domains satisfies the null.

The limit is a domain worse than every measured one. If domains were exchangeable, a new one would
exceed the worst of k measured ones with probability 1/(k + 1) (the Wilson margin, wide for small
folds, lowers that); so the guarantee grows with the folds, and a provider whose domain looks unlike
all of them calls for honest reference traces of its own domain, from which `composite_null` builds
the bound just the same (one `FoldRates` of the reference audits).

The simulation of a held-out domain takes r_j from the *other* folds only (`composite_null(...,
exclude=domain)`), so nothing is tuned on the domain it is judged on; the shipped bound uses them all.
`DetectionReference` holds what the evaluation measured on inflated reports (pooled over the folds),
for the labelled point estimate of `auditor.monitoring.estimate` — never for the test or the interval.
"""

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# S < t for these t: the verifier's alpha of old (a `suspect` at 0.6%) and one in twenty — the tail
# only. The bulk does not transfer across domains: below 0.25 and 0.5 the GPT-4o medical set's honest
# audits fall far more often than the other domains' bounds allow (leave-one-domain-out,
# docs/eval-results/monitor/monitor.md), so a rung there alarms every honest provider of such a domain; in the
# tail the other domains' bounds hold it. Weak attacks shift the bulk most, so this costs power. The
# ladder was cut to the tail *after* the medical fold showed this: medical's false-alarm rate under it
# is not a blind held-out figure (under the ladder up to 0.5 every honest medical provider alarmed).
THRESHOLDS = (0.006, 0.05)
Z95 = 1.959964


def wilson_upper(successes: int, n: int, z: float = Z95) -> float:
    """The upper end of the Wilson score interval (two-sided 95% by default); 1 when n = 0."""
    if n == 0:
        return 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return min(1.0, centre + half)


def _check_thresholds(thresholds: Sequence[float]) -> None:
    if (
        not thresholds
        or any(not 0 < t <= 1 for t in thresholds)
        or list(thresholds) != sorted(set(thresholds))
    ):
        raise ValueError(f"thresholds: increasing values in (0, 1], got {list(thresholds)}")


def flag_counts(scores: Iterable[float], thresholds: Sequence[float]) -> tuple[int, ...]:
    """How many scores fall below each threshold."""
    values = list(scores)
    return tuple(sum(s < t for s in values) for t in thresholds)


@dataclass(frozen=True)
class FoldRates:
    """One leave-one-domain-out fold, summarised: its honest audits and how many scored below each
    threshold; and its content-attack audits (the same counts and the sum of their inflation ratios),
    which only the point estimate reads."""

    domain: str
    thresholds: tuple[float, ...]
    honest_audits: int
    honest_flags: tuple[int, ...]
    inflated_audits: int = 0
    inflated_flags: tuple[int, ...] = ()
    inflation_ratio_sum: float = 0.0

    @classmethod
    def from_scores(
        cls,
        domain: str,
        thresholds: Sequence[float],
        honest: Sequence[float],
        inflated: Sequence[float] = (),
        inflation_ratios: Sequence[float] = (),
    ) -> "FoldRates":
        _check_thresholds(thresholds)
        return cls(
            domain=domain,
            thresholds=tuple(thresholds),
            honest_audits=len(honest),
            honest_flags=flag_counts(honest, thresholds),
            inflated_audits=len(inflated),
            inflated_flags=flag_counts(inflated, thresholds) if inflated else (),
            inflation_ratio_sum=float(sum(inflation_ratios)),
        )


@dataclass(frozen=True)
class NullBound:
    """r_j: the most often an honest provider's audits score below `thresholds[j]`, and the folds it
    was taken over."""

    thresholds: tuple[float, ...]
    rates: tuple[float, ...]
    domains: tuple[str, ...]

    def __post_init__(self) -> None:
        _check_thresholds(self.thresholds)
        if len(self.rates) != len(self.thresholds) or any(not t <= r <= 1 for t, r in self.pairs):
            raise ValueError("null bound: one rate per threshold, each in [threshold, 1]")

    @property
    def pairs(self) -> list[tuple[float, float]]:
        return list(zip(self.thresholds, self.rates, strict=True))

    def to_json(self) -> dict[str, Any]:
        return {"thresholds": list(self.thresholds), "rates": list(self.rates), "domains": list(self.domains)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "NullBound":
        return cls(tuple(data["thresholds"]), tuple(data["rates"]), tuple(data["domains"]))


def _used(folds: Sequence[FoldRates], exclude: str | None) -> list[FoldRates]:
    used = [f for f in folds if f.domain != exclude]
    if not used:
        raise ValueError(f"no fold left to bound the null (excluding {exclude!r})")
    thresholds = {f.thresholds for f in used}
    if len(thresholds) != 1:
        raise ValueError("folds summarised at different thresholds")
    return used


def composite_null(folds: Sequence[FoldRates], *, exclude: str | None = None) -> NullBound:
    """r_j = max(t_j, the largest Wilson 95% upper bound of the folds' honest rates below t_j), over
    every fold but `exclude` (the domain being evaluated)."""
    used = _used(folds, exclude)
    thresholds = used[0].thresholds
    rates = tuple(
        max(t, max(wilson_upper(f.honest_flags[j], f.honest_audits) for f in used))
        for j, t in enumerate(thresholds)
    )
    return NullBound(thresholds, rates, tuple(sorted(f.domain for f in used)))


@dataclass(frozen=True)
class DetectionReference:
    """What the evaluation saw, pooled over folds: the honest rate below each threshold, the rate of
    content-attack audits below it, and their mean inflation ratio. The point estimate assumes a
    provider's inflation looks like this average; nothing that claims coverage uses it."""

    thresholds: tuple[float, ...]
    honest_rates: tuple[float, ...]
    inflated_rates: tuple[float, ...]
    inflation_ratio: float

    def to_json(self) -> dict[str, Any]:
        return {
            "thresholds": list(self.thresholds),
            "honest_rates": list(self.honest_rates),
            "inflated_rates": list(self.inflated_rates),
            "inflation_ratio": self.inflation_ratio,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "DetectionReference":
        return cls(
            tuple(data["thresholds"]),
            tuple(data["honest_rates"]),
            tuple(data["inflated_rates"]),
            float(data["inflation_ratio"]),
        )


def detection_reference(folds: Sequence[FoldRates], *, exclude: str | None = None) -> DetectionReference:
    """The folds' (all but `exclude`) honest and content-attack rates, pooled."""
    used = _used(folds, exclude)
    inflated = [f for f in used if f.inflated_audits]
    if not inflated:
        raise ValueError("no fold with content-attack audits for the point estimate")
    honest_n = sum(f.honest_audits for f in used)
    inflated_n = sum(f.inflated_audits for f in inflated)
    return DetectionReference(
        thresholds=used[0].thresholds,
        honest_rates=tuple(sum(col) / honest_n for col in zip(*(f.honest_flags for f in used), strict=True)),
        inflated_rates=tuple(
            sum(col) / inflated_n for col in zip(*(f.inflated_flags for f in inflated), strict=True)
        ),
        inflation_ratio=sum(f.inflation_ratio_sum for f in inflated) / inflated_n,
    )
