"""Rates with Wilson intervals from audit outcomes: the honest `fail` and `suspect` rates (per domain,
length band and model family), detection per attack x IR, the checks that fired, and ROC points."""

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from auditor.research.attacks import ATTACKS, CONTENT_ATTACKS
from auditor.research.evaluation.run import HONEST, AuditOutcome, EvalConfig

# Length bands of the honest trace, in tokens: [low, high).
LENGTH_BANDS = (("< 500", 0, 500), ("500–2,000", 500, 2000), ("> 2,000", 2000, math.inf))
# The IR at which the headline detection figure is read.
HEADLINE_IR = 0.5


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default); (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(flags: Sequence[bool]) -> dict[str, float | int]:
    hits = int(sum(flags))
    low, high = wilson(hits, len(flags))
    return {
        "rate": hits / len(flags) if flags else float("nan"),
        "ci_low": low,
        "ci_high": high,
        "n": len(flags),
    }


def length_band(tokens: int) -> str:
    return next(name for name, low, high in LENGTH_BANDS if low <= tokens < high)


def honest_rates(honest: Sequence[AuditOutcome]) -> dict[str, Any]:
    """`fail` and `suspect` rates of honest audits, and which checks fired."""
    return {
        "fail": rate([o.verdict == "fail" for o in honest]),
        "suspect": rate([o.verdict == "suspect" for o in honest]),
        "failed_checks": check_counts(honest, lambda o: o.failed_checks),
        "flagged_checks": check_counts(honest, lambda o: o.flagged_checks),
    }


def _grouped(
    outcomes: Sequence[AuditOutcome], key: Callable[[AuditOutcome], str]
) -> dict[str, list[AuditOutcome]]:
    groups: dict[str, list[AuditOutcome]] = defaultdict(list)
    for o in outcomes:
        groups[key(o)].append(o)
    return dict(sorted(groups.items()))


def check_counts(
    group: Sequence[AuditOutcome], names: Callable[[AuditOutcome], tuple[str, ...]]
) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for o in group:
        for name in names(o):
            counts[name] += 1
    return dict(sorted(counts.items()))


def detection_rows(outcomes: Sequence[AuditOutcome], config: EvalConfig) -> list[dict[str, Any]]:
    cells: dict[tuple[str, float], list[AuditOutcome]] = defaultdict(list)
    for o in outcomes:
        if o.attack != HONEST:
            cells[(o.attack, o.requested_ir)].append(o)
    rows = []
    for (attack, ir), group in sorted(
        cells.items(), key=lambda kv: (config.attacks.index(kv[0][0]), kv[0][1])
    ):
        detected = rate([o.detected for o in group])
        reachable = [o.reachable for o in group if o.reachable is not None]
        token_reachable = [o.token_reachable for o in group if o.token_reachable is not None]
        rows.append(
            {
                "attack": attack,
                "kind": ATTACKS[attack].kind,
                "ir": ir,
                "achieved_ir": float(np.mean([o.ir for o in group])),
                "detection_rate": detected["rate"],
                "ci_low": detected["ci_low"],
                "ci_high": detected["ci_high"],
                "n": detected["n"],
                "fail_rate": rate([o.verdict == "fail" for o in group])["rate"],
                "reachable_rate": float(np.mean(reachable)) if reachable else None,
                "token_reachable_rate": float(np.mean(token_reachable)) if token_reachable else None,
                "mean_block_exposure": float(np.mean([o.block_exposure for o in group])),
                "mean_token_visibility": float(np.mean([o.token_visibility for o in group])),
                "failed_checks": check_counts(group, lambda o: o.failed_checks),
                "flagged_checks": check_counts(group, lambda o: o.flagged_checks),
            }
        )
    return rows


def headline_detection(rows: Sequence[dict[str, Any]]) -> float | None:
    """The lowest detection (`fail` or `suspect`) over the content attacks at IR 0.5."""
    values = [r["detection_rate"] for r in rows if r["attack"] in CONTENT_ATTACKS and r["ir"] == HEADLINE_IR]
    return min(values) if values else None


def summarise(outcomes: Sequence[AuditOutcome], config: EvalConfig, meta: dict[str, Any]) -> dict[str, Any]:
    honest = [o for o in outcomes if o.attack == HONEST]
    detection = detection_rows(outcomes, config)
    overall = honest_rates(honest)
    return {
        "meta": meta,
        "config": {**asdict(config), "policy": asdict(config.policy)},
        "honest": overall,
        "honest_by_domain": {k: honest_rates(v) for k, v in _grouped(honest, lambda o: o.domain).items()},
        "honest_by_length": {
            name: honest_rates([o for o in honest if length_band(o.genuine_tokens) == name])
            for name, _, _ in LENGTH_BANDS
        },
        "honest_by_model_family": {
            k: honest_rates(v) for k, v in _grouped(honest, lambda o: o.model_family).items()
        },
        "mean_block_exposure": float(np.mean([o.block_exposure for o in outcomes])),
        "mean_token_visibility": float(np.mean([o.token_visibility for o in outcomes])),
        "max_block_exposure": float(max(o.block_exposure for o in outcomes)),
        "max_token_visibility": float(max(o.token_visibility for o in outcomes)),
        "detection": detection,
        "roc": roc_points(outcomes),
        "headline": {
            "fail_rate_honest": overall["fail"]["rate"],
            "suspect_rate_honest": overall["suspect"]["rate"],
            "detection_ir05_min": headline_detection(detection),
        },
    }


def roc_points(outcomes: Sequence[AuditOutcome]) -> dict[str, Any]:
    """ROC of the verifier's final p-value (low = suspicious): honest traces against inflated ones, per
    IR (content attacks only; structural ones never reach the semantic checks)."""
    honest = [o.verifier_p_value for o in outcomes if o.attack == HONEST and o.verifier_p_value is not None]
    curves: dict[str, Any] = {}
    for ir in sorted({o.requested_ir for o in outcomes if o.attack != HONEST}):
        attacked = [
            o.verifier_p_value
            for o in outcomes
            if o.attack != HONEST and o.requested_ir == ir and o.verifier_p_value is not None
        ]
        if not honest or not attacked:
            continue
        # At most ~200 operating points: enough for the plot, small enough for report.json.
        thresholds = sorted(set(np.quantile(honest + attacked, np.linspace(0, 1, 201)).tolist()))
        fpr = [float(np.mean([h < t for h in honest])) for t in thresholds] + [1.0]
        tpr = [float(np.mean([a < t for a in attacked])) for t in thresholds] + [1.0]
        area = float(np.trapezoid([0.0, *tpr], [0.0, *fpr]))
        curves[str(ir)] = {"fpr": fpr, "tpr": tpr, "auc": area}
    return curves
