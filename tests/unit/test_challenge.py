"""The sampling rule, and over-claims caught at the rate it predicts (DESIGN §3, "Challenge")."""

import math
import random
from collections import Counter
from typing import Any

import blake3
import pytest

from auditor.protocol.challenge import (
    Challenge,
    KeyedRandom,
    detection_probability,
    draw_challenge,
    required_sample_size,
)
from auditor.protocol.errors import ChallengeError, ProofError, ProtocolError
from auditor.protocol.merkle import BLAKE3, MerkleTree, verify_inclusion


def test_sample_size_rule() -> None:
    assert required_sample_size(0.05, 0.01) == 90  # DESIGN §3's worked example
    for eps, delta in [(0.01, 0.05), (0.1, 0.001), (0.5, 0.5)]:
        k = required_sample_size(eps, delta)
        assert (1 - eps) ** k <= delta < (1 - eps) ** (k - 1)
    with pytest.raises(ChallengeError):
        required_sample_size(0, 0.01)
    with pytest.raises(ChallengeError):
        detection_probability(1.5, 3)


def test_draw_covers_endpoints_and_respects_budget() -> None:
    rng = random.Random(3)
    for size in [1, 2, 3, 50, 1000, 20_000]:
        c = draw_challenge(size, 64, rng=rng)
        assert 0 in c.count_indices and size - 1 in c.count_indices
        assert len(c.count_indices) == min(size, 90)
        assert all(0 <= i < size for i in c.indices)
        assert all(i // 64 in c.block_indices for i in c.block_token_indices)
        assert len(c.block_token_indices) <= max(len(c.block_indices), math.floor(0.02 * size))
        assert Challenge.from_json(c.to_json()) == c
    again = draw_challenge(1000, 64, exclude_blocks=range(14), rng=rng)
    assert again.block_indices == (14, 15)


@pytest.mark.parametrize(
    "body",
    [
        {"size": 10, "block_size": 4, "count_indices": [0, 10]},
        {"size": 10, "block_size": 4, "count_indices": [1, 1]},
        {"size": 10, "block_size": 4, "count_indices": "0,1"},
        {"size": 0, "block_size": 4, "count_indices": []},
        {"size": 10, "block_size": 4, "count_indices": [0], "block_indices": [0], "block_token_indices": [5]},
    ],
)
def test_bad_challenge_json(body: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        Challenge.from_json(body)


def _openable(built: int, claimed: int) -> set[int]:
    """Indices a provider with `built` leaves can open as (index, claimed) against its own root,
    using its real audit paths (the best it can do without breaking the hash)."""
    leaves = [BLAKE3.hash_leaf(i.to_bytes(8, "little")) for i in range(built)]
    tree = MerkleTree(leaves)
    ok = set()
    for i in range(built):
        try:
            verify_inclusion(leaves[i], i, claimed, tree.inclusion_proof(i), tree.root)
            ok.add(i)
        except ProofError:
            pass
    return ok


def test_over_claim_leaves_border_indices_unopenable() -> None:
    # 6 leaves claimed as 7: the left-aligned paths still fit, the right border does not
    assert _openable(6, 7) == {0, 1, 2, 3}
    # 3 leaves claimed as 5: nothing fits (the index inside the leaf also rules out 2-as-4)
    assert _openable(3, 5) == set()


@pytest.mark.parametrize(("built", "claimed"), [(90, 100), (480, 500), (1000, 1100)])
def test_over_claims_caught_at_the_predicted_rate(built: int, claimed: int) -> None:
    """Simulate many uniform draws of k interior indices (the endpoints aside) and compare the catch
    rate with the exact hypergeometric rate and with 1 - (1 - f)^k."""
    unopenable = set(range(claimed)) - _openable(built, claimed)
    f = len(unopenable) / claimed
    k = 20
    rng = random.Random(built)
    trials = 3000
    caught = sum(bool(unopenable & set(rng.sample(range(claimed), k))) for _ in range(trials))
    rate = caught / trials
    exact = 1 - math.comb(claimed - len(unopenable), k) / math.comb(claimed, k)
    se = math.sqrt(exact * (1 - exact) / trials)
    assert abs(rate - exact) < 4 * se + 1e-9
    assert abs(exact - detection_probability(f, k)) < 0.03  # sampling without replacement helps a little
    # with the endpoints always drawn, an over-claim is always caught: index claimed - 1 is unopenable
    assert claimed - 1 in unopenable
    assert all(claimed - 1 in draw_challenge(claimed, 64, rng=rng).count_indices for _ in range(50))


def test_a_keyed_random_draws_blake3s_output_under_its_seed() -> None:
    """The service's plans are drawn again from a stored seed every round: the same draws from the same
    seed, read from BLAKE3's keyed output (a CSPRNG), big-endian, the top bits first."""
    seed = bytes(range(32))
    stream = blake3.blake3(b"coin/plan", key=seed).digest(length=10)
    rng = KeyedRandom(seed)
    assert rng.getrandbits(64) == int.from_bytes(stream[:8], "big")
    assert rng.getrandbits(12) == int.from_bytes(stream[8:10], "big") >> 4
    assert KeyedRandom(seed).sample(range(10**6), 20) == KeyedRandom(seed).sample(range(10**6), 20)
    assert KeyedRandom(seed).sample(range(10**6), 20) != KeyedRandom(bytes(32)).sample(range(10**6), 20)
    draws = KeyedRandom(seed)
    counts = Counter(draws.randrange(10) for _ in range(20_000))
    assert set(counts) == set(range(10)) and all(1_800 < n < 2_200 for n in counts.values())
    with pytest.raises(ChallengeError, match="32 bytes"):
        KeyedRandom(b"short")
    with pytest.raises(NotImplementedError):
        rng.getstate()
