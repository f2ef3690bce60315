"""The provider SDK end to end on real traces, and the attacks the leaf layout exists to stop."""

import base64
import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from auditor.protocol.challenge import Challenge, draw_challenge
from auditor.protocol.commitment import (
    MAX_TOKEN_BYTES,
    AnswerCommitment,
    Commitment,
    Opening,
    Openings,
    PublicCommitment,
    Response,
    commit,
    digest,
    leaf_hash,
    new_secret,
    response_size_bound,
    salt_for,
    tokens_outside,
)
from auditor.protocol.errors import ChallengeError, EncodingError, ProtocolError
from auditor.protocol.fingerprint import TOKEN_CACHE_ENTRIES, Embedder, quantize
from auditor.protocol.merkle import MerkleTree, verify_inclusion
from auditor.protocol.tokenize import get_tokenizer
from auditor.protocol.verify import CheckResult, OpenedTrace, verify_response

BLOCK = 32

Committed = tuple[dict[str, Any], PublicCommitment, Openings]


@pytest.fixture(scope="module")
def committed(short_traces: list[dict[str, Any]], embedder: Embedder) -> Committed:
    """A coin/1 commitment: this file is the coin/1 suite (coin/2 adds the profile, test_repetition.py)."""
    trace = short_traces[0]
    public, openings = commit(
        trace["reasoning"],
        trace["answer"],
        new_secret(),
        block_size=BLOCK,
        embedder=embedder,
        version="coin/1",
    )
    return trace, public, openings


def test_commit_matches_design_layout(committed: Committed, embedder: Embedder) -> None:
    trace, public, openings = committed
    tokens = get_tokenizer("qwen2").tokenize(trace["reasoning"])
    assert public.commitment.size == len(tokens) == len(openings.tokens)
    assert public.commitment.embd_id == embedder.embd_id
    assert public.commitment.root == openings.tree.root
    # fp_i = q(e_block) || q(t_i), recomputed independently of the SDK
    i = 5
    block_text = b"".join(tokens[:BLOCK]).decode("utf-8", "replace")
    expected_block = quantize(embedder.embed_texts([block_text]))[0]
    expected_token = quantize(embedder.embed_texts([tokens[i].decode("utf-8", "replace")]))[0]
    assert np.array_equal(openings.fingerprints[i][:384], expected_block)
    assert np.array_equal(openings.fingerprints[i][384:], expected_token)


def test_honest_response_passes_and_round_trips_json(committed: Committed, embedder: Embedder) -> None:
    _, public, openings = committed
    challenge = draw_challenge(public.commitment.size, BLOCK, rng=random.Random(1))
    response = openings.respond(challenge.indices, challenge.content_indices)
    wire = json.loads(json.dumps(response.to_json()))
    result = verify_response(
        PublicCommitment.from_json(public.to_json()), challenge, Response.from_json(wire), embedder=embedder
    )
    assert result.verdict == "pass", result.to_json()
    assert [c.name for c in result.checks] == ["proof", "block_consistency", "token_embedding"]
    # count openings reveal no fingerprint and no token
    count_only = [o for o in response.to_json()["openings"] if o["index"] not in challenge.content_indices]
    assert count_only and all("fingerprint" not in o and "token" not in o for o in count_only)


def test_openings_survive_disk(committed: Committed, tmp_path: Path) -> None:
    _, public, openings = committed
    openings.save(tmp_path / "o.npz")
    loaded = Openings.load(tmp_path / "o.npz")
    assert loaded.public == public and loaded.tokens == openings.tokens
    assert loaded.respond([0, 7], [7]) == openings.respond([0, 7], [7])


def test_tampered_openings_file_is_refused(committed: Committed, tmp_path: Path) -> None:
    _, public, openings = committed
    forged = dataclasses.replace(public, commitment=dataclasses.replace(public.commitment, root=b"\x11" * 32))
    with pytest.raises(ProtocolError, match="do not rebuild"):
        Openings(forged, openings.secret, openings.tokens, openings.fingerprints)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ProtocolError, match="not an openings file"):
        Openings.load(tmp_path / "junk.npz")
    openings.save(tmp_path / "o.npz")
    with np.load(tmp_path / "o.npz") as data:
        arrays = dict(data)
    for meta, message in (([], "meta: expected a JSON object"), ({"secret": "00"}, r"meta.public: missing"),
                          ({"public": public.to_json(), "secret": 7}, r"meta.secret: expected str")):  # fmt: skip
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        np.savez_compressed(tmp_path / "bad.npz", **arrays)
        with pytest.raises(ProtocolError, match=message):
            Openings.load(tmp_path / "bad.npz")
    arrays["meta"] = np.frombuffer(
        json.dumps({"public": public.to_json(), "secret": openings.secret.hex()}).encode(), dtype=np.uint8
    )
    lengths = arrays["token_lengths"]
    for bad in (lengths.astype(np.float64), lengths.reshape(1, -1), lengths[:-1],
                np.concatenate([[0], lengths[1:-1], [lengths[0] + lengths[-1]]])):  # fmt: skip
        np.savez_compressed(tmp_path / "bad.npz", **{**arrays, "token_lengths": bad})
        with pytest.raises(ProtocolError, match="token lengths do not cut its token bytes"):
            Openings.load(tmp_path / "bad.npz")


def test_forged_fingerprint_fails_the_proof(committed: Committed, embedder: Embedder) -> None:
    _, public, openings = committed
    challenge = Challenge(public.commitment.size, BLOCK, (0, public.commitment.size - 1), (0,), (3,))
    good = openings.respond(challenge.indices, challenge.content_indices)
    forged_fp = bytearray(good.openings[1].fingerprint or b"")
    forged_fp[500] ^= 0x40
    forged = Response(
        (
            good.openings[0],
            dataclasses.replace(good.openings[1], fingerprint=bytes(forged_fp)),
            good.openings[2],
        )
    )
    result = verify_response(public, challenge, forged, embedder=embedder)
    assert result.verdict == "fail" and result.failed[0].name == "proof"


def test_token_not_matching_its_embedding_fails(committed: Committed, embedder: Embedder) -> None:
    _, public, openings = committed
    challenge = Challenge(public.commitment.size, BLOCK, (0, public.commitment.size - 1), (0,), (3,))
    good = openings.respond(challenge.indices, challenge.content_indices)
    swapped = dataclasses.replace(good.openings[1], token=b" banana")
    result = verify_response(
        public, challenge, Response((good.openings[0], swapped, good.openings[2])), embedder=embedder
    )
    assert [c.name for c in result.failed] == ["token_embedding"]


def test_missing_and_unrequested_openings_fail(committed: Committed, embedder: Embedder) -> None:
    _, public, openings = committed
    challenge = Challenge(public.commitment.size, BLOCK, (0, 9, public.commitment.size - 1))
    short = openings.respond([0, 9])
    assert verify_response(public, challenge, short, embedder=embedder).failed[0].name == "proof"
    extra = openings.respond([0, 9, 10, public.commitment.size - 1])
    assert (
        verify_response(public, challenge, extra, embedder=embedder)
        .failed[0]
        .detail.startswith("unrequested")
    )


def test_over_claimed_count_cannot_be_opened(committed: Committed, embedder: Embedder) -> None:
    """A provider that built m leaves and claims 2m cannot open the index m' - 1 the challenge always asks."""
    _, public, openings = committed
    m = public.commitment.size
    claimed = dataclasses.replace(public, commitment=dataclasses.replace(public.commitment, size=2 * m))
    challenge = draw_challenge(2 * m, BLOCK, rng=random.Random(7))
    assert 2 * m - 1 in challenge.indices
    with pytest.raises(ChallengeError):
        openings.respond(challenge.indices, challenge.content_indices)
    # its best effort (proofs of its real m-leaf tree for what it has) fails the proof check
    best = openings.respond(
        [i for i in challenge.indices if i < m], [i for i in challenge.content_indices if i < m]
    )
    assert verify_response(claimed, challenge, best, embedder=embedder).failed[0].name == "proof"


def test_three_leaves_claimed_as_five_index_inside_the_leaf(embedder: Embedder) -> None:
    """DESIGN §3's case: in an RFC 9162 tree of 3 leaves claimed as 5, leaf 2's audit path also fits
    index 4 of 5 (both are the right-border leaf under the root). The index inside the leaf stops it."""
    tokens = [b" one", b" two", b" three"]
    public, openings = commit(tokens, "answer", new_secret(), block_size=16, embedder=embedder)
    leaf2 = openings.open(2, content=True)
    claimed_size = 5
    # the bare path fits: with a leaf hash that ignored the index, index 4 of 5 would verify
    bare_leaf = leaf2.leaf_hash
    verify_inclusion(bare_leaf, 2, 3, leaf2.proof, public.commitment.root)
    verify_inclusion(bare_leaf, 4, claimed_size, leaf2.proof, public.commitment.root)
    # with the index inside the leaf, the auditor recomputes the leaf at index 4 and it fails
    moved = dataclasses.replace(leaf2, index=4)
    with pytest.raises(Exception, match="root"):
        verify_inclusion(moved.leaf_hash, 4, claimed_size, moved.proof, public.commitment.root)


def test_salt_stops_vocabulary_search_on_a_sibling_leaf(
    short_traces: list[dict[str, Any]], embedder: Embedder
) -> None:
    """A content opening of leaf i reveals the block embedding and the sibling leaf hash of i + 1.
    Without a salt, trying candidate tokens recovers token i + 1; with the salt it cannot."""
    trace = short_traces[1]
    secret = new_secret()
    _, openings = commit(trace["reasoning"], trace["answer"], secret, block_size=BLOCK, embedder=embedder)
    i = 10  # even, so proof[0] is the leaf hash of i + 1, which lies in the same block
    opened = openings.open(i, content=True)
    block_half = opened.block_codes
    # candidates: every distinct token of the trace plus 1,000 other vocabulary tokens; the full
    # vocabulary (151k tokens) only takes longer, it finds the same answer
    encoding = get_tokenizer("qwen2").encoding  # type: ignore[attr-defined]
    rng = random.Random(0)
    vocab = [encoding.decode_single_token_bytes(rng.randrange(150_000)) for _ in range(1000)]
    candidates = list(dict.fromkeys(openings.tokens + vocab))
    codes = quantize(embedder.embed_tokens(candidates))

    def search(target: bytes, salt_guess: bytes) -> list[bytes]:
        return [
            token
            for token, code in zip(candidates, codes, strict=True)
            if leaf_hash(i + 1, salt_guess, digest(block_half.tobytes() + code.tobytes())) == target
        ]

    # unsalted leaves (the salt left out of the same fingerprints): the search finds the hidden token
    unsalted = MerkleTree(
        [leaf_hash(k, b"", digest(fp.tobytes())) for k, fp in enumerate(openings.fingerprints)]
    )
    assert search(unsalted.inclusion_proof(i)[0], b"") == [openings.tokens[i + 1]]
    # salted leaves (the protocol): neither no salt nor the revealed neighbour's salt finds anything
    assert search(opened.proof[0], b"") == []
    assert search(opened.proof[0], opened.salt) == []
    assert salt_for(secret, i + 1) != opened.salt


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"root": "zz" * 32}, "commitment.root"),
        ({"root": "ab" * 31}, "expected 32 bytes"),
        ({"root": "AB" * 32}, "lowercase hex"),
        ({"size": 0}, "commitment.size"),
        ({"size": -3}, "commitment.size"),
        ({"size": 10**30}, "commitment.size"),
        ({"size": "12"}, "expected int"),
        ({"block_size": 8}, "block_size"),
        ({"block_size": 4096}, "block_size"),
        ({"version": "coin/0"}, "unsupported"),
        ({"embd_id": ""}, "must not be empty"),
    ],
)
def test_bad_commitment_json_is_a_typed_error(
    committed: Committed, patch: dict[str, Any], message: str
) -> None:
    _, public, _ = committed
    body = {**public.commitment.to_json(), **patch}
    with pytest.raises(ProtocolError, match=message):
        Commitment.from_json(body)


@pytest.mark.parametrize(
    ("patch", "error"),
    [
        ({"salt": "00" * 15}, EncodingError),
        ({"fingerprint": "!!!notbase64"}, EncodingError),
        ({"fingerprint": "AAAA"}, EncodingError),
        ({"index": -1}, ProtocolError),
        ({"index": 2**70}, ProtocolError),
        ({"index": True}, ProtocolError),
        ({"proof": ["00" * 31]}, EncodingError),
        ({"proof": "deadbeef"}, ProtocolError),
        ({"token": 12}, EncodingError),
        ({"token": "QR=="}, EncodingError),  # b"A", spelled with a stray bit ("QQ==" is its spelling)
        ({"token": base64.b64encode(b"x" * (MAX_TOKEN_BYTES + 1)).decode()}, EncodingError),
        ({"token": "A" * 7_000_000}, EncodingError),  # refused on its length, not decoded
    ],
)
def test_bad_opening_json_is_a_typed_error(
    committed: Committed, patch: dict[str, Any], error: type[Exception]
) -> None:
    _, _, openings = committed
    body = {**openings.open(3, content=True).to_json(), **patch}
    with pytest.raises(error):
        Opening.from_json(body)


def test_bad_traces_are_refused(embedder: Embedder) -> None:
    with pytest.raises(ProtocolError, match="empty"):
        commit("", "answer", new_secret(), embedder=embedder)
    with pytest.raises(ProtocolError, match="non-empty bytes"):
        commit([b"ok", b""], "answer", new_secret(), embedder=embedder)
    with pytest.raises(ProtocolError, match="secret"):
        commit("some text", "answer", b"short", embedder=embedder)
    with pytest.raises(ProtocolError, match="unknown tokenizer"):
        commit("some text", "answer", new_secret(), tokenizer_id="nope", embedder=embedder)
    # what the auditor would refuse or fail once opened is refused now, before the report is sent
    with pytest.raises(
        ProtocolError, match=r"trace\[1\]: 257 bytes, longer than 256: it could never be opened"
    ):
        commit([b" ok", b"y" * 257], "answer", new_secret(), embedder=embedder)
    assert tokens_outside([b" ok", b" fine", b"\xff\xfeok", b" ok", b"\xff\xfeok"], "qwen2") == [2, 4]


def test_an_answer_text_with_a_lone_surrogate_is_a_typed_error(committed: Committed) -> None:
    _, public, _ = committed
    answer = {**public.answer.to_json(), "text": "42 \ud800"}  # JSON can spell it, UTF-8 cannot
    with pytest.raises(ProtocolError, match=r"answer\.text: not valid Unicode"):
        AnswerCommitment.from_json(answer)


def test_partial_utf8_tokens_commit_and_verify(embedder: Embedder) -> None:
    """Byte-level BPE tokens can hold half a character; they decode with replacement, never crash."""
    tokens = [b"\xe4\xbd", b"\xa0", b"\xe5\xa5\xbd", b" ok"] * 5
    public, openings = commit(tokens, "answer", new_secret(), block_size=16, embedder=embedder)
    challenge = Challenge(public.commitment.size, 16, (0, 19), (0,), (0, 1))
    result = verify_response(
        public, challenge, openings.respond(challenge.indices, challenge.content_indices), embedder=embedder
    )
    assert result.passed, result.to_json()


def test_a_revealed_token_is_bounded_above_every_token_of_the_vocabulary(committed: Committed) -> None:
    _, _, openings = committed
    encoding = get_tokenizer("qwen2").encoding  # type: ignore[attr-defined]
    ranks = encoding._mergeable_ranks
    assert max(len(token) for token in ranks) <= MAX_TOKEN_BYTES
    assert len(ranks) < TOKEN_CACHE_ENTRIES  # honest traffic of this tokenizer is never evicted
    longest = b"y" * MAX_TOKEN_BYTES
    body = {**openings.open(3, content=True).to_json(), "token": base64.b64encode(longest).decode()}
    assert Opening.from_json(body).token == longest


def test_the_token_cache_keeps_the_most_recently_used(embedder: Embedder) -> None:
    small = Embedder(device="cpu", cache_entries=2)
    first = small.embed_tokens([b" alpha", b" beta"])
    assert small.cached_tokens == 2
    again = small.embed_tokens([b" alpha", b" gamma", b" alpha"])  # beta is evicted, alpha stays
    assert small.cached_tokens == 2
    # each entry owns its row: a view would keep its whole batch alive while it stays cached
    assert all(vector.base is None for vector in small._token_cache.values())
    np.testing.assert_array_equal(again[0], first[0])
    np.testing.assert_array_equal(again[2], first[0])
    np.testing.assert_allclose(small.embed_tokens([b" beta"])[0], first[1], atol=1e-6)
    np.testing.assert_allclose(embedder.embed_tokens([b" gamma"])[0], again[1], atol=1e-6)


@pytest.mark.parametrize("version", ["coin/1", "coin/2"])
def test_a_response_is_never_larger_than_its_bound(
    embedder: Embedder, short_traces: list[dict[str, Any]], version: str
) -> None:
    """`response_size_bound`, which the service refuses reports by, holds for real responses (the SDK's
    JSON) of every size of challenge, down to one that opens every leaf of a short trace."""
    trace = short_traces[0]
    public, openings = commit(
        trace["reasoning"], trace["answer"], new_secret(), embedder=embedder, version=version
    )
    size = public.commitment.size
    rng = random.Random(5)
    for content in (0, 1, size // 10, size):
        count = sorted(rng.sample(range(size), min(size, 90)))
        content_indices = sorted(rng.sample(range(size), content))
        indices = sorted(set(count) | set(content_indices))
        body = json.dumps(openings.respond(indices, content_indices).to_json())
        bound = response_size_bound(
            size, version, content_openings=content, count_openings=len(indices) - content
        )
        assert len(body) <= bound < 3 * len(body) + 1_000, (content, len(body), bound)


@dataclasses.dataclass
class _RaisingCheck:
    name: str = "raises"
    error: Exception = dataclasses.field(default_factory=lambda: OverflowError("int too large to convert"))

    def __call__(self, opened: OpenedTrace) -> CheckResult:
        raise self.error


@dataclasses.dataclass
class _ProvingCheck:
    name: str = "proves"

    def __call__(self, opened: OpenedTrace) -> CheckResult:
        return CheckResult(self.name, "fail", None, "proof of inflation")


def test_a_semantic_check_that_raises_leaves_the_others_proof_standing(
    committed: Committed, embedder: Embedder
) -> None:
    """A response that makes one check raise must not throw away what the others prove: the audit still
    fails, and the check that raised is inconclusive, naming the error."""
    _, public, openings = committed
    challenge = draw_challenge(public.commitment.size, BLOCK, rng=random.Random(1))
    response = openings.respond(challenge.indices, challenge.content_indices)
    result = verify_response(
        public, challenge, response, embedder=embedder, semantic_checks=[_RaisingCheck(), _ProvingCheck()]
    )
    assert result.verdict == "fail"
    raised = next(c for c in result.checks if c.name == "raises")
    assert raised.outcome == "inconclusive" and "OverflowError" in raised.detail
    alone = verify_response(public, challenge, response, embedder=embedder, semantic_checks=[_RaisingCheck()])
    assert alone.verdict == "inconclusive"
    # A fault of the auditor's own (memory, a time limit, its models) is not the response's: it stops the
    # verification, which the service tries again, rather than deciding the check.
    for fault in (MemoryError(), RuntimeError("CUDA out of memory"), ProtocolError("heads of another model")):
        with pytest.raises(type(fault)):
            verify_response(
                public, challenge, response, embedder=embedder, semantic_checks=[_RaisingCheck(error=fault)]
            )
