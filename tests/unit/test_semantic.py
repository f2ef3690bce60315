"""Semantic checks 4–8 (auditor.semantic.checks) through the real protocol path.

Most tests use a deterministic stand-in for Embd (hash-seeded unit vectors: identical texts get
identical embeddings, different texts unrelated ones) so that the rule checks are tested without the
model; the `model` tests load the real Embd once (module-scoped) with the packaged heads."""

import json
import random
from collections.abc import Sequence
from fractions import Fraction
from math import comb
from pathlib import Path

import blake3
import numpy as np
import pytest

from auditor.protocol.challenge import Challenge
from auditor.protocol.commitment import commit
from auditor.protocol.copies import COPY_RULE
from auditor.protocol.errors import ChallengeError, ModelError, ProtocolError
from auditor.protocol.fingerprint import EMBED_DIM, Embedder, FloatArray
from auditor.protocol.tokenize import Tokenizer, get_tokenizer
from auditor.protocol.verify import CheckResult, OpenedTrace, SemanticCheck, verify_response
from auditor.research.attacks import AttackContext
from auditor.research.evaluation.run import Auditor, EvalConfig
from auditor.research.traces import Trace, load_traces
from auditor.semantic.calibration import PLANNED_BANDS, domain_shift, flagged_share, verifier_bands
from auditor.semantic.checks import (
    FEATURE_NAMES,
    Revealed,
    RevealedBlock,
    SemanticSuite,
    binomial_tail,
    block_p_values,
    evidence_of,
    gaps_to_others,
    revealed_from_opened,
    verifier_statistic,
)
from auditor.semantic.exposure import ExposurePolicy, plan_exposure
from auditor.semantic.heads import HeadBundle, load_heads
from auditor.semantic.tokenization import merges_when_retokenized, proves_split
from service.audits.verification import verify_round
from service.audits.workflow import MAX_PLAN_BLOCKS, exposure_policy, plan_for, response_bytes_bound
from service.settings import Settings
from tests.conftest import read_traces

TRACES = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "traces"
B = 16


class HashEmbedder:
    """Unit vectors seeded by BLAKE3(text): a fast, deterministic stand-in for Embd."""

    embd_id = "all-MiniLM-L6-v2@hash-stand-in-00"

    def embed_texts(self, texts: Sequence[str]) -> FloatArray:
        out = np.zeros((len(texts), EMBED_DIM), dtype=np.float32)
        for k, text in enumerate(texts):
            seed = int.from_bytes(blake3.blake3(text.encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).normal(size=EMBED_DIM)
            out[k] = v / np.linalg.norm(v)
        return out

    def embed_tokens(self, tokens: Sequence[bytes]) -> FloatArray:
        return self.embed_texts([t.decode("utf-8", errors="replace") for t in tokens])


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return get_tokenizer("qwen2")


@pytest.fixture(scope="module")
def heads() -> HeadBundle:
    bundle = load_heads()
    bundle.embd_id = HashEmbedder().embd_id  # the rule checks below do not depend on the embedding model
    # Fixed thresholds, so that each check's logic is tested, not this checkpoint's calibration.
    bundle.calibration = {**bundle.calibration, "duplicate_cosine": 0.999, "merge_rate": 1e-4}
    return bundle


@pytest.fixture(scope="module")
def suite(heads: HeadBundle, tokenizer: Tokenizer) -> SemanticSuite:
    return SemanticSuite(heads, tokenizer)


def opened_for(tokens: list[bytes], challenge: Challenge, answer: str = "The answer is 42.") -> OpenedTrace:
    embedder = HashEmbedder()
    public, openings = commit(tokens, answer, bytes(32), block_size=B, embedder=embedder)
    response = openings.respond(challenge.indices, challenge.content_indices)
    captured: list[OpenedTrace] = []

    class Capture:  # a SemanticCheck that keeps what it is shown
        name = "capture"

        def __call__(self, opened: OpenedTrace) -> CheckResult:
            captured.append(opened)
            return CheckResult("capture", "pass")

    verification = verify_response(
        public, challenge, response, embedder=embedder, semantic_checks=[Capture()]
    )
    assert verification.passed, verification.to_json()
    return captured[0]


def challenge_for(size: int, blocks: Sequence[int], tokens: Sequence[int]) -> Challenge:
    return Challenge(size, B, (0, size - 1), tuple(blocks), tuple(tokens))


VOCABULARY = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "and",
    "then",
    "we",
    "find",
    "that",
    "this",
    "value",
    "is",
    "equal",
    "to",
    "one",
    "more",
    "than",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "apple",
    "house",
    "river",
    "stone",
    "light",
    "water",
    "green",
    "blue",
    "red",
    "black",
    "white",
    "small",
    "large",
    "quick",
    "slow",
    "happy",
    "early",
    "late",
    "north",
    "south",
    "east",
    "west",
    "table",
    "chair",
    "window",
    "door",
    "garden",
    "market",
    "music",
    "paper",
]


def words(n: int) -> list[bytes]:
    """n distinct-looking single tokens (common words cycled with a line break every 16)."""
    return [(" " + VOCABULARY[k % len(VOCABULARY)]).encode() for k in range(n)]


def check(suite: SemanticSuite, name: str) -> SemanticCheck:
    """The suite's check called `name`."""
    return next(c for c in suite.checks() if c.name == name)


def test_duplicate_blocks_are_caught(suite: SemanticSuite, tokenizer: Tokenizer) -> None:
    assert all(tokenizer.is_token(t) for t in words(64))
    honest = words(64)
    copied = honest[:16] + honest[16:32] + honest[:16] + honest[48:]  # block 2 repeats block 0
    challenge = challenge_for(64, [0, 2], [3, 35])
    assert check(suite, "duplicate_blocks")(opened_for(honest, challenge)).passed
    result = check(suite, "duplicate_blocks")(opened_for(copied, challenge))
    # Statistical: honest traces repeat themselves too, so a copy is a flag, not a proof.
    assert result.outcome == "suspect" and result.kind == "statistical"
    assert result.figure == pytest.approx(1.0, abs=1e-3) and result.threshold == 0.999


def test_a_block_of_one_repeated_token_is_caught(suite: SemanticSuite) -> None:
    repeated = check(suite, "repeated_token")
    honest = words(64)
    padded = honest[:40] + [b"."] * 24  # CoIn's padding: the last token repeated, blocks 3 and the tail
    # Block 3 (tokens 48..63) is all padding; block 2 (32..47) is mixed; one opened token in each.
    assert repeated(opened_for(honest, challenge_for(64, [2, 3], [33, 50]))).passed
    result = repeated(opened_for(padded, challenge_for(64, [2, 3], [41, 50])))
    assert result.outcome == "fail" and result.kind == "proof" and "[3]" in result.detail
    assert result.figure == pytest.approx(1.0, abs=1e-3)
    # A mixed block whose opened token is a pad token is not the token repeated.
    assert repeated(opened_for(padded, challenge_for(64, [2], [41]))).passed
    # Two different opened tokens cannot be one token repeated: nothing to test.
    result = repeated(opened_for(honest, challenge_for(64, [1], [20, 21])))
    assert result.passed and result.figure is None
    # A one-token last block is trivially its own token: exempt, not a false alarm.
    assert repeated(opened_for(words(33), challenge_for(33, [2], [32]))).passed


def test_rebuilt_texts_are_embedded_once_and_the_cache_is_bounded(
    heads: HeadBundle, tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Counting(HashEmbedder):
        def __init__(self) -> None:
            self.texts: list[str] = []

        def embed_texts(self, texts: Sequence[str]) -> FloatArray:
            self.texts.extend(texts)
            return super().embed_texts(texts)

    suite = SemanticSuite(heads, tokenizer)
    embedder = Counting()
    first = suite.rebuilt_codes(["a a", "b b", "a a"], embedder)
    assert embedder.texts == ["a a", "b b"]  # each distinct text once
    assert np.array_equal(suite.rebuilt_codes(["b b", "a a"], embedder), first[[1, 0]])
    assert embedder.texts == ["a a", "b b"]  # served from the cache
    monkeypatch.setattr("auditor.semantic.checks.REBUILT_CACHE_SIZE", 2)
    suite.rebuilt_codes(["c c"], embedder)  # evicts the least recently used, "b b"
    suite.rebuilt_codes(["a a", "b b"], embedder)
    assert embedder.texts == ["a a", "b b", "c c", "b b"]


def test_tokens_outside_the_vocabulary_are_caught(suite: SemanticSuite) -> None:
    tokens = words(32)
    tokens[5] = b"\xff\xfe-not-a-token-\xfd"
    result = check(suite, "vocabulary")(opened_for(tokens, challenge_for(32, [0], [5])))
    assert (
        result.outcome == "fail"
        and result.kind == "proof"
        and "1 of 1 revealed tokens outside" in result.detail
    )
    assert check(suite, "vocabulary")(opened_for(words(32), challenge_for(32, [0], [5]))).passed


def test_split_words_are_caught_by_retokenization(suite: SemanticSuite, tokenizer: Tokenizer) -> None:
    assert tokenizer.tokenize(" computation") == [b" computation"]
    assert merges_when_retokenized(b" comput", b"ation", tokenizer)
    assert not merges_when_retokenized(b" the", b" cat", tokenizer)
    assert not merges_when_retokenized(b"\xe4", b"\xbd", tokenizer)  # not whole UTF-8 text
    tokens = words(32)
    tokens[8:9] = [b" comput", b"ation"]
    retokenization = check(suite, "retokenization")
    split = retokenization(opened_for(tokens, challenge_for(33, [0], [8, 9])))
    # One merging pair of one, at an honest rate of 1e-4 per pair: p = 1e-4, below alpha.
    assert split.outcome == "suspect" and split.kind == "statistical" and split.figure == pytest.approx(1e-4)
    assert retokenization(opened_for(words(32), challenge_for(32, [0], [8, 9]))).passed


def test_a_token_cut_where_no_honest_tokenization_cuts_is_proof(
    suite: SemanticSuite, tokenizer: Tokenizer
) -> None:
    # " computation" is one token; no context makes the tokenizer cut it after " comput".
    assert proves_split(b" comput", b"ation", tokenizer)
    # Honest pairs that merge when re-tokenized alone sit on a pre-tokenizer chunk boundary: a space
    # run before a digit ("09:15  565"), a punctuation run before letters ("->(RMI"). Not proof.
    assert merges_when_retokenized(b" ", b" ", tokenizer) and not proves_split(b" ", b" ", tokenizer)
    assert not proves_split(b"(", b"R", tokenizer)
    assert not proves_split(b" the", b" cat", tokenizer)  # not one token
    assert not proves_split(b"\xe4", b"\xbd", tokenizer)  # not whole UTF-8 text
    split = words(32)
    split[8:9] = [b" comput", b"ation"]
    result = check(suite, "split_token")(opened_for(split, challenge_for(33, [0], [8, 9])))
    assert result.outcome == "fail" and result.kind == "proof" and "[9]" in result.detail
    assert check(suite, "split_token")(opened_for(words(32), challenge_for(32, [0], [8, 9]))).passed
    # The same pair opened apart (not adjacent) proves nothing.
    assert check(suite, "split_token")(opened_for(split, challenge_for(33, [0], [8, 10]))).passed


def test_checks_report_figures_and_the_verifier_is_sequential(suite: SemanticSuite) -> None:
    tokens = words(400)
    plan = plan_exposure(400, B, ExposurePolicy(), random.Random(0))
    first = opened_for(tokens, plan.challenge(0))
    results = [check(first) for check in suite.checks()]
    assert [r.name for r in results] == [
        "tokens_to_block",
        "block_to_answer",
        "duplicate_blocks",
        "repeated_token",
        "vocabulary",
        "split_token",
        "retokenization",
        "verifier",
    ]
    kinds = {r.name: r.kind for r in results}
    assert {name for name, kind in kinds.items() if kind == "proof"} == {
        "repeated_token",
        "vocabulary",
        "split_token",
    }
    # repeated_token has a figure only when some revealed block opens one token alone or twice.
    assert all(r.figure is not None for r in results if r.name != "repeated_token")
    last = opened_for(tokens, plan.challenge(plan.rounds - 1))
    # At the end of the budget the verifier never asks for more.
    assert check(suite, "verifier")(last).outcome in ("pass", "suspect")


def test_gaps_are_taken_against_the_median_of_the_other_blocks() -> None:
    measures = np.array([[1.0, 10.0], [2.0, 10.0], [4.0, 10.0], [100.0, 10.0]], dtype=np.float32)
    gaps = gaps_to_others(measures)
    assert gaps[3, 0] == pytest.approx(100.0 - 2.0)  # median of 1, 2, 4
    assert gaps[0, 0] == pytest.approx(1.0 - 4.0)  # median of 2, 4, 100
    assert not gaps[:, 1].any()  # a measure every block shares moves none
    assert not gaps_to_others(measures[:1]).any()


def test_block_p_values_are_conformal_in_the_body_and_exponential_in_the_tail() -> None:
    null = np.sort(np.random.default_rng(0).exponential(size=10_000))
    p = block_p_values(np.array([0.0, 1.0, 3.0]), null)
    assert p[0] == pytest.approx(1.0)
    assert p[1] == pytest.approx((1 + (null >= 1.0).sum()) / (1 + len(null)))
    # Beyond the sample the exponential tail keeps going down (the true value here is exp(-s)).
    far = block_p_values(np.array([12.0, 20.0]), null)
    assert far[1] < far[0] < 1 / len(null)
    assert far[0] == pytest.approx(np.exp(-12.0), rel=0.5)
    assert np.all(np.diff(block_p_values(np.linspace(-1, 30, 200), null)) <= 0)


def test_verifier_bands_hold_every_domain_at_alpha_whatever_the_length() -> None:
    """Honest traces whose smallest block p-value shrinks with the number of blocks (more blocks, more
    chances for an odd one), in two domains, one more unusual than the other: each band's threshold is
    the more cautious domain's, so in every band neither domain is flagged above alpha."""
    rng = np.random.default_rng(0)
    alpha = 0.01

    def traces(n: int, spread: float) -> list[tuple[int, float]]:
        # smallest of `planned` uniform p-values, spread times more unusual
        planned = rng.integers(2, 200, size=n)
        return [(int(k), float(rng.uniform(size=k).min() / spread)) for k in planned]

    calibration = {"calm": traces(4000, 1.0), "odd": traces(4000, 3.0)}
    bands, _ = verifier_bands(calibration, alpha)
    assert [b.max_planned for b in bands] == list(PLANNED_BANDS)
    fresh = {"calm": traces(20_000, 1.0), "odd": traces(20_000, 3.0)}
    for domain, rows in fresh.items():
        for band, low in zip(bands, (0, *PLANNED_BANDS[:-1]), strict=True):
            inside = [t for k, t in rows if low < k <= band.max_planned]
            if len(inside) > 1000:
                rate = np.mean([t < band.threshold for t in inside])
                assert rate <= alpha + 0.006, (domain, band, rate)
    # The calm domain pays for the odd one: it is flagged less than alpha.
    calm = [t < bands[3].threshold for k, t in fresh["calm"] if 24 < k <= 49]
    assert np.mean(calm) < alpha / 2


def test_the_domain_shift_margin_holds_a_domain_beyond_the_calibration_at_alpha() -> None:
    """Two calibration domains, the second twice as unusual as the first: left out, it is flagged at about
    twice alpha by the first's thresholds, so the margin is about 2 — and a new domain twice as unusual
    again is then flagged at about alpha, where the plain composite null would flag it at about 2 alpha."""
    rng = np.random.default_rng(1)
    alpha = 0.01

    def traces(n: int, spread: float) -> list[tuple[int, float]]:
        planned = rng.integers(2, 200, size=n)
        return [(int(k), float(rng.uniform(size=k).min() / spread)) for k in planned]

    calibration = {"calm": traces(6000, 1.0), "odd": traces(6000, 2.0)}
    bands, margin = verifier_bands(calibration, alpha, shift_margin=True)
    assert 1.6 <= margin <= 2.6
    assert margin == domain_shift(calibration, alpha)
    unseen = traces(30_000, 4.0)
    assert flagged_share(unseen, bands) <= 1.3 * alpha
    plain, no_margin = verifier_bands(calibration, alpha)
    assert no_margin == 1.0
    assert flagged_share(unseen, plain) >= 1.6 * alpha


def test_verifier_bands_pool_sparse_domains_and_scale_empty_bands() -> None:
    rows = {"a": [(3, 0.01 * k) for k in range(1, 40)], "b": [(3, 0.02 * k) for k in range(1, 40)]}
    bands, margin = verifier_bands(rows, 0.05, shift_margin=True)
    # No domain has 50 traces: no shift to measure.
    assert margin == 1.0
    # Band 1: no domain has 50 traces, 78 pooled: the pooled 5% quantile.
    assert bands[0].threshold == pytest.approx(sorted(t for d in rows.values() for _, t in d)[3])
    # Empty bands keep the one below, scaled by the ratio of their sizes.
    assert bands[1].threshold == pytest.approx(bands[0].threshold * 4 / 8)
    assert all(b.pass_level >= b.threshold for b in bands)


def test_the_verifier_statistic_names_the_most_unusual_block(heads: HeadBundle, tokenizer: Tokenizer) -> None:
    codes = [np.asarray(HashEmbedder().embed_texts([f"block {k}"])[0] * 127, dtype=np.int8) for k in range(6)]
    blocks = tuple(RevealedBlock(k, codes[k], (16 * k,), (b" the",), codes[k][None, :]) for k in range(6))
    evidence = evidence_of(Revealed(24, codes[0], blocks), heads, tokenizer)
    statistic = verifier_statistic(evidence, heads)
    assert 0 < statistic.p_value <= 1 and statistic.worst_block in range(6)


def test_binomial_tail() -> None:
    assert binomial_tail(0, 10, 0.1) == 1.0
    assert binomial_tail(1, 1, 1e-4) == pytest.approx(1e-4)
    assert binomial_tail(2, 3, 0.5) == pytest.approx(0.5)
    assert binomial_tail(1, 5, 0.01) == pytest.approx(1 - 0.99**5)
    # A re-tokenized trace opens thousands of pairs: a coefficient beyond a float, a tail far below 1e-16.
    rate = Fraction(86, 100_000)
    exact = sum(comb(1100, i) * rate**i * (1 - rate) ** (1100 - i) for i in range(400, 1101))
    assert binomial_tail(400, 1100, float(rate)) == pytest.approx(float(exact), rel=1e-9)
    assert 0 < binomial_tail(177, 3840, 8.6e-4) < 1e-100
    assert binomial_tail(1101, 1100, 0.5) == 0.0


def test_bad_evidence_is_a_typed_error(heads: HeadBundle, tokenizer: Tokenizer) -> None:
    block = RevealedBlock(
        0, np.zeros(EMBED_DIM, dtype=np.int8), (0,), (b" a",), np.zeros((1, EMBED_DIM), np.int8)
    )
    with pytest.raises(ProtocolError, match="NaN"):
        Revealed(1, np.full(EMBED_DIM, np.nan), (block,))
    with pytest.raises(ProtocolError, match="no revealed blocks"):
        Revealed(1, np.zeros(EMBED_DIM, dtype=np.int8), ())
    with pytest.raises(ProtocolError, match="shape"):
        Revealed(1, np.zeros(10, dtype=np.int8), (block,))
    wrong = RevealedBlock(
        0, np.zeros(EMBED_DIM, np.int8), (0, 1), (b" a",), np.zeros((1, EMBED_DIM), np.int8)
    )
    with pytest.raises(ProtocolError, match="wrong shape"):
        Revealed(1, np.zeros(EMBED_DIM, dtype=np.int8), (wrong,))
    with pytest.raises(ProtocolError, match="out of range"):
        Revealed(1, np.zeros(EMBED_DIM, dtype=np.int8), (_moved(block, 3),))
    ok = Revealed(1, np.zeros(EMBED_DIM, dtype=np.int8), (block,))
    evidence = evidence_of(ok, heads, tokenizer)
    assert evidence.features.shape == (1, len(FEATURE_NAMES))
    assert not evidence.features.any()  # a lone block has nothing to be compared with


def _moved(block: RevealedBlock, index: int) -> RevealedBlock:
    return RevealedBlock(index, block.codes, block.token_indices, block.tokens, block.token_codes)


def test_empty_traces_and_mismatches_are_refused(suite: SemanticSuite, heads: HeadBundle) -> None:
    with pytest.raises(ProtocolError):
        commit([], "answer", bytes(32), block_size=B, embedder=HashEmbedder())
    with pytest.raises(ChallengeError):
        plan_exposure(0, B, ExposurePolicy(), random.Random(0))
    tokens = words(40)
    embedder = HashEmbedder()
    public, openings = commit(tokens, "a", bytes(32), block_size=B, embedder=embedder)
    challenge = Challenge(40, 32, (0, 39), (0,), (1,))
    with pytest.raises(ProtocolError, match="block_size"):
        verify_response(public, challenge, openings.respond([0, 1, 39], [1]), embedder=embedder)
    other = load_heads()
    with pytest.raises(ModelError):
        load_heads(embd_id="all-MiniLM-L6-v2@not-this-one-000")
    opened = opened_for(tokens, challenge_for(40, [0], [1]))
    with pytest.raises(ProtocolError, match="embd_id"):
        check(SemanticSuite(other, suite.tokenizer), "tokens_to_block")(opened)
    assert revealed_from_opened(opened).blocks[0].tokens == (tokens[1],)


# --- the real model: honest versus inflated on real traces ---------------------------------------------


@pytest.fixture(scope="module")
def real() -> tuple[Auditor, AttackContext, list[Trace]]:
    from auditor.protocol.fingerprint import get_embedder

    embedder = get_embedder("cpu")
    bundle = load_heads(embd_id=embedder.embd_id)
    tok = get_tokenizer("qwen2")
    traces = load_traces([TRACES / "huatuogpt_o1_medical_gpt4o_cot.jsonl"])
    picked = [t for t in traces if 250 <= len(tok.tokenize(t.reasoning)) <= 350][:3]
    ctx = AttackContext(
        tok, traces[:60] + load_traces([TRACES / "thinkingllms_general_r1distill.jsonl"])[:20]
    )
    return Auditor(embedder, SemanticSuite(bundle, tok), EvalConfig()), ctx, picked


@pytest.mark.model
def test_real_honest_traces_pass_and_inflated_ones_fail(
    real: tuple[Auditor, AttackContext, list[Trace]],
) -> None:
    from auditor.research.attacks import inflate

    auditor, ctx, picked = real
    honest = [auditor.audit(t, ctx.tokens(t), None, random.Random(1), len(ctx.tokens(t))) for t in picked]
    assert all(o.verdict in ("pass", "suspect") for o in honest)  # never `fail`: no proof against them
    assert sum(o.verdict == "pass" for o in honest) >= len(picked) - 1
    genuine = len(ctx.tokens(picked[0]))
    padded = inflate(picked[0], "pad_repeat_last", 1.0, random.Random(2), ctx)
    outcome = auditor.audit(picked[0], padded.tokens, padded, random.Random(2), genuine)
    # CoIn's padding is identified (proof), not judged.
    assert outcome.verdict == "fail" and "repeated_token" in outcome.failed_checks
    overclaimed = inflate(picked[0], "overclaim", 1.0, random.Random(3), ctx)
    outcome = auditor.audit(picked[0], overclaimed.tokens, overclaimed, random.Random(3), genuine)
    assert outcome.verdict == "fail" and outcome.failed_checks == ("proof",)


def test_the_services_verifier_decides_on_the_capped_plan_of_a_long_trace(embedder: Embedder) -> None:
    """Beyond MAX_PLAN_BLOCKS the service's plan reveals fewer than 25 % of the blocks; the verifier must
    plan with it, or a clean sample of a long honest trace never spends its budget and ends inconclusive
    (it planned 1,000+ blocks of which 256 were ever revealed)."""
    reasoning, size = "", 0
    for record in read_traces("pm_llm_benchmark_process_mining_part1.jsonl", 50):
        reasoning += record["reasoning"] + "\n\n"
        size = len(get_tokenizer("qwen2").tokenize(reasoning))
        if size > 4 * MAX_PLAN_BLOCKS * B:
            break
    public, openings = commit(reasoning, "done", b"\x07" * 32, embedder=embedder)
    plan = plan_for(public.commitment, "00" * 32, full_exposure=True)
    assert len(plan.blocks) == MAX_PLAN_BLOCKS
    challenge = plan.challenge(0)
    response = openings.respond(challenge.indices, challenge.content_indices).to_json()
    assert len(json.dumps(response)) <= response_bytes_bound(public.commitment)  # what intake relies on
    policy = exposure_policy(public.commitment.size, public.commitment.block_size)
    result = verify_round(Settings(), public, challenge, response, copy_rule=COPY_RULE, policy=policy)
    [verifier] = [c for c in result.evidence["checks"] if c["name"] == "verifier"]
    assert f"{MAX_PLAN_BLOCKS} of {MAX_PLAN_BLOCKS} planned blocks revealed" in verifier["detail"]
    assert verifier["outcome"] != "inconclusive" and not result.wants_more_blocks
