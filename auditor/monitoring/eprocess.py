"""A mixture of betting e-processes on flag counts (the method of mixtures; Robbins 1970, Shafer 2021,
Waudby-Smith & Ramdas 2023).

Null, for a stream of indicators X_i ∈ {0, 1} (audit i scored below a threshold): P(X_i = 1 | the past)
<= u, for every i. A bettor who stakes the fraction f of its wealth on X_i = 1 at the fair odds of u
multiplies its wealth by

    1 + (f / u) (X_i − u)        (f in [0, 1): wealth stays positive)

whose conditional expectation under the null is 1 + (f / u)(P(X_i = 1 | past) − u) <= 1. The product
E_n is a nonnegative supermartingale under the null, and by Ville's inequality P(sup_n E_n >= 1/α) <= α:
the monitor may look after every audit, stop whenever it likes, and still alarm an honest provider with
probability at most α. The factor is exactly the likelihood ratio of Bernoulli(q) to Bernoulli(u) with
q = u + f(1 − u), so a fixed bet is a sequential probability ratio test against one alternative, and
an average over bets (any fixed weights) is a mixture SPRT: still an e-process, with log-wealth within
log(#bets) of the best bet in hindsight. The same holds across thresholds: an average of e-processes
is an e-process.

Because every bet is fixed in advance, E_n depends only on the counts — n audits, k_j flags below each
threshold — not on their order: the whole state of the test is a handful of integers, and anyone can
recompute it. And each factor decreases as u grows (the flag pays (1 − u)/u · f, a miss costs f), so
E_n is non-increasing in the null rate: `auditor.monitoring.estimate` inverts it by bisection.

Assumption (predictability): the bound must hold *given the past*. It does when the auditor draws
which reports to audit at random and unannounced (a CSPRNG, as `auditor.semantic.exposure` draws
blocks), so that each audited report is a fresh draw from the provider's traffic of the moment, whose
honest flag rate is at most u whatever the provider saw of earlier audits.
"""

import math

import numpy as np
import numpy.typing as npt

# Fractions of wealth staked on a flag, doubling: q − u from ~1% (a faint excess over a rate near 1/4)
# to 80% of the way to certainty.
BET_FRACTIONS = (0.0125, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8)

FloatArray = npt.NDArray[np.float64]


def log_e_values(
    audits: npt.ArrayLike,
    flags: npt.ArrayLike,
    nulls: npt.ArrayLike,
    fractions: tuple[float, ...] = BET_FRACTIONS,
) -> FloatArray:
    """log E_n of the equal-weight mixture over (stream j, fraction f) after `audits` audits of which
    `flags[..., j]` flagged in stream j, against null rates `nulls[..., j]` (broadcast: (J,) or like
    `flags`). A null rate of 0 makes one flag infinite evidence (log E = +inf)."""
    n = np.asarray(audits, dtype=np.float64)[..., None, None]
    k = np.asarray(flags, dtype=np.float64)[..., None]
    u = np.asarray(nulls, dtype=np.float64)[..., None]
    f = np.asarray(fractions, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        win = np.log1p(f * (1.0 - u) / u)  # inf where u = 0
        hits = np.where(k > 0, k * win, 0.0)  # no flag: nothing won, even at infinite odds
    terms = hits + (n - k) * np.log1p(-f)
    flat = terms.reshape(*terms.shape[:-2], terms.shape[-2] * terms.shape[-1])
    top = flat.max(axis=-1)
    finite = np.isfinite(top)
    safe = np.where(finite, top, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):  # where the top is infinite, `top` is the answer
        total = np.exp(flat - safe[..., None]).sum(axis=-1)
    out: FloatArray = np.where(finite, safe + np.log(total), top) - math.log(flat.shape[-1])
    return out
