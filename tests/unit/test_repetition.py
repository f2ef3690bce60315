"""Protocol coin/2: the repetition profile, its binding, the copied_spans check — and coin/1 unchanged.

A deterministic stand-in for Embd (a unit vector per text, from its BLAKE3) keeps these fast and their
known-answer roots the same on every machine; the real model is exercised by test_commitment.py and
test_cli.py."""

import dataclasses
import json
import random
from collections.abc import Sequence
from typing import Any

import blake3
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.protocol.challenge import Challenge, detection_probability
from auditor.protocol.commitment import Commitment, Openings, PublicCommitment, Response, commit
from auditor.protocol.copies import COPY_RULE, copy_figures, find_copies, profile_values
from auditor.protocol.errors import EncodingError, ProtocolError
from auditor.protocol.fingerprint import EMBED_DIM, FloatArray, decode_token
from auditor.protocol.repetition import (
    NGRAM,
    PROFILE_BYTES,
    RepetitionCommitment,
    RepetitionOpening,
    bucket_keys,
    bucket_of,
    checkable_positions,
    fingerprint,
    ngram_hashes,
    profile_digest,
    revealed_ngram_hashes,
)
from auditor.protocol.verify import Verification, verify_response
from auditor.semantic.exposure import ExposurePolicy, min_run_for, plan_exposure, run_lengths

SECRET = bytes(range(32))


class HashEmbedder:
    """A unit vector per text from its BLAKE3: deterministic, and equal texts embed equally."""

    embd_id = "stub@0000000000000000"

    def embed_texts(self, texts: Sequence[str]) -> FloatArray:
        rows = [
            np.frombuffer(blake3.blake3(t.encode()).digest(length=4 * EMBED_DIM), dtype=np.uint32)
            for t in texts
        ]
        vectors = (np.stack(rows).astype(np.float64) / 2**32 - 0.5) if rows else np.zeros((0, EMBED_DIM))
        norms = np.linalg.norm(vectors, axis=1, keepdims=True) if rows else 1.0
        return np.asarray(vectors / norms, dtype=np.float32)

    def embed_tokens(self, tokens: Sequence[bytes]) -> FloatArray:
        return self.embed_texts([decode_token(t) for t in tokens])


EMBEDDER = HashEmbedder()


def words(n: int, seed: int = 0) -> list[bytes]:
    """n tokens of distinct-looking text (no accidental repeats of length NGRAM)."""
    rng = random.Random(seed)
    return [f" w{rng.randrange(10**9)}".encode() for _ in range(n)]


def committed(tokens: list[bytes], version: str = "coin/2") -> tuple[PublicCommitment, Openings]:
    return commit(tokens, "the answer", SECRET, block_size=16, embedder=EMBEDDER, version=version)


def verify(public: PublicCommitment, challenge: Challenge, response: Response) -> Verification:
    wire = json.loads(json.dumps(response.to_json()))
    return verify_response(
        PublicCommitment.from_json(public.to_json()), challenge, Response.from_json(wire), embedder=EMBEDDER
    )


def content_challenge(size: int, runs: Sequence[range]) -> Challenge:
    content = sorted({i for run in runs for i in run})
    return Challenge(size, 16, (0, size - 1), tuple(sorted({i // 16 for i in content})), tuple(content))


# --- known answers: the bytes of both versions, pinned ----------------------------------------------


def test_known_answers_pin_coin1_and_coin2_bytes() -> None:
    tokens = [b" The", b" answer", b" is", b" 4", b".", b" The", b" answer", b" is", b" 4", b"."]
    coin1, _ = committed(tokens, "coin/1")
    coin2, openings = committed(tokens)
    assert coin1.commitment.root.hex() == KAT["coin1_root"]
    assert coin2.commitment.root.hex() == KAT["coin2_root"]
    assert coin2.commitment.repetition is not None
    assert coin2.commitment.repetition.digest.hex() == KAT["profile_digest"]
    assert coin2.commitment.repetition.key_root.hex() == KAT["key_root"]
    assert openings.repetition is not None
    assert openings.repetition.profile.hex() == KAT["profile"]
    # the second "The answer is 4." repeats the first from its fourth token on: n-grams 8..9 = 3..4
    profile = openings.repetition.profile
    at = [profile[i * PROFILE_BYTES : (i + 1) * PROFILE_BYTES] for i in range(len(tokens))]
    assert at[8] == at[3] and at[9] == at[4] and at[7] != at[2]
    # the salts of one position differ between versions: no leaf of one is a leaf of the other
    assert coin1.commitment.root != coin2.commitment.root


# coin1_root is also what the code before coin/2 computes for these tokens, secret and embedder.
KAT = {
    "coin1_root": "bb45cf6e1ed33371bec81b84cce71d5aa11d6230b3b8f9c8e89d004357b9826d",
    "coin2_root": "bdc6aea0f6bd5a937636dbb213871b472cd4470d03c0868deb853bd55e514f16",
    "profile_digest": "7dd188714356a95085c18b5e69a19794f510643f89bd3f282d8481f029503f92",
    "key_root": "2517398f3e6005b28fa1ff12bc59c31397d405c45ee7d515f5930de83af8876f",
    "profile": "f24089626679e997c8b77e35cf5f3d7b4e9c7d21cf5019212ee39632e69bc69fcf5f3d7b4e9c7d21",
}


def test_primitives_follow_the_spec() -> None:
    """h(g), b(g), k_b and r as auditor/protocol/repetition.py writes them, computed independently."""
    tokens = [b"a", b"bb", b"ccc", b"dddd", b"e"]
    framed = [len(t).to_bytes(4, "little") + t for t in tokens]
    hashes = ngram_hashes(tokens)
    assert hashes[0] == blake3.blake3(b"coin/2/ngram" + framed[0]).digest()
    assert hashes[4] == blake3.blake3(b"coin/2/ngram" + b"".join(framed[1:5])).digest()
    assert bucket_of(hashes[4], 5) == int.from_bytes(hashes[4][:8], "little") % 5
    keys = bucket_keys(SECRET, 5)
    stream = blake3.blake3(b"coin/2/repetition-keys", key=SECRET).digest(length=32 * 5)
    assert keys[3] == stream[96:128]
    assert fingerprint(keys[3], hashes[4]) == blake3.blake3(hashes[4], key=keys[3]).digest()[:4]
    assert profile_digest(b"xy") == blake3.blake3(b"coin/2/profile" + b"xy").digest()


@settings(max_examples=300)
@given(st.lists(st.binary(min_size=1, max_size=12), max_size=40))
def test_the_providers_bulk_ngram_hashes_are_the_auditors_per_position_ones(tokens: list[bytes]) -> None:
    """The provider hashes every n-gram from one buffer; the auditor recomputes revealed ones one by one
    (`revealed_ngram_hashes`): they must agree at every position, short traces included."""
    assert ngram_hashes(tokens) == [
        revealed_ngram_hashes(dict(enumerate(tokens[: i + 1])))[i] for i in range(len(tokens))
    ]


def test_checkable_positions_need_the_whole_ngram() -> None:
    assert checkable_positions([5, 6, 7, 8]) == [8]
    assert checkable_positions([0, 1, 2]) == [0, 1, 2]  # the first n-grams are shorter
    assert checkable_positions([3, 5, 6, 7, 9]) == []
    assert NGRAM == 4


# --- copies: what the profile shows ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "copies"),
    [
        # (start, end, offset, matched, second) per copy, in order of offset
        ([1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 9, 5, 6], [(6, 10, 6, 4, 4), (11, 13, 7, 2, 2)]),
        # one fresh value inside a pasted run: one copy across the gap
        ([*range(1, 11), 1, 2, 3, 99, 5, 6, 7], [(10, 17, 10, 6, 6)]),
        # a gap wider than COPY_GAP: two copies at the same offset
        ([*range(1, 21), 1, 2, 3, 91, 92, 93, 94, 95, 9, 10], [(20, 23, 20, 3, 3), (28, 30, 20, 2, 2)]),
        # a loop: one segment, the second occurrences are its first period
        ([7, 8, 9] * 4, [(3, 12, 3, 9, 3)]),
        ([1, 2, 3], []),
    ],
)
def test_find_copies_vectors(values: list[int], copies: list[tuple[int, int, int, int, int]]) -> None:
    found = find_copies(np.array(values, dtype=np.uint64))
    got = list(zip(found.start, found.end, found.offset, found.matched, found.second, strict=True))
    assert [tuple(int(x) for x in row) for row in got] == copies


def test_find_copies_counts_as_many_repeats_as_asked() -> None:
    loop = np.array([7, 8, 9] * 4, dtype=np.uint64)  # each value occurs four times: three repeats
    assert [int(find_copies(loop, repeats=r).second[0]) for r in (1, 2, 3, 4)] == [3, 6, 9, 9]


def test_a_pasted_span_is_one_copy_at_a_constant_offset() -> None:
    base = words(200)
    tokens = base[:120] + base[20:60] + base[120:]  # 40 tokens pasted 60 positions after their source
    found = find_copies(profile_values(committed(tokens)[1].repetition.profile))  # type: ignore[union-attr]
    long = found.end - found.start >= 10
    assert list(found.offset[long]) == [100]
    assert list(found.start[long]) == [120 + NGRAM - 1] and list(found.end[long]) == [160]
    figures = copy_figures(committed(tokens)[1].repetition.profile)  # type: ignore[union-attr]
    assert figures.copied == figures.repeated == 40 and figures.copies == 1


def test_an_edited_word_does_not_break_a_copy() -> None:
    base = words(300)
    copy = list(base[10:90])
    copy[40] = b" edited"
    tokens = base[:150] + copy + base[150:]
    found = find_copies(profile_values(committed(tokens)[1].repetition.profile))  # type: ignore[union-attr]
    assert (found.end - found.start).max() > 70  # one copy across the edit (a gap of NGRAM positions)


def test_a_loop_counts_one_period_of_copied_mass() -> None:
    loop = words(30, seed=1) * 6  # a period of 30 tokens repeated six times
    tokens = words(400, seed=2) + loop
    figures = copy_figures(committed(tokens)[1].repetition.profile)  # type: ignore[union-attr]
    assert 30 <= figures.copied <= 33  # one period, not five
    assert figures.repeated == 0  # the copy overlaps its own source: a loop, not text pasted elsewhere


def test_each_mass_needs_its_own_minimum_to_fail() -> None:
    """A 16-token sentence written three times in a 64-token trace: 16 tokens copied (25%, over the
    24% threshold but under the 32-token minimum) and 32 repeated (50%, under 60%) — no proof."""
    sentence, other = words(16, seed=1), words(16, seed=2)
    tokens = sentence + other[:4] + sentence + other[4:8] + sentence + other[8:]
    figures = copy_figures(committed(tokens)[1].repetition.profile)  # type: ignore[union-attr]
    assert (figures.size, figures.copied, figures.repeated) == (64, 16, 32)
    assert figures.copied_fraction > COPY_RULE.copied and not figures.proves_copying(COPY_RULE)
    assert dataclasses.replace(figures, copied=32).proves_copying(COPY_RULE)


def test_copied_spans_fails_a_trace_pasted_twice_and_passes_it_once() -> None:
    tokens = words(600, seed=3)
    for doubled, outcome in ((tokens, "pass"), (tokens + tokens, "fail")):
        public, openings = committed(doubled)
        challenge = content_challenge(len(doubled), [range(100, 104)])
        result = verify(public, challenge, openings.respond(challenge.indices, challenge.content_indices))
        check = next(c for c in result.checks if c.name == "copied_spans")
        assert check.outcome == outcome, check.detail
        assert check.kind == "proof" and check.threshold == COPY_RULE.copied


# --- binding: the profile is the committed one, and checkable where the n-gram is revealed -----------


def test_honest_profile_is_bound_and_recomputed() -> None:
    tokens = words(320, seed=4)
    public, openings = committed(tokens)
    challenge = content_challenge(len(tokens), [range(40, 44), range(100, 101), range(200, 206)])
    response = openings.respond(challenge.indices, challenge.content_indices)
    assert response.repetition is not None
    assert len(response.repetition.keys) == 4  # position 43, and 203..205
    result = verify(public, challenge, response)
    assert result.verdict == "pass", result.to_json()
    profile = next(c for c in result.checks if c.name == "repetition_profile")
    assert profile.figure == 4 and "0.185" in profile.detail  # 1 - 0.95^4


def test_a_profile_swapped_after_the_report_fails() -> None:
    tokens = words(100, seed=5)
    public, openings = committed(tokens)
    other = committed(words(100, seed=6))[1].repetition
    assert openings.repetition is not None and other is not None
    challenge = content_challenge(100, [range(20, 24)])
    honest = openings.respond(challenge.indices, challenge.content_indices)
    for repetition, why in (
        (RepetitionOpening(other.profile, honest.repetition.keys), "digest"),  # type: ignore[union-attr]
        (RepetitionOpening(other.profile[:-PROFILE_BYTES], ()), "fingerprints, not 100"),
        (None, "must carry"),
    ):
        result = verify(public, challenge, dataclasses.replace(honest, repetition=repetition))
        assert [c.name for c in result.failed] == ["repetition_profile"]
        assert why in result.failed[0].detail


def test_bucket_keys_must_be_the_committed_ones() -> None:
    tokens = words(100, seed=7)
    public, openings = committed(tokens)
    challenge = content_challenge(100, [range(20, 24)])
    honest = openings.respond(challenge.indices, challenge.content_indices)
    assert honest.repetition is not None
    [key] = honest.repetition.keys
    forged_key = dataclasses.replace(key, key=bytes(32))
    moved = dataclasses.replace(key, bucket=(key.bucket + 1) % 100)
    for keys, why in (((), "missing"), ((forged_key,), "key tree"), ((key, moved), "unrequested")):
        forged = dataclasses.replace(honest, repetition=dataclasses.replace(honest.repetition, keys=keys))
        result = verify(public, challenge, forged)
        assert [c.name for c in result.failed] == ["repetition_profile"] and why in result.failed[0].detail


def lying(tokens: list[bytes], lied: set[int], seed: int) -> tuple[PublicCommitment, Openings]:
    """A provider that commits fresh fingerprints at `lied` positions — consistently, in the profile it
    digests into its report and sends — to hide what they repeat."""
    public, openings = committed(tokens)
    repetition = openings.repetition
    assert repetition is not None
    rng = random.Random(seed)
    profile = bytearray(repetition.profile)
    for i in lied:
        profile[i * PROFILE_BYTES : (i + 1) * PROFILE_BYTES] = rng.randbytes(PROFILE_BYTES)
    repetition.profile = bytes(profile)
    repetition.commitment = RepetitionCommitment(profile_digest(repetition.profile), repetition.tree.root)
    commitment = dataclasses.replace(public.commitment, repetition=repetition.commitment)
    return dataclasses.replace(public, commitment=commitment), openings


def test_a_lied_profile_hides_a_copy_from_copied_spans_but_not_where_the_ngram_is_revealed() -> None:
    base = words(400, seed=8)
    tokens = base + base  # copied_spans would fail this trace ...
    lied = set(range(400, 800))  # ... so the liar gives every copied position a fresh fingerprint
    public, openings = lying(tokens, lied, seed=1)
    away = content_challenge(800, [range(100, 104)])
    result = verify(public, away, openings.respond(away.indices, away.content_indices))
    assert result.verdict == "pass", result.to_json()  # copied_spans sees no copy any more
    inside = content_challenge(800, [range(500, 504)])
    result = verify(public, inside, openings.respond(inside.indices, inside.content_indices))
    assert [c.name for c in result.failed] == ["repetition_profile"]
    assert "[503]" in result.failed[0].detail


@pytest.mark.parametrize("fraction", [0.1, 0.3])
def test_a_lied_profile_is_caught_at_the_predicted_rate(fraction: float) -> None:
    """Positions lied independently with probability `fraction`; each audit's coin/2 exposure plan
    recomputes c fingerprints, so it catches the lie with probability 1 - (1 - fraction)^c."""
    size = 4000
    rng = random.Random(9)
    lied = {i for i in range(size) if rng.random() < fraction}
    public, openings = lying(words(size, seed=10), lied, seed=2)
    policy = ExposurePolicy(rounds=1)
    caught, predicted = [], []
    for audit in range(120):
        plan = plan_exposure(size, 16, policy, random.Random(audit), min_run_for("coin/2"))
        challenge = plan.challenge(0)
        checked = checkable_positions(challenge.content_indices)
        predicted.append(detection_probability(fraction, len(checked)))
        result = verify(public, challenge, openings.respond(challenge.indices, challenge.content_indices))
        caught.append(not result.passed)
        assert result.passed == (not set(checked) & lied)
    expected, n = float(np.mean(predicted)), len(caught)
    assert abs(np.mean(caught) - expected) < 3 * np.sqrt(expected * (1 - expected) / n) + 0.02


def test_the_coin2_plan_opens_whole_ngrams_within_the_same_token_budget() -> None:
    assert run_lengths(20, 15) == [2] * 5 + [1] * 10  # coin/1: unchanged
    assert run_lengths(20, 15, NGRAM) == [4, 2, 2] + [1] * 12
    assert run_lengths(100, 20, NGRAM) == [5] * 20
    assert sum(run_lengths(63, 40, NGRAM)) == 63
    plan = plan_exposure(5000, 16, ExposurePolicy(), random.Random(0), min_run_for("coin/2"))
    challenge = plan.challenge(plan.rounds - 1)
    assert len(challenge.content_indices) <= 0.02 * 5000 and challenge.block_exposure <= 0.25
    assert len(checkable_positions(challenge.content_indices)) == 7


# --- versions and the wire ---------------------------------------------------------------------------


def test_coin1_still_verifies_and_refuses_a_profile() -> None:
    tokens = words(100, seed=11)
    public, openings = committed(tokens, "coin/1")
    assert public.commitment.repetition is None and "repetition" not in public.commitment.to_json()
    challenge = content_challenge(100, [range(20, 24)])
    response = openings.respond(challenge.indices, challenge.content_indices)
    assert response.repetition is None and "repetition" not in response.to_json()
    result = verify(public, challenge, response)
    assert [c.name for c in result.checks] == ["proof", "block_consistency", "token_embedding"]
    # A profile sent with a coin/1 answer is a failed proof, not an error the auditor cannot verify
    # past: an answer that fails a check must not turn its `fail` into an `inconclusive` that way.
    coin2 = committed(tokens)[1].respond(challenge.indices, challenge.content_indices)
    swapped = tuple(
        dataclasses.replace(o, token=b" zebra") if o.index == 21 else o for o in response.openings
    )
    for opened, failed in ((response.openings, ["repetition_profile"]),
                             (swapped, ["token_embedding", "repetition_profile"])):  # fmt: skip
        sent = dataclasses.replace(response, openings=opened, repetition=coin2.repetition)
        result = verify(public, challenge, sent)
        assert result.verdict == "fail" and [c.name for c in result.failed] == failed
        assert "coin/1 has no repetition profile; the response sent one" in result.failed[-1].detail


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"version": "coin/1"}, "coin/1 has no repetition profile"),
        ({"repetition": None}, "missing"),
        ({"repetition": {"digest": "00" * 32}}, "key_root"),
        ({"repetition": {"digest": "zz", "key_root": "00" * 32}}, "repetition.digest"),
        ({"repetition": "abc"}, "expected a JSON object"),
        ({"version": "coin/3"}, "unsupported"),
    ],
)
def test_bad_coin2_commitment_json_is_a_typed_error(patch: dict[str, Any], message: str) -> None:
    public, _ = committed(words(40))
    with pytest.raises(ProtocolError, match=message):
        Commitment.from_json({**public.commitment.to_json(), **patch})


@pytest.mark.parametrize(
    ("patch", "error", "message"),
    [
        ({"profile": "AAAA"}, ProtocolError, "whole number"),
        ({"profile": "!!"}, EncodingError, "repetition.profile"),
        ({"keys": "x"}, ProtocolError, "repetition.keys"),
        ({"keys": [{"bucket": -1, "key": "00" * 32, "proof": []}]}, ProtocolError, r"keys\[0\].bucket"),
        ({"keys": [{"bucket": 1, "key": "00" * 31, "proof": []}]}, EncodingError, r"keys\[0\].key"),
        ({"keys": [{"bucket": 1, "key": "00" * 32, "proof": ["0"]}]}, EncodingError, r"keys\[0\].proof\[0\]"),
        ({"keys": [{"bucket": 1, "key": "00" * 32, "proof": []}] * 2}, ProtocolError, "twice"),
        ({"keys": [{"bucket": True, "key": "00" * 32, "proof": []}]}, ProtocolError, "expected int"),
    ],
)
def test_bad_repetition_json_is_a_typed_error(
    patch: dict[str, Any], error: type[Exception], message: str
) -> None:
    _, openings = committed(words(40))
    body = {**openings.respond([0], [0]).to_json()["repetition"], **patch}
    with pytest.raises(error, match=message):
        Response.from_json({"openings": [], "repetition": body})


def test_what_is_sent_stays_under_eight_bytes_a_token() -> None:
    tokens = words(5000, seed=12)
    public, openings = committed(tokens)
    plan = plan_exposure(5000, 16, ExposurePolicy(), random.Random(1), min_run_for("coin/2"))
    challenge = plan.challenge(0)
    coin2 = json.dumps(openings.respond(challenge.indices, challenge.content_indices).to_json())
    coin1 = json.dumps(
        committed(tokens, "coin/1")[1].respond(challenge.indices, challenge.content_indices).to_json()
    )
    assert (len(coin2) - len(coin1)) / 5000 < 8  # 5.33 base64 characters a token, and the few keys
    assert len(json.dumps(public.to_json())) - len(json.dumps(committed(tokens, "coin/1")[0].to_json())) < 200
