"""Progressive exposure: which blocks and tokens to reveal, a few blocks per round (DESIGN §3, check 8).

The auditor reveals blocks in rounds and stops as soon as the decision is confident — a sequential
test — never beyond the exposure budget (`max_block_fraction` of the blocks, `max_token_fraction` of the
tokens). Inside each challenged block it opens a short *contiguous run* of tokens rather than scattered
ones: the same number of tokens, but adjacent pairs let the tokenization check re-tokenize them and see
a word split into more tokens than the tokenizer would produce (the re-tokenization attack).

Round k's challenge is cumulative (it re-asks the blocks of earlier rounds, which reveals nothing new),
so each `verify_response` sees every opening so far and the semantic checks stay stateless.

Under `coin/2` the auditor recomputes a fingerprint of the repetition profile wherever it holds the
whole n-gram (NGRAM tokens) ending there, so the plan spends the tokens left after one per block on runs
of NGRAM tokens, as many as the budget allows, in the first blocks (`min_run`); under coin/1 the budget is
spread evenly. Either way the token budget is the same.

A clean sample of n blocks bounds the inflated fraction of blocks by 1 - delta^(1/n) at confidence
1 - delta; when the budget allows more blocks than that bound needs, the first round is sized to reach it (so an
honest long trace can pass after one round); otherwise the budget is split into even rounds.
"""

import math
import random
from dataclasses import dataclass

from auditor.protocol.challenge import Challenge, draw_challenge
from auditor.protocol.errors import ChallengeError
from auditor.protocol.repetition import NGRAM


@dataclass(frozen=True)
class ExposurePolicy:
    max_block_fraction: float = 0.25
    max_token_fraction: float = 0.02
    rounds: int = 3
    epsilon: float = 0.2
    delta: float = 0.1

    def __post_init__(self) -> None:
        if not 0 < self.max_block_fraction <= 1 or not 0 < self.max_token_fraction <= 1:
            raise ChallengeError("exposure: budgets must lie in (0, 1]")
        if self.rounds < 1 or not 0 < self.epsilon < 1 or not 0 < self.delta < 1:
            raise ChallengeError("exposure: rounds >= 1 and epsilon, delta in (0, 1)")

    def block_budget(self, num_blocks: int) -> int:
        return max(1, min(num_blocks, math.floor(self.max_block_fraction * num_blocks)))

    def token_budget(self, size: int, blocks: int) -> int:
        return max(blocks, math.floor(self.max_token_fraction * size))

    @property
    def confident_blocks(self) -> int:
        """Clean blocks needed to rule out an inflated block fraction >= epsilon at 1 - delta."""
        return math.ceil(math.log(self.delta) / math.log1p(-self.epsilon))


@dataclass(frozen=True)
class ExposurePlan:
    """The whole reveal schedule for one report, drawn before any content is seen."""

    size: int
    block_size: int
    count_indices: tuple[int, ...]
    blocks: tuple[int, ...]
    runs: tuple[tuple[int, ...], ...]
    round_ends: tuple[int, ...]

    @property
    def rounds(self) -> int:
        return len(self.round_ends)

    def challenge(self, round_index: int) -> Challenge:
        """The cumulative challenge of round `round_index` (0-based)."""
        if not 0 <= round_index < self.rounds:
            raise ChallengeError(f"exposure: round {round_index} outside 0..{self.rounds - 1}")
        end = self.round_ends[round_index]
        tokens = sorted(i for run in self.runs[:end] for i in run)
        return Challenge(
            self.size, self.block_size, self.count_indices, tuple(sorted(self.blocks[:end])), tuple(tokens)
        )

    @property
    def token_positions(self) -> set[int]:
        return {i for run in self.runs for i in run}


def min_run_for(version: str) -> int:
    """The shortest token run worth opening under a protocol version: a whole n-gram under coin/2."""
    return NGRAM if version == "coin/2" else 1


def run_lengths(tokens: int, blocks: int, min_run: int = 1) -> list[int]:
    """How many tokens each of `blocks` blocks opens, `tokens` in all: evenly, or — when an even share is
    under `min_run` — runs of `min_run` in as many first blocks as the tokens left after one share each
    allow (then one more token in the next blocks, as far as they go)."""
    base, extra = divmod(tokens, blocks)
    if base >= min_run:
        return [base + (1 if k < extra else 0) for k in range(blocks)]
    long = min(blocks, extra // (min_run - base))
    rest = min(blocks - long, extra - long * (min_run - base))
    return [min_run] * long + [base + 1] * rest + [base] * (blocks - long - rest)


def plan_exposure(
    size: int, block_size: int, policy: ExposurePolicy, rng: random.Random, min_run: int = 1
) -> ExposurePlan:
    """Draw the count sample (DESIGN §3), an order of blocks up to the budget, and a token run per block
    (`run_lengths`; `min_run` is NGRAM under coin/2)."""
    count = draw_challenge(size, block_size, block_count=0, rng=rng).count_indices
    num_blocks = -(-size // block_size)
    budget = policy.block_budget(num_blocks)
    blocks = rng.sample(range(num_blocks), budget)
    lengths = run_lengths(policy.token_budget(size, budget), budget, min_run)
    runs: list[tuple[int, ...]] = []
    for block, wanted in zip(blocks, lengths, strict=True):
        start, stop = block * block_size, min((block + 1) * block_size, size)
        length = max(1, min(stop - start, wanted))
        first = rng.randint(start, stop - length)
        runs.append(tuple(range(first, first + length)))
    even = math.ceil(budget / policy.rounds)
    first_round = policy.confident_blocks if budget > policy.confident_blocks else even
    rest = budget - first_round
    later = max(1, math.ceil(rest / max(1, policy.rounds - 1))) if rest else 0
    ends = [first_round]
    while ends[-1] < budget:
        ends.append(min(budget, ends[-1] + later))
    return ExposurePlan(size, block_size, count, tuple(blocks), tuple(runs), tuple(ends))
