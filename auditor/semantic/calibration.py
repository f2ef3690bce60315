"""Calibration of the semantic checks: thresholds fit on honest traces to a target false-positive rate.

Every threshold the checks of `auditor.semantic.checks` read comes from here, fit on the evidence of
honest traces followed through every round of their exposure plan, as a real audit would see them.
"""

from collections.abc import Sequence

import numpy as np

from auditor.protocol.tokenize import Tokenizer
from auditor.semantic.checks import (
    FEATURE_NAMES,
    Evidence,
    Revealed,
    block_features,
    deepset_benign_probability,
    rule_benign_probability,
)
from auditor.semantic.exposure import ExposurePlan
from auditor.semantic.heads import HeadBundle


def prefix_sets(
    plan: ExposurePlan, evidence: Evidence, heads: HeadBundle, tokenizer: Tokenizer
) -> list[Evidence]:
    """The evidence the verifier sees after each round of `plan`, recomputed on the blocks revealed so
    far (some features compare a block with the other revealed ones)."""
    rank = {b: k for k, b in enumerate(plan.blocks)}
    ordered = sorted(evidence.revealed.blocks, key=lambda b: rank[b.index])
    out = []
    for end in plan.round_ends:
        if end == len(ordered):
            out.append(evidence)
            continue
        shown = sorted(ordered[:end], key=lambda b: b.index)
        revealed = Revealed(evidence.revealed.num_blocks, evidence.revealed.answer_codes, tuple(shown))
        out.append(block_features(revealed, heads, tokenizer))
    return out


def threshold_below(values: Sequence[float], rate: float) -> float:
    """A threshold t with at most `rate` of `values` strictly below it (fail when value < t): the
    rate-quantile, or, when the sample is too small to resolve `rate`, 5% (relative) under the minimum,
    so no value of the sample fails and a little room is left beyond it. The margin is relative only: an
    absolute one takes a threshold on probabilities (honest ones reach 1e-9) below zero, where the check
    could never fail."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    k = int(np.floor(rate * len(ordered)))
    if k == 0:
        return float(ordered[0] - 0.05 * abs(ordered[0]))
    return float(ordered[k])


def calibrate(
    honest: Sequence[tuple[ExposurePlan, Evidence]],
    heads: HeadBundle,
    tokenizer: Tokenizer,
    *,
    target_fpr: float,
) -> dict[str, float]:
    """Thresholds such that honest validation traces, followed through every round of their exposure
    plan, fail each rule check (duplicates, tokenization) at rate <= target_fpr / 8 and the verifier at
    <= 3/4 target_fpr. The alarm levels of the two heads (evidence only) are set the same way."""
    per_check = target_fpr / 8
    worst_a, worst_b, worst_dup, merges = [], [], [], []
    for _plan, evidence in honest:
        worst_a.append(float(evidence.features[:, FEATURE_NAMES.index("tokens_to_block_mean")].min()))
        worst_b.append(float(evidence.features[:, FEATURE_NAMES.index("block_to_answer")].min()))
        worst_dup.append(-float(evidence.features[:, FEATURE_NAMES.index("max_block_cosine")].max()))
        merges.append(evidence.merges)
    calibration = {
        "tokens_to_block_alarm": threshold_below(worst_a, per_check),
        "block_to_answer_alarm": threshold_below(worst_b, per_check),
        "duplicate_cosine": min(0.999, -threshold_below(worst_dup, per_check)),
        "merge_count": float(max(1, int(np.quantile(merges, 1 - per_check)) + 1)) if merges else 1.0,
        "target_fpr": target_fpr,
    }

    rounds = [prefix_sets(plan, evidence, heads, tokenizer) for plan, evidence in honest]

    def deepset(e: Evidence) -> float:
        return deepset_benign_probability(e, heads)

    def rule(e: Evidence) -> float:
        return rule_benign_probability(e, calibration)

    for kind, probability in (("deepset", deepset), ("rule", rule)):
        lowest, final = [], []
        for prefixes in rounds:
            values = [probability(prefix) for prefix in prefixes]
            lowest.append(min(values))
            final.append(values[-1])
        calibration[f"{kind}_fail"] = threshold_below(lowest, 0.75 * target_fpr)
        calibration[f"{kind}_pass"] = max(calibration[f"{kind}_fail"], float(np.quantile(final, 0.1)))
    return calibration
