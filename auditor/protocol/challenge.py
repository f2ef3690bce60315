"""Challenges: which leaves the provider must open (DESIGN §3, "Challenge").

*Count* sampling binds the reported size: a provider that built m leaves but claims m' > m cannot open
indices >= m (nor, without the index inside the leaf, would it be caught on the right border), so
`count_indices` are uniform without replacement over [0, m'), always with 0 and m' - 1. To detect a
forged fraction >= epsilon with probability >= 1 - delta we need k >= ln(delta) / ln(1 - epsilon)
(epsilon = 0.05, delta = 0.01 -> k = 90). Count openings reveal only fingerprint digests.

*Content* sampling feeds the semantic checks: a few `block_indices`, and inside each a few
`block_token_indices` opened with their fingerprints and tokens. They are capped by the exposure budget
(`max_token_fraction` of the trace's tokens), since every content opening reveals a token.

Draws use a CSPRNG and happen after the commitment is stored: `secrets.SystemRandom`, or `KeyedRandom`
where a plan must be drawn again from a stored secret seed (the service's exposure plans).
"""

import math
import random
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import blake3

from auditor.protocol.errors import ChallengeError, ProtocolError

DEFAULT_EPSILON = 0.05
DEFAULT_DELTA = 0.01
DEFAULT_MAX_COUNT_OPENINGS = 256
DEFAULT_BLOCK_COUNT = 2
DEFAULT_TOKENS_PER_BLOCK = 4
DEFAULT_MAX_TOKEN_FRACTION = 0.02


class KeyedRandom(random.Random):
    """`random.Random`'s draws (`sample`, `randint`, `shuffle`) from BLAKE3's extendable output keyed with
    a secret 32-byte seed: the same draws from the same seed, and none predictable without it. Python's
    own seeded generator (Mersenne Twister) is not a CSPRNG: its outputs reveal its state, so a provider
    shown the first rounds of a plan could work out the rest."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ChallengeError("a KeyedRandom seed is 32 bytes")
        self._stream = blake3.blake3(b"coin/plan", key=seed)
        self._offset = 0
        super().__init__()

    def seed(self, *args: Any, **kwargs: Any) -> None:
        """Ignored (`random.Random.__init__` calls it): the key is the seed."""

    def getrandbits(self, k: int) -> int:
        if k < 0:
            raise ValueError("number of bits must be non-negative")
        length = (k + 7) // 8
        data = self._stream.digest(length=length, seek=self._offset)
        self._offset += length
        return int.from_bytes(data, "big") >> (8 * length - k)

    def random(self) -> float:
        return self.getrandbits(53) * 2.0**-53

    def getstate(self) -> Any:
        raise NotImplementedError("a KeyedRandom is drawn again from its seed, not from a saved state")

    def setstate(self, state: Any) -> None:
        raise NotImplementedError("a KeyedRandom is drawn again from its seed, not from a saved state")


def required_sample_size(epsilon: float = DEFAULT_EPSILON, delta: float = DEFAULT_DELTA) -> int:
    """Smallest k with (1 - epsilon)^k <= delta, i.e. k >= ln(delta) / ln(1 - epsilon)."""
    if not 0 < epsilon < 1 or not 0 < delta < 1:
        raise ChallengeError("epsilon and delta must lie strictly between 0 and 1")
    return math.ceil(math.log(delta) / math.log1p(-epsilon))


def detection_probability(fraction: float, k: int) -> float:
    """Chance that k uniform draws hit at least one of a `fraction` of forged leaves: 1 - (1 - f)^k."""
    if not 0 <= fraction <= 1 or k < 0:
        raise ChallengeError("fraction must lie in [0, 1] and k must be >= 0")
    return 1.0 - (1.0 - fraction) ** k


def _ints(value: object, name: str, upper: int) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ProtocolError(f"challenge.{name}: expected a list of integers")
    if any(not 0 <= v < upper for v in value) or len(set(value)) != len(value):
        raise ProtocolError(f"challenge.{name}: indices must be distinct and in 0..{upper - 1}")
    return tuple(sorted(value))


@dataclass(frozen=True)
class Challenge:
    """Leaf indices to open for one report of `size` leaves in blocks of `block_size`."""

    size: int
    block_size: int
    count_indices: tuple[int, ...]
    block_indices: tuple[int, ...] = ()
    block_token_indices: tuple[int, ...] = ()

    @property
    def num_blocks(self) -> int:
        return -(-self.size // self.block_size)

    @property
    def content_indices(self) -> tuple[int, ...]:
        return self.block_token_indices

    @property
    def indices(self) -> tuple[int, ...]:
        """Every index the response must open, sorted."""
        return tuple(sorted(set(self.count_indices) | set(self.block_token_indices)))

    @property
    def block_exposure(self) -> float:
        return len(self.block_indices) / self.num_blocks

    @property
    def token_visibility(self) -> float:
        return len(self.block_token_indices) / self.size

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "block_size": self.block_size,
            "count_indices": list(self.count_indices),
            "block_indices": list(self.block_indices),
            "block_token_indices": list(self.block_token_indices),
        }

    @classmethod
    def from_json(cls, obj: object) -> "Challenge":
        if not isinstance(obj, Mapping):
            raise ProtocolError("challenge: expected a JSON object")
        size, block_size = obj.get("size"), obj.get("block_size")
        if not isinstance(size, int) or not isinstance(block_size, int) or size < 1 or block_size < 1:
            raise ProtocolError("challenge: size and block_size must be positive integers")
        challenge = cls(
            size=size,
            block_size=block_size,
            count_indices=_ints(obj.get("count_indices"), "count_indices", size),
            block_indices=_ints(obj.get("block_indices", []), "block_indices", -(-size // block_size)),
            block_token_indices=_ints(obj.get("block_token_indices", []), "block_token_indices", size),
        )
        if any(i // block_size not in challenge.block_indices for i in challenge.block_token_indices):
            raise ProtocolError("challenge.block_token_indices: an index lies outside the challenged blocks")
        return challenge


def draw_challenge(
    size: int,
    block_size: int,
    *,
    epsilon: float = DEFAULT_EPSILON,
    delta: float = DEFAULT_DELTA,
    max_count_openings: int = DEFAULT_MAX_COUNT_OPENINGS,
    block_count: int = DEFAULT_BLOCK_COUNT,
    tokens_per_block: int = DEFAULT_TOKENS_PER_BLOCK,
    max_token_fraction: float = DEFAULT_MAX_TOKEN_FRACTION,
    exclude_blocks: Iterable[int] = (),
    rng: random.Random | None = None,
) -> Challenge:
    """Draw a challenge for a report that claims `size` leaves.

    `exclude_blocks` lists blocks already revealed in an earlier round (progressive exposure)."""
    if size < 1:
        raise ChallengeError("size: a challenge needs at least one committed leaf")
    if block_size < 1 or block_count < 0 or tokens_per_block < 1 or max_count_openings < 2:
        raise ChallengeError("block_size, block_count, tokens_per_block or max_count_openings out of range")
    draw = rng or secrets.SystemRandom()
    k = min(required_sample_size(epsilon, delta), max_count_openings, size)
    interior = range(1, size - 1)
    count = {0, size - 1} | set(draw.sample(interior, max(0, min(k - 2, len(interior)))))

    num_blocks = -(-size // block_size)
    excluded = set(exclude_blocks)
    candidates = [b for b in range(num_blocks) if b not in excluded]
    blocks = sorted(draw.sample(candidates, min(block_count, len(candidates))))
    token_budget = max(len(blocks), math.floor(max_token_fraction * size))
    per_block = max(1, min(tokens_per_block, token_budget // max(1, len(blocks))))
    content: set[int] = set()
    for block in blocks:
        leaves = range(block * block_size, min((block + 1) * block_size, size))
        content.update(draw.sample(leaves, min(per_block, len(leaves))))
    return Challenge(size, block_size, tuple(sorted(count)), tuple(blocks), tuple(sorted(content)))
