"""`coin monitor-eval`: the provider-level monitor (`auditor.monitoring`) measured by simulation on the
leave-one-domain-out outcomes.

Each fold's `outcomes.jsonl` holds audits of the held-out domain through the real protocol and checks
(`auditor.research.evaluation`): every honest trace once, and 50 traces per attack × IR cell. A
simulated provider is a stream of audits resampled from them, with replacement: an honest provider
draws honest outcomes; an inflating one, for each audit, an outcome of its attack cell with
probability p (the share of its reports it inflates) and an honest one otherwise. Every provider runs
the monitor's own code (`log_e_values`, `inflated_reports_lower`) on its stream, vectorised.

No tuning on the domain judged: the composite null (and the point estimate's reference) of a fold
comes from the *other* folds. The calibration written for the service uses every fold.

What each cell reports: audits to alarm (median, 90th percentile, share never alarmed within the
horizon), whether the alarm came no later than the first audit that failed a proof, and the interval's
coverage — the share of providers whose token-share interval holds the population's true inflated
share (injected / billed tokens of the mixture they draw from), read at the end of the horizon and at
the alarm (or the horizon's end, for a provider that never alarms): the interval is a confidence
sequence, so it must cover at any stopping time. Two diagnostics say why a cell is slow:
`best_possible_audits` ≈ log(1/α) / max_j KL(q_j ‖ r_j) (Wald), the audits a test that knew the
provider's flag rates q_j would need against the composite null — None where the attack never flags
more often than some honest domain does, so that no test against this null can detect it — and
`best_possible_audits_own_null`, the same against the domain's own honest rates on the wider
diagnostic ladder (with reference traces of the provider's own domain the bulk thresholds are safe):
what honest reference traces of the domain would buy.
"""

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from auditor.monitoring import (
    THRESHOLDS,
    AuditEvidence,
    FoldRates,
    MonitorPolicy,
    composite_null,
    detection_reference,
)
from auditor.monitoring.eprocess import log_e_values
from auditor.monitoring.estimate import inflated_reports_lower, point_estimate, token_share_lower
from auditor.monitoring.monitor import ALPHA
from auditor.protocol.commitment import DEFAULT_BLOCK_SIZE
from auditor.research.attacks import ATTACKS, CONTENT_ATTACKS
from auditor.research.evaluation.run import HONEST, AuditOutcome, read_outcomes
from auditor.research.evaluation.summary import wilson
from auditor.semantic.exposure import ExposurePolicy

OUTCOMES_FILE = "outcomes.jsonl"
# A wider ladder than the monitor's, to show which thresholds' honest rates carry over between domains.
DIAGNOSTIC_THRESHOLDS = (0.006, 0.05, 0.25, 0.5)
FOLD_PREFIX = "fold-"
# Providers per chunk: one chunk's e-values (providers x horizon x streams x bets) are held at once.
CHUNK = 100
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class MonitorEvalConfig:
    honest_providers: int = 1000
    providers: int = 200  # per attack x IR x share cell
    horizon: int = 1000
    irs: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
    shares: tuple[float, ...] = (0.1, 0.3, 1.0)
    alpha: float = ALPHA
    thresholds: tuple[float, ...] = THRESHOLDS
    seed: int = 0


def read_folds(lodo_dir: Path) -> dict[str, list[AuditOutcome]]:
    """Every `fold-<domain>/outcomes.jsonl` under `lodo_dir` (folds still being written are absent)."""
    return {
        path.parent.name.removeprefix(FOLD_PREFIX): read_outcomes(path)
        for path in sorted(lodo_dir.glob(f"{FOLD_PREFIX}*/{OUTCOMES_FILE}"))
    }


def planned_blocks(outcome: AuditOutcome) -> int:
    """The blocks the audit's exposure plan allowed: the evaluation plans on the claimed size — the
    genuine tokens plus the injected ones (`ir` = injected / genuine) — at its default block size and
    policy, which the leave-one-domain-out run uses."""
    claimed = round(outcome.genuine_tokens * (1 + outcome.ir))
    return ExposurePolicy().block_budget(math.ceil(claimed / DEFAULT_BLOCK_SIZE))


def evidence_of(outcome: AuditOutcome) -> AuditEvidence:
    return AuditEvidence(
        outcome.verdict, outcome.verifier_p_value, planned_blocks(outcome), outcome.flagged_checks
    )


@dataclass(frozen=True)
class Pool:
    """Outcomes to resample: each one's score, proof failure, and tokens (genuine, injected)."""

    scores: FloatArray
    fails: BoolArray
    genuine: FloatArray
    injected: FloatArray

    @classmethod
    def of(cls, outcomes: list[AuditOutcome]) -> "Pool":
        evidence = [evidence_of(o) for o in outcomes]
        genuine = np.array([o.genuine_tokens for o in outcomes], dtype=np.float64)
        return cls(
            scores=np.array([e.score() for e in evidence]),
            fails=np.array([e.proof_failure for e in evidence]),
            genuine=genuine,
            injected=genuine * np.array([o.ir for o in outcomes]),
        )

    def flag_rates(self, thresholds: tuple[float, ...]) -> FloatArray:
        rates: FloatArray = (self.scores[:, None] < np.asarray(thresholds)).mean(axis=0)
        return rates


def fold_rates(domain: str, outcomes: list[AuditOutcome], thresholds: tuple[float, ...]) -> FoldRates:
    honest = [evidence_of(o).score() for o in outcomes if o.attack == HONEST]
    content = [o for o in outcomes if o.attack in CONTENT_ATTACKS]
    return FoldRates.from_scores(
        domain, thresholds, honest, [evidence_of(o).score() for o in content], [o.ir for o in content]
    )


@dataclass(frozen=True)
class Counts:
    """The monitor's counts for each simulated provider at one moment."""

    audits: IntArray
    proof_failures: IntArray
    flags: IntArray  # (providers, thresholds)

    def inflated_lower(self, policy: MonitorPolicy) -> FloatArray:
        """Each provider's lower confidence bound on its share of inflated reports."""
        return inflated_reports_lower(
            self.audits,
            self.proof_failures,
            self.flags,
            policy.bound,
            confidence=policy.confidence,
            fractions=policy.fractions,
        )


@dataclass(frozen=True)
class Streams:
    """What the monitor saw of each simulated provider: when it alarmed (horizon + 1: never), its
    first proof failure, and its counts at the end of the horizon and at min(alarm, horizon)."""

    alarm: IntArray
    first_fail: IntArray
    end: Counts
    at_alarm: Counts


def run_streams(
    draw: Callable[[int], tuple[FloatArray, BoolArray]], providers: int, horizon: int, policy: MonitorPolicy
) -> Streams:
    """Simulate `providers` providers of `horizon` audits (`draw(k)` gives k providers' scores and proof
    failures, each (k, horizon)) through the monitor."""
    never = horizon + 1
    thresholds = np.asarray(policy.bound.thresholds)
    n = np.arange(1, horizon + 1)
    parts: list[list[IntArray]] = []
    for start in range(0, providers, CHUNK):
        k = min(CHUNK, providers - start)
        scores, fails = draw(k)
        flags = np.cumsum(scores[..., None] < thresholds, axis=1, dtype=np.int64)
        failed = np.cumsum(fails, axis=1, dtype=np.int64)
        log_e = log_e_values(n, flags, policy.bound.rates, policy.fractions)
        crossed = (failed > 0) | (log_e >= -math.log(policy.alpha))
        alarm = np.where(crossed.any(axis=1), crossed.argmax(axis=1) + 1, never)
        first_fail = np.where(failed[:, -1] > 0, (failed > 0).argmax(axis=1) + 1, never)
        rows = np.arange(k)
        at = np.minimum(alarm, horizon) - 1
        parts.append(
            [alarm, first_fail, failed[:, -1], flags[:, -1], at + 1, failed[rows, at], flags[rows, at]]
        )
    cat = [np.concatenate([p[i] for p in parts]) for i in range(7)]
    return Streams(
        alarm=cat[0],
        first_fail=cat[1],
        end=Counts(np.full(providers, horizon, dtype=np.int64), cat[2], cat[3]),
        at_alarm=Counts(cat[4], cat[5], cat[6]),
    )


def _audits_quantile(alarm: IntArray, horizon: int, q: float) -> float | None:
    """The q-quantile of the audits to alarm; None when more than 1 − q of the providers never alarm."""
    value = float(np.quantile(np.where(alarm > horizon, np.inf, alarm), q, method="inverted_cdf"))
    return value if math.isfinite(value) else None


def _kl(q: float, r: float) -> float:
    """KL(Bernoulli(q) ‖ Bernoulli(r)) for q > r (0 otherwise)."""
    if q <= r:
        return 0.0
    first = q * math.log(q / r)
    return first + ((1 - q) * math.log((1 - q) / (1 - r)) if q < 1 else 0.0)


def best_possible_audits(flag_rates: FloatArray, nulls: FloatArray, alpha: float) -> float | None:
    """log(1/α) / max_j KL(q_j ‖ r_j): about the audits a sequential test that knew the provider's flag
    rates q_j would need to reject rates r_j (Wald); against a null rate of 0 one flag is enough, 1/q_j
    audits on average. None where no q_j exceeds its r_j."""
    pairs = [(float(q), float(r)) for q, r in zip(flag_rates, nulls, strict=True)]
    candidates = [1 / q for q, r in pairs if r == 0 < q]
    best = max((_kl(q, r) for q, r in pairs if r > 0), default=0.0)
    if best > 0:
        candidates.append(math.log(1 / alpha) / best)
    return min(candidates) if candidates else None


def _interval_figures(streams: Streams, policy: MonitorPolicy, truth: float) -> dict[str, float]:
    lower_end = streams.end.inflated_lower(policy)
    share_end = token_share_lower(lower_end, policy.min_inflation_ratio)
    # Read at the stopping time min(alarm, horizon) of *every* provider: the confidence sequence holds
    # there. Among alarmed providers alone it need not: an honest provider that alarmed was unlucky.
    share_alarm = token_share_lower(streams.at_alarm.inflated_lower(policy), policy.min_inflation_ratio)
    figures = {
        "true_token_share": truth,
        "coverage_end": float(np.mean(share_end <= truth)),
        "coverage_at_alarm": float(np.mean(share_alarm <= truth)),
        "inflated_reports_lower_mean": float(lower_end.mean()),
        "token_share_lower_mean": float(share_end.mean()),
        "interval_width_mean": float(np.mean(1.0 - share_end)),
    }
    if policy.reference is not None:
        _, assumed = point_estimate(streams.end.audits, streams.end.flags, policy.reference)
        figures["assumed_token_share_mean"] = float(assumed.mean())
    return figures


def _alarm_figures(streams: Streams, horizon: int) -> dict[str, Any]:
    failed = streams.first_fail <= horizon
    return {
        "median_audits_to_alarm": _audits_quantile(streams.alarm, horizon, 0.5),
        "p90_audits_to_alarm": _audits_quantile(streams.alarm, horizon, 0.9),
        "never_alarmed": float(np.mean(streams.alarm > horizon)),
        "proof_failed": float(np.mean(failed)),
        # Alarm no later than the first failing audit, among providers with one (None: none failed).
        "alarm_by_first_fail": float(np.mean(streams.alarm[failed] <= streams.first_fail[failed]))
        if failed.any()
        else None,
    }


def simulate_fold(
    domain: str,
    outcomes: list[AuditOutcome],
    summaries: list[FoldRates],
    config: MonitorEvalConfig,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """The honest providers and every attack x IR x share cell of one held-out fold, against the null
    and reference of the other folds."""
    policy = MonitorPolicy(
        composite_null(summaries, exclude=domain),
        alpha=config.alpha,
        reference=detection_reference(summaries, exclude=domain),
    )
    horizon = config.horizon
    honest = Pool.of([o for o in outcomes if o.attack == HONEST])

    def honest_draw(k: int) -> tuple[FloatArray, BoolArray]:
        idx = rng.integers(len(honest.scores), size=(k, horizon))
        return honest.scores[idx], honest.fails[idx]

    streams = run_streams(honest_draw, config.honest_providers, horizon, policy)
    alarms = int(np.sum(streams.alarm <= horizon))
    low, high = wilson(alarms, config.honest_providers)
    honest_row = {
        "providers": config.honest_providers,
        "audits_per_provider": horizon,
        "pool": len(honest.scores),
        "flag_rates": honest.flag_rates(config.thresholds).tolist(),
        "false_alarms": alarms,
        "false_alarm_rate": alarms / config.honest_providers,
        "ci_low": low,
        "ci_high": high,
        **_interval_figures(streams, policy, 0.0),
    }
    honest_rates = honest.flag_rates(config.thresholds)
    honest_ladder = honest.flag_rates(DIAGNOSTIC_THRESHOLDS)
    rates = np.asarray(policy.bound.rates)
    cells = []
    for attack in ATTACKS:
        for ir in config.irs:
            group = [o for o in outcomes if o.attack == attack and o.requested_ir == ir]
            if not group:
                continue
            pool = Pool.of(group)
            attack_rates = pool.flag_rates(config.thresholds)
            for share in config.shares:

                def draw(k: int, pool: Pool = pool, share: float = share) -> tuple[FloatArray, BoolArray]:
                    inflated = rng.random((k, horizon)) < share
                    h = rng.integers(len(honest.scores), size=(k, horizon))
                    a = rng.integers(len(pool.scores), size=(k, horizon))
                    scores = np.where(inflated, pool.scores[a], honest.scores[h])
                    return scores, np.where(inflated, pool.fails[a], honest.fails[h])

                streams = run_streams(draw, config.providers, horizon, policy)
                billed = (1 - share) * honest.genuine.mean() + share * (pool.genuine + pool.injected).mean()
                truth = share * pool.injected.mean() / billed
                q = (1 - share) * honest_rates + share * attack_rates
                cells.append(
                    {
                        "attack": attack,
                        "kind": ATTACKS[attack].kind,
                        "ir": ir,
                        "share": share,
                        "providers": config.providers,
                        "pool": len(pool.scores),
                        "flag_rates": attack_rates.tolist(),
                        "proof_failure_rate": share * float(pool.fails.mean()),
                        # Against the composite null, and against this domain's own honest rates (what
                        # honest reference traces of the domain would allow): the price of robustness.
                        "best_possible_audits": best_possible_audits(q, rates, config.alpha),
                        "best_possible_audits_own_null": best_possible_audits(
                            (1 - share) * honest_ladder + share * pool.flag_rates(DIAGNOSTIC_THRESHOLDS),
                            honest_ladder,
                            config.alpha,
                        ),
                        **_alarm_figures(streams, horizon),
                        **_interval_figures(streams, policy, truth),
                    }
                )
    return {
        "bound": policy.bound.to_json(),
        "reference": policy.reference.to_json() if policy.reference else None,
        "honest": honest_row,
        "cells": cells,
    }


def _rows(fold: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    cells = [(f"{c['attack']} IR {c['ir']:g} p {c['share']:g}", c) for c in fold["cells"]]
    return [("honest", fold["honest"]), *cells]


def _coverage(row: dict[str, Any]) -> float:
    """The lower of the coverages at the end of the horizon and at the alarm."""
    return float(min(row["coverage_end"], row["coverage_at_alarm"]))


def _speed_target(ir: float, share: float) -> int | None:
    """The issue's target for a content attack: a median of at most 50 audits to alarm at IR >= 0.5
    when every report is inflated, at most 500 at IR 0.25 when 30% are."""
    if ir >= 0.5 and share == 1.0:
        return 50
    if ir == 0.25 and share == 0.3:
        return 500
    return None


def targets(folds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets in every fold present (each simulated domain is held out from its own null):
    each met or not, with the misses."""
    misses: dict[str, list[str]] = {"false_alarm": [], "first_fail": [], "speed": [], "coverage": []}
    for domain, fold in folds.items():
        if fold["honest"]["false_alarm_rate"] > 0.01:
            misses["false_alarm"].append(f"{domain}: {fold['honest']['false_alarm_rate']:.1%}")
        for name, row in _rows(fold):
            where = f"{domain} {name}"
            if _coverage(row) < 0.95:
                misses["coverage"].append(where)
            if name == "honest":
                continue
            if row["kind"] == "structural" or row["attack"] == "pad_repeat_last":
                if row["alarm_by_first_fail"] not in (None, 1.0):
                    misses["first_fail"].append(where)
                continue
            limit = _speed_target(row["ir"], row["share"])
            median = row["median_audits_to_alarm"]
            if limit is not None and (median is None or median > limit):
                shown = "never within the horizon" if median is None else f"{median:g}"
                misses["speed"].append(f"{where}: median {shown} (target {limit})")
    return {
        "domains": sorted(folds),
        "met": {k: not v for k, v in misses.items()},
        "misses": misses,
    }


def headline(folds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The last line of `coin monitor-eval`, the worst fold of each figure over every fold present: the
    highest honest false-alarm rate, the slowest median audits to alarm per attack at IR 0.5 with p = 1
    (None: not within the horizon in some fold), and the lowest coverage of any cell."""
    medians: dict[str, float | None] = {}
    for fold in folds.values():
        for cell in fold["cells"]:
            if cell["ir"] == 0.5 and cell["share"] == 1.0:
                value, seen = cell["median_audits_to_alarm"], medians.get(cell["attack"], 0.0)
                medians[cell["attack"]] = None if value is None or seen is None else max(value, seen)
    return {
        "domains": sorted(folds),
        "honest_false_alarm_rate": max(f["honest"]["false_alarm_rate"] for f in folds.values()),
        "median_audits_to_alarm": medians,
        "interval_coverage_min": min(f["interval_coverage_min"] for f in folds.values()),
    }


def transfer(summaries: list[FoldRates]) -> dict[str, dict[str, list[Any]]]:
    """Per fold: its honest rates below each threshold and the bound the other folds give — where the
    rate exceeds the bound, a rung at that threshold would alarm that domain's honest providers."""
    out: dict[str, dict[str, list[Any]]] = {}
    for fold in summaries:
        bound = composite_null(summaries, exclude=fold.domain)
        rates = [k / fold.honest_audits for k in fold.honest_flags]
        out[fold.domain] = {
            "thresholds": list(fold.thresholds),
            "rates": rates,
            "bound": list(bound.rates),
            "exceeds": [r > b for r, b in zip(rates, bound.rates, strict=True)],
        }
    return out


def run_monitor_eval(
    lodo_dir: Path, config: MonitorEvalConfig, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Simulate every fold present (each needs at least one other fold for its null) and summarise."""
    outcomes = read_folds(lodo_dir)
    if len(outcomes) < 2:
        raise ValueError(
            f"{lodo_dir}: {len(outcomes)} fold(s) with {OUTCOMES_FILE}; the null of a held-out domain "
            "comes from the other folds, so at least two are needed"
        )
    summaries = [fold_rates(domain, rows, config.thresholds) for domain, rows in outcomes.items()]
    ladder = [fold_rates(domain, rows, DIAGNOSTIC_THRESHOLDS) for domain, rows in outcomes.items()]
    rng = np.random.default_rng(config.seed)
    folds = {}
    for domain, rows in outcomes.items():
        log(f"fold {domain}: {len(rows)} outcomes")
        fold = simulate_fold(domain, rows, summaries, config, rng)
        fold["interval_coverage_min"] = min(_coverage(row) for _, row in _rows(fold))
        folds[domain] = fold
    shipped = MonitorPolicy(composite_null(summaries), reference=detection_reference(summaries))
    return {
        "config": asdict(config),
        "lodo_dir": str(lodo_dir),
        "fold_rates": [asdict(s) for s in summaries],
        "calibration": shipped.to_json(),
        "transfer": transfer(ladder),
        "folds": folds,
        "targets": targets(folds),
        "headline": headline(folds),
    }
