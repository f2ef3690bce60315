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

Vectorised: one stable argsort and a few array passes, no Python loop over positions or segments.
"""

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from auditor.protocol.repetition import NGRAM, PROFILE_BYTES

COPY_GAP = NGRAM
MIN_COPY_TOKENS = 10
PERIODIC = 1.25

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
    the top 1% of 5,111 honest traces puts fewer than one honest trace in 10,000, rounded up (the fit is
    `auditor.research.copy_rates.tail_threshold`; bench/copy_rates.py prints it, the largest honest
    masses, and the fit held out by domain), with at least `min_tokens` tokens in it, so that one
    restated sentence never fails a short trace."""

    copied: float = 0.24
    repeated: float = 0.60
    min_tokens: int = 32


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
        return max(self.copied, self.repeated) >= rule.min_tokens and (
            self.copied_fraction > rule.copied or self.repeated_fraction > rule.repeated
        )


def copy_figures(profile: bytes) -> CopyFigures:
    """Steps 1-4 of the module docstring on one profile."""
    found = find_copies(profile_values(profile))
    span = found.span
    long = span >= MIN_COPY_TOKENS
    elsewhere = long & (span <= PERIODIC * found.offset)
    return CopyFigures(
        size=found.size,
        copied=int(found.copied[long].sum()),
        repeated=int((found.matched[elsewhere] + NGRAM - 1).sum()),
        copies=int(long.sum()),
        longest=int(span.max(initial=0)),
    )
