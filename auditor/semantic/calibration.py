"""Calibration of the statistical checks on honest traces (DESIGN §3 checks 4–8).

Every statistical check has a share of the false-positive budget (`Alphas`). The checks' thresholds
and the verifier's null distribution are fit on the evidence of honest traces that nothing else was
fit on, each followed through every round of its exposure plan as a real audit would see it. The
budget is half the `suspect` rate the auditor promises on honest traffic: the other half is room for
domains unlike the calibration's (what leave-one-domain-out evaluation measures).
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import numpy.typing as npt

from auditor.protocol.tokenize import Tokenizer
from auditor.semantic.checks import Evidence, Revealed, evidence_of, outlier_scores, verifier_statistic
from auditor.semantic.exposure import ExposurePlan
from auditor.semantic.heads import HeadBundle, VerifierBand, band_for
from auditor.semantic.tokenization import merges_when_retokenized

# The honest `suspect` rate the auditor promises, per domain and trace length.
TARGET_SUSPECT_RATE = 0.02
# Upper ends of the verifier's bands, in blocks an audit's plan may reveal (the last has no end): a
# longer trace shows more blocks, so more chances for one odd honest block, and gets its own threshold.
PLANNED_BANDS = (4, 11, 24, 49, 99, 2**31)
# Honest traces a domain needs in a band for its own threshold there (below, the domain is pooled).
MIN_BAND_TRACES = 50


@dataclass(frozen=True)
class Alphas:
    """Each statistical check's share of the false-positive budget (together half the target)."""

    verifier: float = 0.006
    duplicates: float = 0.002
    retokenization: float = 0.002


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


def prefix_sets(
    plan: ExposurePlan, evidence: Evidence, heads: HeadBundle, tokenizer: Tokenizer
) -> list[Evidence]:
    """The evidence the checks see after each round of `plan`, recomputed on the blocks revealed so far
    (the verifier compares each block with the other revealed ones)."""
    rank = {b: k for k, b in enumerate(plan.blocks)}
    ordered = sorted(evidence.revealed.blocks, key=lambda b: rank[b.index])
    out = []
    for end in plan.round_ends:
        if end >= len(ordered):
            out.append(evidence)
            break
        shown = sorted(ordered[:end], key=lambda b: b.index)
        revealed = Revealed(evidence.revealed.num_blocks, evidence.revealed.answer_codes, tuple(shown))
        out.append(evidence_of(revealed, heads, tokenizer))
    return out


def merge_rate(token_lists: Iterable[Sequence[bytes]], tokenizer: Tokenizer) -> float:
    """The share of adjacent token pairs of honest traces that merge when re-tokenized, over every pair;
    (merges + 1) / (pairs + 1), so that a corpus without one still leaves a rate above zero."""
    merges = pairs = 0
    for tokens in token_lists:
        pairs += max(0, len(tokens) - 1)
        merges += sum(merges_when_retokenized(a, b, tokenizer) for a, b in pairwise(tokens))
    return (merges + 1) / (pairs + 1)


def null_scores(
    honest: Sequence[tuple[ExposurePlan, Evidence]], heads: HeadBundle, tokenizer: Tokenizer
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The block model's score and the outlier score of every block of every honest trace, after every
    round (each ascending)."""
    prefixes = [
        prefix for plan, evidence in honest for prefix in prefix_sets(plan, evidence, heads, tokenizer)
    ]
    model = np.concatenate([heads.block_scores(prefix.features) for prefix in prefixes])
    outliers = np.concatenate([outlier_scores(prefix.features) for prefix in prefixes])
    return np.sort(model), np.sort(outliers)


def _band_thresholds(
    honest: Mapping[str, Sequence[tuple[int, float]]], alpha: float
) -> tuple[VerifierBand, ...]:
    """Per band of planned blocks, the most cautious of the domains' alpha-quantiles (see
    `verifier_bands`)."""
    bands: list[VerifierBand] = []
    low = 0
    for high in PLANNED_BANDS:
        by_domain = {d: [t for k, t in rows if low < k <= high] for d, rows in honest.items()}
        filled = [values for values in by_domain.values() if len(values) >= MIN_BAND_TRACES]
        pooled = [t for values in by_domain.values() for t in values]
        if filled:
            threshold = min(threshold_below(values, alpha) for values in filled)
        elif len(pooled) >= MIN_BAND_TRACES:
            threshold = threshold_below(pooled, alpha)
        elif bands:
            threshold = bands[-1].threshold * bands[-1].max_planned / min(high, 2 * bands[-1].max_planned)
        else:
            threshold = alpha
        pass_level = float(np.median(pooled)) if pooled else (bands[-1].pass_level if bands else 1.0)
        bands.append(VerifierBand(high, threshold, max(pass_level, threshold)))
        low = high
    return tuple(bands)


def flagged_share(rows: Sequence[tuple[int, float]], bands: Sequence[VerifierBand]) -> float:
    """The share of (planned blocks, statistic) rows whose statistic is under their band's threshold."""
    flagged = sum(statistic < band_for(bands, planned).threshold for planned, statistic in rows)
    return flagged / len(rows)


def domain_shift(honest: Mapping[str, Sequence[tuple[int, float]]], alpha: float) -> float:
    """How far past alpha a domain the thresholds were not fit on is flagged, measured among the domains
    at hand: each domain with `MIN_BAND_TRACES` traces judged by the thresholds of the others alone
    (leave one domain out inside the calibration set), the largest ratio of its flagged share to alpha,
    and at least 1. With fewer than two such domains there is no shift to measure: 1."""
    judged = [d for d, rows in honest.items() if len(rows) >= MIN_BAND_TRACES]
    if len(judged) < 2:
        return 1.0
    shares = [
        flagged_share(honest[d], _band_thresholds({o: r for o, r in honest.items() if o != d}, alpha))
        for d in judged
    ]
    return max(1.0, max(shares) / alpha)


def verifier_bands(
    honest: Mapping[str, Sequence[tuple[int, float]]], alpha: float, *, shift_margin: bool = False
) -> tuple[tuple[VerifierBand, ...], float]:
    """The verifier's thresholds per band of planned blocks, from honest traces grouped by domain, each
    as (planned blocks, the verifier statistic at the end of its plan); and the domain-shift margin
    they were set with.

    A composite null: in each band the threshold is the most cautious of the domains that have
    `MIN_BAND_TRACES` traces there — each domain's own quantile (`threshold_below`). A band no domain
    fills is fit on all domains together; one with fewer pooled traces than that keeps the band below's
    threshold, scaled down by the ratio of the bands' sizes (more blocks, a proportionally smaller
    smallest p-value: the Bonferroni rule). The pass level is the honest median of the band, so a clean
    sample stops early when it is as clean as a typical honest trace.

    The most cautious of the domains at hand is still no bound for a domain unlike all of them. With
    `shift_margin` the quantile is taken at alpha / `domain_shift`: the rate is divided by the worst
    factor by which one of the calibration's own domains, left out, overshot alpha under the others'
    thresholds (measured on the calibration traces alone, never on the domain an evaluation holds out);
    without, the margin is 1."""
    margin = domain_shift(honest, alpha) if shift_margin else 1.0
    return _band_thresholds(honest, alpha / margin), margin


def verifier_finals(
    honest: Sequence[tuple[str, ExposurePlan, Evidence]], heads: HeadBundle
) -> dict[str, list[tuple[int, float]]]:
    """Per domain, (planned blocks, verifier statistic) of each honest trace at the end of its plan."""
    finals: dict[str, list[tuple[int, float]]] = {}
    for domain, plan, evidence in honest:
        finals.setdefault(domain, []).append((len(plan.blocks), verifier_statistic(evidence, heads).p_value))
    return finals


def calibrate(
    honest: Sequence[tuple[ExposurePlan, Evidence]],
    *,
    honest_merge_rate: float,
    alphas: Alphas = Alphas(),
) -> dict[str, float]:
    """The thresholds of the statistical checks (the verifier's null scores are `null_scores`')."""
    worst_a, worst_b, closest = [], [], []
    for _plan, evidence in honest:
        worst_a.append(float(evidence.column("tokens_to_block_mean").min()))
        worst_b.append(float(evidence.column("block_to_answer").min()))
        if len(evidence.revealed.blocks) > 1:
            closest.append(-float(evidence.column("max_block_cosine").max()))
    return {
        "tokens_to_block_alarm": threshold_below(worst_a, 0.01),
        "block_to_answer_alarm": threshold_below(worst_b, 0.01),
        # Above 1 when more honest traces than the budget reveal two identical blocks: never flags.
        "duplicate_cosine": -threshold_below(closest, alphas.duplicates),
        "merge_rate": honest_merge_rate,
        "verifier_alpha": alphas.verifier,
        "duplicates_alpha": alphas.duplicates,
        "retokenization_alpha": alphas.retokenization,
        "target_suspect_rate": TARGET_SUSPECT_RATE,
    }
