"""The attack suite (auditor.research.attacks): requested IR, determinism, genuine tokens kept in order."""

import random
from pathlib import Path

import pytest

from auditor.protocol.errors import ProtocolError
from auditor.protocol.tokenize import Tokenizer, get_tokenizer
from auditor.research.attacks import (
    ATTACKS,
    COPY_ATTACKS,
    HEAD_ATTACKS,
    AttackContext,
    CopyPlacement,
    InflatedTrace,
    Placement,
    copy_insertions,
    copy_units,
    inflate,
    place,
    retokenize,
)
from auditor.research.traces import Trace, load_traces

TRACES = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "traces"
CONTENT = [name for name, spec in ATTACKS.items() if spec.kind != "structural"]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return get_tokenizer("qwen2")


@pytest.fixture(scope="module")
def pool() -> list[Trace]:
    files = [TRACES / "thinkingllms_general_r1distill.jsonl", TRACES / "huatuogpt_o1_medical_gpt4o_cot.jsonl"]
    traces = load_traces(files)
    return traces[:40] + traces[-40:]


@pytest.fixture(scope="module")
def ctx(tokenizer: Tokenizer, pool: list[Trace]) -> AttackContext:
    return AttackContext(tokenizer, pool, block_size=16, markov_corpus_tokens=20_000)


@pytest.fixture(scope="module")
def victim(pool: list[Trace]) -> Trace:
    return pool[3]


@pytest.mark.parametrize("attack", CONTENT)
@pytest.mark.parametrize("ir", [0.1, 0.5, 1.0])
def test_content_attack_reaches_ir_and_keeps_genuine_tokens(
    ctx: AttackContext, victim: Trace, attack: str, ir: float
) -> None:
    genuine = ctx.tokens(victim)
    inflated = inflate(victim, attack, ir, random.Random(7), ctx)
    assert inflated.genuine_count == len(genuine)
    assert inflated.claimed_size == len(inflated.tokens) == len(inflated.injected)
    assert inflated.ir == pytest.approx(ir, rel=0.02, abs=2 / len(genuine))
    if attack == "retokenize":
        # Same text, more (shorter) tokens, each still a vocabulary token.
        assert b"".join(inflated.tokens) == b"".join(genuine)
        assert all(ctx.tokenizer.is_token(t) for t in inflated.tokens)
    else:
        kept = [t for t, injected in zip(inflated.tokens, inflated.injected, strict=True) if not injected]
        assert kept == genuine
        assert sum(inflated.injected) == inflated.claimed_size - len(genuine)


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_attacks_are_deterministic_with_a_seed(ctx: AttackContext, victim: Trace, attack: str) -> None:
    first = inflate(victim, attack, 0.25, random.Random(11), ctx)
    second = inflate(victim, attack, 0.25, random.Random(11), ctx)
    assert first == second
    if ATTACKS[attack].kind != "structural" and attack != "pad_repeat_last":
        other = inflate(victim, attack, 0.25, random.Random(12), ctx)
        assert other.tokens != first.tokens


@pytest.mark.parametrize("attack", ["overclaim", "coin_padding"])
def test_structural_attacks_claim_more_than_they_commit(
    ctx: AttackContext, victim: Trace, attack: str
) -> None:
    inflated = inflate(victim, attack, 0.5, random.Random(1), ctx)
    m = len(ctx.tokens(victim))
    assert list(inflated.tokens) == ctx.tokens(victim)
    assert inflated.claimed_size == m + round(0.5 * m)
    assert inflated.structural == ("overclaim" if attack == "overclaim" else "duplicate_last_leaf")


def test_similar_question_uses_another_question_of_the_same_domain(ctx: AttackContext, victim: Trace) -> None:
    ranked = ctx.similar_traces(victim)
    assert ranked and all(t.domain == victim.domain and t.question != victim.question for t in ranked)


def test_random_tokens_are_vocabulary_tokens(ctx: AttackContext, victim: Trace) -> None:
    inflated = inflate(victim, "random_tokens", 1.0, random.Random(3), ctx)
    injected = [t for t, m in zip(inflated.tokens, inflated.injected, strict=True) if m]
    assert all(ctx.tokenizer.is_token(t) for t in injected)
    assert len(set(injected)) > len(injected) // 2


@pytest.mark.parametrize("placement", list(Placement))
def test_placement_keeps_both_orders(placement: Placement) -> None:
    genuine = [f"g{k}.".encode() for k in range(50)]
    injected = [f"i{k}".encode() for k in range(30)]
    tokens, mask = place(genuine, injected, placement, random.Random(5), block_size=16)
    assert [t for t, m in zip(tokens, mask, strict=True) if not m] == genuine
    assert [t for t, m in zip(tokens, mask, strict=True) if m] == injected
    if placement == Placement.APPEND:
        assert tokens[-30:] == injected


def test_retokenize_gives_up_gracefully_on_unsplittable_tokens(tokenizer: Tokenizer) -> None:
    tokens, mask = retokenize([b"a", b"b"], 5, tokenizer, random.Random(0))
    assert tokens == [b"a", b"b"] and mask == [False, False]


def test_retokenize_at_high_ir_stays_close(ctx: AttackContext, victim: Trace) -> None:
    inflated = inflate(victim, "retokenize", 2.0, random.Random(2), ctx)
    assert inflated.ir == pytest.approx(2.0, rel=0.05)


def test_bad_input_is_a_typed_error(ctx: AttackContext, victim: Trace) -> None:
    with pytest.raises(ProtocolError, match="unknown"):
        inflate(victim, "nonsense", 1.0, random.Random(0), ctx)
    with pytest.raises(ProtocolError, match="positive"):
        inflate(victim, "filler", 0.0, random.Random(0), ctx)
    tiny = Trace("tiny", victim.domain, "m", victim.question, "Hi", victim.answer)
    with pytest.raises(ProtocolError, match="at least 2"):
        inflate(tiny, "filler", 1.0, random.Random(0), ctx)
    lonely = AttackContext(ctx.tokenizer, [victim])
    with pytest.raises(ProtocolError, match="other_domain"):
        inflate(victim, "other_domain", 1.0, random.Random(0), lonely)
    with pytest.raises(ProtocolError, match="similar_question"):
        inflate(victim, "similar_question", 1.0, random.Random(0), lonely)


def _pasted(inflated: InflatedTrace) -> list[list[bytes]]:
    """The injected runs of an inflated trace, in order."""
    runs: list[list[bytes]] = []
    for k, (token, injected) in enumerate(zip(inflated.tokens, inflated.injected, strict=True)):
        if injected:
            if not k or not inflated.injected[k - 1]:
                runs.append([])
            runs[-1].append(token)
    return runs


@pytest.mark.parametrize("paragraphs", [False, True])
def test_copy_units_are_whole_sentences_or_paragraphs(
    ctx: AttackContext, victim: Trace, paragraphs: bool
) -> None:
    genuine = ctx.tokens(victim)
    units = copy_units(genuine, paragraphs)
    assert all(b - a >= 4 for a, b in units) and units == sorted(units)
    for a, _ in units:
        assert a == 0 or genuine[a - 1].rstrip().endswith((b".", b"\n", b"?", b"!"))
        assert not paragraphs or a == 0 or b"\n" in genuine[a - 1] or genuine[a].startswith(b"\n")


def test_near_copies_follow_their_source_and_each_unit_is_pasted_once(
    ctx: AttackContext, victim: Trace
) -> None:
    inflated = inflate(victim, "copy_sentence_near", 0.5, random.Random(4), ctx)
    runs = _pasted(inflated)
    texts = [b"".join(run) for run in runs[:-1]]  # the last may be cut to reach the IR
    assert len(set(texts)) == len(texts)
    joined = list(inflated.tokens)
    for run in runs[:-1]:
        k = next(i for i in range(len(joined)) if joined[i : i + len(run)] == run)
        assert joined[k + len(run) : k + 2 * len(run)] == run  # "X X": the copy right after its source


def test_a_passage_is_pasted_in_its_own_order_far_from_itself(ctx: AttackContext, victim: Trace) -> None:
    genuine = ctx.tokens(victim)
    n = len(genuine) // 4
    insertions = copy_insertions(genuine, n, random.Random(5), False, CopyPlacement.PASSAGE)
    assert sum(len(chunk) for _, chunk in insertions) == n
    for position, chunk in insertions:
        start = next(k for k in range(len(genuine)) if genuine[k : k + len(chunk)] == chunk)
        assert abs(position - start) >= len(genuine) / 3


def test_the_heads_do_not_train_on_the_copiers() -> None:
    assert COPY_ATTACKS[0] == "self_duplicate" and len(COPY_ATTACKS) == 8
    assert "self_duplicate" in HEAD_ATTACKS and not set(COPY_ATTACKS[1:]) & set(HEAD_ATTACKS)
    with pytest.raises(ProtocolError, match="pastes by its own rule"):
        inflate(Trace("t", "d", "m", "q", "A b c d. E f g h.", "a"), "copy_passage", 1.0, random.Random(0),
                AttackContext(get_tokenizer("qwen2"), []), placement=Placement.APPEND)  # fmt: skip
