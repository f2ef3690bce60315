"""How much of a provider's billing is inflated: what the audits can bound, and what they cannot.

Model. Each audited report is inflated with probability π (given the past: audits drawn at random); an
honest report scores below t_j with probability at most r_j (the composite null) and never fails a
proof; an inflated one fails a proof or scores below t_j with some probability d_j in [0, 1] that
depends on the attack and its inflation ratio ρ (IR: injected / genuine tokens) and is unknown — for
the adaptive attacks that paste relevant same-domain text (similar_question, prompt_answer) it is no
higher than the honest rate. The quantity billed in excess is the token share
s = inflated tokens / billed tokens, which for one ratio ρ is πρ / (1 + πρ).

What is identifiable, and how it is bounded here:

- π from below. Whatever d_j is, P(proof failure) <= π and P(fail or S < t_j) <= r_j + π (1 − r_j).
  Each is a null rate for the betting e-process of `auditor.monitoring.eprocess`; for a candidate
  π0 the average of these e-processes (proof failures and every threshold) is an e-process whenever
  π <= π0, and it is non-increasing in π0. So L_n = sup{π0 : E_n(π0) >= 1/(1 − confidence)} is a
  lower confidence *sequence* (Howard et al. 2021; Waudby-Smith & Ramdas 2023): with probability
  >= confidence, L_n <= π at every n at once — valid when read after any audit, at an alarm, or at
  the end of a period.
- π from above: not identifiable. An inflated report may look exactly like an honest one (d = h), so
  no number of clean audits rules out that every report is inflated that way.
- ρ: not measured by any statistical check (a flag says that a report is inflated, not by how much),
  and unbounded above. So s has no upper bound below 1, and a lower bound needs a floor: every
  inflated report inflated by at least `min_inflation_ratio` ρ_min. Then s >= L · ρ_min / (1 + ρ_min)
  when audits are drawn with probability proportional to billed reasoning tokens (π is then the
  token-weighted share of inflated reports), or drawn uniformly and inflation does not depend on a
  report's length.

The interval on s is therefore [L ρ_min / (1 + ρ_min), 1]: it covers with probability >= confidence
under those assumptions alone, and its width says how little the audits pin down. The point estimate
(`point_estimate`) is different in kind: a method-of-moments solution of q_j = (1 − π) h_j + π d_j
with the evaluation's *average* honest and inflated rates (`DetectionReference`) and its average
ratio — right only for a provider whose attacks look like the evaluation's average, and labelled so.
"""

import math

import numpy as np
import numpy.typing as npt

from auditor.monitoring.bounds import DetectionReference, NullBound
from auditor.monitoring.eprocess import BET_FRACTIONS, FloatArray, log_e_values

CONFIDENCE = 0.95
# A report inflated by less than this ratio is not counted by the token-share lower bound.
MIN_INFLATION_RATIO = 0.05
# Bisection steps: the bound is a rejected value within 2^-30 below the exact supremum.
BISECTION_STEPS = 30


def inflated_reports_lower(
    audits: npt.ArrayLike,
    proof_failures: npt.ArrayLike,
    flags: npt.ArrayLike,
    bound: NullBound,
    *,
    confidence: float = CONFIDENCE,
    fractions: tuple[float, ...] = BET_FRACTIONS,
) -> FloatArray:
    """L_n: the lower confidence sequence for the share of inflated reports π (module docstring), from
    the counts (`flags[..., j]`: audits that failed a proof or scored below threshold j)."""
    threshold = -math.log(1.0 - confidence)
    n = np.asarray(audits, dtype=np.float64)
    streams = np.concatenate(
        [np.asarray(proof_failures, dtype=np.float64)[..., None], np.asarray(flags, dtype=np.float64)],
        axis=-1,
    )
    rates = np.asarray(bound.rates, dtype=np.float64)

    def rejected(pi0: FloatArray) -> npt.NDArray[np.bool_]:
        p = pi0[..., None]
        nulls = np.concatenate([p, rates + p * (1.0 - rates)], axis=-1)
        return np.asarray(log_e_values(n, streams, nulls, fractions) >= threshold)

    low, high = np.zeros(n.shape), np.ones(n.shape)
    any_rejected = rejected(low)
    for _ in range(BISECTION_STEPS):
        mid = (low + high) / 2
        hit = rejected(mid)
        low, high = np.where(hit, mid, low), np.where(hit, high, mid)
    out: FloatArray = np.where(any_rejected, low, 0.0)
    return out


def token_share_lower(inflated_lower: npt.ArrayLike, min_ratio: float = MIN_INFLATION_RATIO) -> FloatArray:
    """s >= L ρ_min / (1 + ρ_min) (module docstring: the floor and the sampling assumption)."""
    out: FloatArray = np.asarray(inflated_lower, dtype=np.float64) * (min_ratio / (1.0 + min_ratio))
    return out


def point_estimate(
    audits: npt.ArrayLike, flags: npt.ArrayLike, reference: DetectionReference
) -> tuple[FloatArray, FloatArray]:
    """(π̂, ŝ) *assuming* the evaluation's average detection and ratio: π̂ is the weighted least-squares
    solution of q_j − h_j = π (d_j − h_j) over the thresholds where d_j > h_j (weights 1 / h_j(1 − h_j),
    the honest variance), clipped to [0, 1]; ŝ = π̂ρ̄ / (1 + π̂ρ̄)."""
    n = np.maximum(np.asarray(audits, dtype=np.float64), 1.0)
    q = np.asarray(flags, dtype=np.float64) / n[..., None]
    h = np.asarray(reference.honest_rates, dtype=np.float64)
    d = np.asarray(reference.inflated_rates, dtype=np.float64)
    contrast = np.where(d > h, d - h, 0.0)
    weight = 1.0 / np.maximum(h * (1.0 - h), 1e-6)
    denominator = float((weight * contrast**2).sum())
    if denominator == 0.0:
        pi: FloatArray = np.zeros(n.shape)
    else:
        pi = np.clip(((q - h) * weight * contrast).sum(axis=-1) / denominator, 0.0, 1.0)
    ratio = reference.inflation_ratio
    share: FloatArray = pi * ratio / (1.0 + pi * ratio)
    return pi, share
