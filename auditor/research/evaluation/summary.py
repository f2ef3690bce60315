"""Rates with Wilson intervals per attack x IR, domain and check, and ROC points, from audit outcomes."""

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from auditor.research.attacks import ATTACKS
from auditor.research.evaluation.run import HONEST, AuditOutcome, EvalConfig


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default); (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _rate(flags: Sequence[bool]) -> dict[str, float | int]:
    hits = int(sum(flags))
    low, high = wilson(hits, len(flags))
    return {
        "rate": hits / len(flags) if flags else float("nan"),
        "ci_low": low,
        "ci_high": high,
        "n": len(flags),
    }


def summarise(outcomes: Sequence[AuditOutcome], config: EvalConfig, meta: dict[str, Any]) -> dict[str, Any]:
    honest = [o for o in outcomes if o.attack == HONEST]
    fpr = _rate([o.flagged for o in honest])
    cells: dict[tuple[str, float], list[AuditOutcome]] = defaultdict(list)
    by_domain: dict[tuple[str, str, float], list[AuditOutcome]] = defaultdict(list)
    for o in outcomes:
        if o.attack != HONEST:
            cells[(o.attack, o.requested_ir)].append(o)
            by_domain[(o.domain, o.attack, o.requested_ir)].append(o)
    detection = []
    for (attack, ir), group in sorted(
        cells.items(), key=lambda kv: (config.attacks.index(kv[0][0]), kv[0][1])
    ):
        rate = _rate([o.flagged for o in group])
        reachable = [o.reachable for o in group if o.reachable is not None]
        token_reachable = [o.token_reachable for o in group if o.token_reachable is not None]
        detection.append(
            {
                "attack": attack,
                "kind": ATTACKS[attack].kind,
                "ir": ir,
                "achieved_ir": float(np.mean([o.ir for o in group])),
                "detection_rate": rate["rate"],
                "ci_low": rate["ci_low"],
                "ci_high": rate["ci_high"],
                "n": rate["n"],
                "reachable_rate": float(np.mean(reachable)) if reachable else None,
                "token_reachable_rate": float(np.mean(token_reachable)) if token_reachable else None,
                "mean_block_exposure": float(np.mean([o.block_exposure for o in group])),
                "mean_token_visibility": float(np.mean([o.token_visibility for o in group])),
                "failed_checks": _check_counts(group),
            }
        )
    domains = sorted({o.domain for o in outcomes})
    per_domain = []
    for domain in domains:
        mine = [o for o in honest if o.domain == domain]
        row: dict[str, Any] = {"domain": domain, "false_positive": _rate([o.flagged for o in mine])}
        row["honest_block_exposure"] = float(np.mean([o.block_exposure for o in mine])) if mine else None
        row["honest_token_visibility"] = float(np.mean([o.token_visibility for o in mine])) if mine else None
        row["detection"] = [
            {"attack": a, "ir": ir, **_rate([o.flagged for o in group])}
            for (d, a, ir), group in sorted(by_domain.items())
            if d == domain
        ]
        per_domain.append(row)
    return {
        "meta": meta,
        "config": {**asdict(config), "policy": asdict(config.policy)},
        "false_positive_rate": fpr["rate"],
        "false_positive_ci": [fpr["ci_low"], fpr["ci_high"]],
        "honest_n": fpr["n"],
        "honest_failed_checks": _check_counts(honest),
        "mean_block_exposure": float(np.mean([o.block_exposure for o in outcomes])),
        "mean_token_visibility": float(np.mean([o.token_visibility for o in outcomes])),
        "honest_mean_block_exposure": float(np.mean([o.block_exposure for o in honest])) if honest else None,
        "honest_mean_token_visibility": float(np.mean([o.token_visibility for o in honest]))
        if honest
        else None,
        "detection": detection,
        "per_domain": per_domain,
        "roc": roc_points(outcomes),
    }


def _check_counts(group: Sequence[AuditOutcome]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for o in group:
        for name in o.failed_checks:
            counts[name] += 1
    return dict(sorted(counts.items()))


def roc_points(outcomes: Sequence[AuditOutcome]) -> dict[str, Any]:
    """ROC of the verifier's final P(benign): honest traces against inflated ones, per IR (content
    attacks only; structural ones never reach the semantic checks)."""
    honest = [
        o.benign_probability for o in outcomes if o.attack == HONEST and o.benign_probability is not None
    ]
    curves: dict[str, Any] = {}
    for ir in sorted({o.requested_ir for o in outcomes if o.attack != HONEST}):
        attacked = [
            o.benign_probability
            for o in outcomes
            if o.attack != HONEST and o.requested_ir == ir and o.benign_probability is not None
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
