"""Copied spans in a repetition profile (protocol `coin/2`; the rule, its measurement over every honest
trace and its limits are in docs/protocol.md, "Protocol coin/2").

A profile holds one fingerprint per position, equal exactly where the n-grams ending there are equal
(`auditor.protocol.repetition`). Text pasted again shows as a run of positions whose fingerprints repeat
those a constant `offset` earlier; the auditor finds those runs without seeing a token:

1. each position's nearest earlier position with the same fingerprint gives it an offset (0: none);
2. maximal stretches of one offset are *segments*; segments of one offset at most `COPY_GAP` positions
   apart join into one *copy*: a word edited in a copy breaks its run into pieces at the same offset (a
   one-token edit costs NGRAM positions), and so does an n-gram that also occurs between the source and
   the copy (its nearest occurrence is then not the source);
3. a copy *spans* its first to its last position and the NGRAM - 1 tokens before; copies spanning fewer
   than `MIN_COPY_TOKENS` tokens are restated numbers, formulas and phrases, and are left out; a copy's
   tokens are its matched positions and the NGRAM - 1 tokens the first of them reaches back;
4. two masses, as fractions of the trace:
   - *copied*: per copy, the tokens of its n-grams occurring for the second time — text pasted once
     counts once, and a loop repeating a period many times counts one period;
   - *repeated*: every copy that does not overlap its own source (spans at most `PERIODIC` times its
     offset), each occurrence counted — the same text pasted again and again at different places.
   Honest models loop (a copy overlapping its source: one period after another), restate a result,
   rewrite a draft; the thresholds (`CopyRule`) sit above the largest masses of 5,111 honest traces.
5. a domain whose honest traces copy more than those (a model that rewrites whole answers) gets its own
   rule from the auditor's honest reference traces of it (`rule_for_references`, `coin calibrate`): the
   shipped thresholds, raised where the references need more room, never lowered.

Vectorised: one stable argsort and a few array passes, no Python loop over positions or segments.
"""

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from auditor.protocol.repetition import NGRAM, PROFILE_BYTES, Repetition

COPY_GAP = NGRAM
MIN_COPY_TOKENS = 10
PERIODIC = 1.25
TAIL_SHARE = 0.01  # the top share of honest masses the exponential tail is fitted to
HONEST_RATE = 1e-4  # the honest rate the fitted tail must fall to at a threshold
# The fewest masses a tail is fitted to (the shipped fit's top 1% holds 51): a smaller sample is fitted
# on a larger top share, as the semantic checks' null is (`auditor.semantic.checks.TAIL_MIN`).
TAIL_MIN = 50

IntArray = npt.NDArray[np.int64]


def profile_values(profile: bytes) -> npt.NDArray[np.uint64]:
    """The profile's fingerprints as integers (equal exactly where the fingerprints are equal)."""
    raw = np.frombuffer(profile, dtype=np.uint8).reshape(-1, PROFILE_BYTES)
    padded = np.zeros((len(raw), 8), dtype=np.uint8)
    padded[:, :PROFILE_BYTES] = raw
    values: npt.NDArray[np.uint64] = padded.view("<u8").ravel()
    return values


@dataclass(frozen=True)
class Copies:
    """The copies of one profile: index-aligned arrays, in order of offset, then start."""

    size: int
    start: IntArray  # first matched position
    end: IntArray  # one past the last matched position
    offset: IntArray  # positions [start, end) repeat positions [start - offset, end - offset)
    matched: IntArray  # positions of its segments: each fingerprint equals the one `offset` earlier
    second: IntArray  # matched positions where their n-gram occurs for the second time (see `repeats`)

    @property
    def span(self) -> IntArray:
        """Step 3: the tokens of each copy, its first to last matched position and the NGRAM - 1 before."""
        return self.end - self.start + NGRAM - 1

    @property
    def copied(self) -> IntArray:
        """Step 4, per copy: its `second` positions and the NGRAM - 1 tokens the first of them reaches back."""
        return self.second + (NGRAM - 1) * (self.second > 0)


def find_copies(values: npt.NDArray[np.uint64], gap: int = COPY_GAP, repeats: int = 1) -> Copies:
    """Steps 1-2 of the module docstring. `second` counts an n-gram's first `repeats` repeats: 1 (its
    second occurrence) for the rule; more only to measure a variant (bench/copy_variants.py)."""
    m = len(values)
    positions = np.arange(m, dtype=np.int64)
    order = np.argsort(values, kind="stable")  # stable: equal fingerprints stay in position order
    ranked = values[order]
    repeat = np.r_[False, ranked[1:] == ranked[:-1]]  # in sorted order: not the first occurrence
    group_start = np.maximum.accumulate(np.where(repeat, 0, positions))
    earlier = np.empty(m, dtype=np.int64)
    earlier[order] = positions - group_start
    offset = np.zeros(m, dtype=np.int64)
    offset[order[repeat]] = order[repeat] - order[np.flatnonzero(repeat) - 1]

    cut = np.flatnonzero(np.diff(offset)) + 1
    starts, ends = np.r_[0, cut], np.r_[cut, m]
    keep = offset[starts] > 0
    starts, ends = starts[keep], ends[keep]
    offsets = offset[starts]
    by_offset = np.lexsort((starts, offsets))
    starts, ends, offsets = starts[by_offset], ends[by_offset], offsets[by_offset]
    if not len(starts):  # nothing repeats
        empty = np.zeros(0, dtype=np.int64)
        return Copies(m, empty, empty, empty, empty, empty)
    joins = (offsets[1:] == offsets[:-1]) & (starts[1:] - ends[:-1] <= gap)
    first = np.flatnonzero(np.r_[True, ~joins])  # the first segment of each copy
    second_prefix = np.r_[0, np.cumsum((earlier >= 1) & (earlier <= repeats))]
    return Copies(
        size=m,
        start=starts[first],
        end=np.maximum.reduceat(ends, first),
        offset=offsets[first],
        matched=np.add.reduceat(ends - starts, first),
        second=np.add.reduceat(second_prefix[ends] - second_prefix[starts], first),
    )


@dataclass(frozen=True)
class CopyRule:
    """When a profile proves copying (docs/protocol.md): either mass where the exponential tail fitted to
    the top 1% of 5,111 honest traces falls to HONEST_RATE, rounded up (`tail_threshold`;
    bench/copy_rates.py prints it, the largest honest masses, and the fit held out by domain — where the
    fit's rate is not reached, so a new domain needs its own rule from `coin calibrate`), with at least
    `min_tokens` tokens in it, so that one restated sentence never fails a short trace. `label` names the
    rule in a check's detail: `shipped`, or the calibration that raised it."""

    copied: float = 0.24
    repeated: float = 0.60
    min_tokens: int = 32
    label: str = "shipped"


COPY_RULE = CopyRule()


@dataclass(frozen=True)
class CopyFigures:
    """Step 4 of the module docstring on one profile, and what the rule decides."""

    size: int
    copied: int  # tokens of n-grams occurring for the second time, in copies spanning MIN_COPY_TOKENS or more
    repeated: int  # tokens of copies (spanning MIN_COPY_TOKENS or more) that do not overlap their source
    copies: int  # copies spanning MIN_COPY_TOKENS tokens or more
    longest: int  # the longest span of a copy, in tokens (0 if none)

    @property
    def copied_fraction(self) -> float:
        return self.copied / self.size

    @property
    def repeated_fraction(self) -> float:
        return self.repeated / self.size

    def proves_copying(self, rule: CopyRule) -> bool:
        """Either mass above its threshold, that mass holding at least `rule.min_tokens` tokens."""
        return (self.copied >= rule.min_tokens and self.copied_fraction > rule.copied) or (
            self.repeated >= rule.min_tokens and self.repeated_fraction > rule.repeated
        )


def copy_figures(profile: bytes) -> CopyFigures:
    """Steps 1-4 of the module docstring on one profile."""
    return figures_of_copies(find_copies(profile_values(profile)))


def figures_of_copies(found: Copies, min_span: int = MIN_COPY_TOKENS) -> CopyFigures:
    """Steps 3-4 on a profile's copies; a `min_span` other than MIN_COPY_TOKENS only to measure that
    constant (`auditor.research.copy_rates.constants_sensitivity`)."""
    span = found.span
    long = span >= min_span
    elsewhere = long & (span <= PERIODIC * found.offset)
    return CopyFigures(
        size=found.size,
        copied=int(found.copied[long].sum()),
        repeated=int((found.matched[elsewhere] + NGRAM - 1).sum()),
        copies=int(long.sum()),
        longest=int(span.max(initial=0)),
    )


def copy_figures_of(tokens: Sequence[bytes], secret: bytes) -> CopyFigures:
    """Steps 1-4 on the profile the provider SDK commits for `tokens` (the figures do not depend on the
    secret: only equal n-grams meet)."""
    return copy_figures(Repetition(tokens, secret).profile)


def tail_threshold(values: Iterable[float], rate: float = HONEST_RATE, top: float = TAIL_SHARE) -> float:
    """Where an exponential law fitted to the excesses of the top `top` share of `values` over their lower
    edge u (the 1 - top quantile) falls to `rate`: u + mean excess * ln(top / rate), the scale being the
    maximum-likelihood one. Excesses over a high edge follow a generalised Pareto law
    (Pickands-Balkema-de Haan); the exponential is its shape-0 case, and for a mass bounded by 1 (shape
    below 0) it overstates the tail, so the threshold errs high."""
    array = np.sort(np.asarray(list(values), dtype=np.float64))
    if len(array) * top < 2:
        raise ValueError(f"tail_threshold: {len(array)} values hold fewer than 2 in the top {top:g}")
    edge = float(np.quantile(array, 1 - top))
    excess = array[array > edge] - edge
    scale = float(excess.mean()) if len(excess) else 0.0
    return edge + scale * float(np.log(top / rate))


def rule_for_references(references: Sequence[CopyFigures], label: str) -> CopyRule:
    """The copy rule of a domain, from the copy figures of honest reference traces of it that the auditor
    produced itself. With `TAIL_MIN` references or more, each threshold is the shipped one, raised to
    the references' own tail fit (at the shipped rate, on their top 1% or their top `TAIL_MIN`, whichever
    holds more) or to their largest mass, whichever is higher, rounded up to a whole percent — so that no
    reference fails the rule it calibrates. Fewer references cannot bound a tail: they keep the shipped
    rule, and ValueError if one of them fails it (the domain copies more than it allows, and needs
    `TAIL_MIN` references to say how much).

    Never lowered: the shipped thresholds rest on 5,111 honest traces of four domains and held when each
    domain was left out; a reference set is small, and a proof check must not fire on honest text. A
    higher threshold only ever turns a `fail` into a `pass`, which is why a domain's rule applies to its
    providers' next audit (unlike its monitor's null, which waits for the next period)."""
    if len(references) < TAIL_MIN:
        failing = sum(r.proves_copying(COPY_RULE) for r in references)
        if failing:
            raise ValueError(
                f"{failing} of {len(references)} reference traces fail the shipped copy rule; a domain's own "
                f"rule is fitted to at least {TAIL_MIN} references"
            )
        return replace(COPY_RULE, label=label)
    top = max(TAIL_SHARE, TAIL_MIN / len(references))

    def raised(masses: list[float], floor: float) -> float:
        needed = max(tail_threshold(masses, top=top), *masses)
        # round() first: 0.24 * 100 is 24.000000000000004, which must not round up to 25.
        return max(floor, math.ceil(round(needed * 100, 9)) / 100)

    return replace(
        COPY_RULE,
        copied=raised([r.copied_fraction for r in references], COPY_RULE.copied),
        repeated=raised([r.repeated_fraction for r in references], COPY_RULE.repeated),
        label=label,
    )
