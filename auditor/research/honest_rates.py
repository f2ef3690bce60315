"""How close honest reasoning comes to firing the proof-level checks (checks 6 and 7 of DESIGN §3).

A proof-level check must never fire on honest text. `measure` runs over every token, every adjacent
pair and every block of the honest tokenization of each trace (nothing is sampled except the attack
pairs and, above `max_embedded`, the blocks embedded for the repeated-token look) and reports, per
trace and per domain, model family and length band:

1. tokens outside the vocabulary (`Tokenizer.is_token`);
2. adjacent pairs that merge when re-tokenized (`merges_when_retokenized`, what `RetokenizationCheck`
   counts), with examples and their causes, and the fires of the stricter split rules of `proves_split`
   on honest pairs, on perturbed honest text (`stress_texts`) and on retokenize-attack pairs;
3. blocks that are one token repeated (aligned at `block_size` and at twice it), and for blocks whose
   most frequent token has a share >= `repeat_share`, the cosine `RepeatedTokenCheck` would compute;
4. pairs of blocks with identical token sequences (the statistical duplicate check).

Why honest pairs can merge: byte-level BPE (tiktoken) merges inside one pre-tokenizer chunk until no
adjacent pair concatenates to a vocabulary token, so an honest pair (a, b) with a + b in the vocabulary
can only sit across a chunk boundary of the pre-tokenizer regex. `proves_split` therefore asks whether
the tokenizer ever puts a token boundary between a and b when the pair is written inside a fixed set of
short contexts that realise the regex's chunk boundaries.
"""

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any

from auditor.protocol.fingerprint import EmbeddingModel, cosine, decode_token, quantize
from auditor.protocol.tokenize import Tokenizer
from auditor.research.evaluation.summary import length_band
from auditor.research.traces import Trace, model_family
from auditor.semantic.tokenization import CONTEXTS, Contexts, SplitRule, merges_when_retokenized, proves_split

MINIMAL_CONTEXTS = Contexts(
    left=("", " ", "\n", "a", "1", "(", "'", "'r", "'v", "'l"),
    right=("", " ", "a", "1", "."),
)

SPLIT_RULES: tuple[SplitRule, ...] = ("pair", "clean", "boundary")
# Each rule with the full and with the minimal contexts, by name ("boundary", "boundary@minimal", ...).
SPLIT_VARIANTS: dict[str, tuple[SplitRule, Contexts]] = {
    f"{rule}{suffix}": (rule, contexts)
    for suffix, contexts in (("", CONTEXTS), ("@minimal", MINIMAL_CONTEXTS))
    for rule in SPLIT_RULES
}
RECOMMENDED_RULE = "boundary"

MAX_EXAMPLES = 50


def merge_cause(first: bytes, second: bytes) -> str:
    """A coarse label for why an honest pair merges when re-tokenized alone."""
    a, b = decode_token(first), decode_token(second)
    if a.isspace() and b.isspace():
        return "whitespace run split before a non-space (regex \\s+(?!\\S))"
    if a and not any(c.isalnum() or c.isspace() for c in a) and b[:1].isalpha():
        return "punctuation run split from the letters after it (regex ' ?[^\\s\\p{L}\\p{N}]+')"
    if a[-1:].isalpha() and not b[:1].isalnum():
        return "letters then punctuation"
    if a[-1:].isdigit() or b[:1].isdigit():
        return "digits"
    return "other"


@dataclass
class PairMemo:
    """Per distinct adjacent pair: does it merge, and does each split rule fire (computed once)."""

    tokenizer: Tokenizer
    merges: dict[tuple[bytes, bytes], bool] = field(default_factory=dict)
    fires: dict[tuple[bytes, bytes, str], bool] = field(default_factory=dict)

    def merge(self, pair: tuple[bytes, bytes]) -> bool:
        if pair not in self.merges:
            self.merges[pair] = merges_when_retokenized(pair[0], pair[1], self.tokenizer)
        return self.merges[pair]

    def fire(self, pair: tuple[bytes, bytes], variant: str) -> bool:
        key = (pair[0], pair[1], variant)
        if key not in self.fires:
            rule, contexts = SPLIT_VARIANTS[variant]
            self.fires[key] = proves_split(pair[0], pair[1], self.tokenizer, rule, contexts)
        return self.fires[key]


@dataclass
class TraceCounts:
    id: str
    domain: str
    family: str
    band: str
    tokens: int
    pairs: int = 0
    non_tokens: int = 0
    merges: int = 0
    split_fires: dict[str, int] = field(default_factory=dict)
    blocks: int = 0
    uniform_blocks: int = 0
    uniform_blocks_double: int = 0
    repeat_candidates: int = 0
    repeat_max_cosine: float | None = None
    duplicate_block_pairs: int = 0
    longest_run: int = 0
    longest_run_token: str = ""


@dataclass(frozen=True)
class RepeatCandidate:
    trace: int
    block: int
    token: bytes
    share: float
    length: int
    text: str
    rebuilt: str


def longest_run(tokens: Sequence[bytes]) -> tuple[int, bytes]:
    """The longest run of one token repeated, and that token: a run of 2B - 1 or more contains a whole
    one-token block of size B whatever the alignment."""
    best, best_token, run = 0, b"", 0
    for k, token in enumerate(tokens):
        run = run + 1 if k and token == tokens[k - 1] else 1
        if run > best:
            best, best_token = run, token
    return best, best_token


def _uniform_blocks(tokens: Sequence[bytes], size: int) -> int:
    """Blocks of two or more tokens that are one token repeated (what RepeatedTokenCheck exempts:
    one-token blocks)."""
    blocks = (tokens[s : s + size] for s in range(0, len(tokens), size))
    return sum(len(block) >= 2 and len(set(block)) == 1 for block in blocks)


def count_trace(
    trace: Trace,
    tokens: Sequence[bytes],
    memo: PairMemo,
    block_size: int,
    examples: dict[tuple[bytes, bytes], dict[str, Any]],
    pair_counts: Counter[tuple[bytes, bytes]],
) -> TraceCounts:
    """Checks 1, 2, 3 (without embeddings) and 4 over one trace's honest tokenization."""
    counts = TraceCounts(
        trace.id, trace.domain, model_family(trace.model), length_band(len(tokens)), len(tokens)
    )
    counts.pairs = max(0, len(tokens) - 1)
    outside = {t for t in set(tokens) if not memo.tokenizer.is_token(t)}
    counts.non_tokens = sum(t in outside for t in tokens)
    counts.split_fires = dict.fromkeys(SPLIT_VARIANTS, 0)
    for k, pair in enumerate(pairwise(tokens)):
        if not memo.merge(pair):
            continue
        counts.merges += 1
        pair_counts[pair] += 1
        for variant in SPLIT_VARIANTS:
            counts.split_fires[variant] += memo.fire(pair, variant)
        if pair not in examples:
            examples[pair] = {
                "a": repr(pair[0]),
                "b": repr(pair[1]),
                "trace": trace.id,
                "position": k,
                "context": [repr(t) for t in tokens[max(0, k - 5) : k + 7]],
                "cause": merge_cause(*pair),
            }
    blocks = [tuple(tokens[s : s + block_size]) for s in range(0, len(tokens), block_size)]
    counts.blocks = len(blocks)
    counts.uniform_blocks = _uniform_blocks(tokens, block_size)
    counts.uniform_blocks_double = _uniform_blocks(tokens, 2 * block_size)
    counts.duplicate_block_pairs = sum(c * (c - 1) // 2 for c in Counter(blocks).values())
    run, token = longest_run(tokens)
    counts.longest_run, counts.longest_run_token = run, repr(token)
    return counts


def repeat_candidates(
    tokens: Sequence[bytes], trace_index: int, block_size: int, min_share: float
) -> list[RepeatCandidate]:
    """(block, t) for each block of >= 2 tokens and each token t with a share >= min_share of it (with
    min_share 0.5, at most two: a two-token block offers both of its tokens), with the text
    RepeatedTokenCheck would rebuild if t were the opened token (t repeated over the block's length)."""
    found = []
    for j, start in enumerate(range(0, len(tokens), block_size)):
        block = tokens[start : start + block_size]
        if len(block) < 2:
            continue
        text = decode_token(b"".join(block))
        for token, count in Counter(block).items():
            if count / len(block) >= min_share:
                rebuilt = decode_token(token * len(block))
                share = count / len(block)
                found.append(RepeatCandidate(trace_index, j, token, share, len(block), text, rebuilt))
    return found


def repeat_cosines(
    candidates: Sequence[RepeatCandidate], embedder: EmbeddingModel, batch_size: int = 256
) -> list[float]:
    """cosine(q(Embd(block text)), q(Embd(token repeated))) on int8 codes, as RepeatedTokenCheck."""
    sims: list[float] = []
    for start in range(0, len(candidates), batch_size):
        batch = candidates[start : start + batch_size]
        blocks = quantize(embedder.embed_texts([c.text for c in batch]))
        rebuilt = quantize(embedder.embed_texts([c.rebuilt for c in batch]))
        sims.extend(float(s) for s in cosine(blocks, rebuilt))
    return sims


def attack_pairs(
    token_lists: Iterable[Sequence[bytes]], tokenizer: Tokenizer, n: int, seed: int
) -> list[tuple[bytes, bytes]]:
    """n retokenize-attack pairs as `auditor.research.attacks._split_token` makes them: a genuine
    multi-byte token, drawn uniformly over all occurrences, cut at a random point where both halves
    are vocabulary tokens."""
    occurrences: Counter[bytes] = Counter(t for tokens in token_lists for t in tokens if len(t) > 1)
    rng = random.Random(seed)
    distinct = list(occurrences)
    drawn = rng.choices(distinct, weights=[occurrences[t] for t in distinct], k=n)
    pairs = []
    for token in drawn:
        cuts = [
            k for k in range(1, len(token)) if tokenizer.is_token(token[:k]) and tokenizer.is_token(token[k:])
        ]
        if cuts:
            cut = rng.choice(cuts)
            pairs.append((token[:cut], token[cut:]))
    return pairs


STRESS_INSERTS = (
    *"()[]{}<>.,;:!?'\"-_/\\|*^$#@%&+=~`’“”—–…·•§¶°±×÷√∞≤≥≠αβ中日한ñéü",
    *(
        " ",
        "  ",
        "\n",
        "\t",
        "\n\n",
        "'s",
        "'ll",
        "'RE",
        "'Ve",
        "\u0301",
        "\u200b",
        "\u00a0",
        "😀",
        "１",
        "٣",
    ),
)


def stress_texts(traces: Sequence[Trace], n: int, seed: int, length: int = 300) -> list[str]:
    """Honest text made harder: n windows of honest reasoning with 5-40 punctuation, whitespace,
    contraction and non-ASCII characters inserted at random places (still honest: the tokenizer writes
    the tokens), to probe chunk boundaries the traces rarely show."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        reasoning = rng.choice(traces).reasoning
        start = rng.randrange(max(1, len(reasoning) - length))
        chars = list(reasoning[start : start + length])
        for _ in range(rng.randint(5, 40)):
            chars.insert(rng.randrange(len(chars) + 1), rng.choice(STRESS_INSERTS))
        texts.append("".join(chars))
    return texts


def _aggregate(rows: Sequence[TraceCounts]) -> dict[str, Any]:
    cosines = [r.repeat_max_cosine for r in rows if r.repeat_max_cosine is not None]
    with_duplicates = sum(r.duplicate_block_pairs > 0 for r in rows)
    return {
        "traces": len(rows),
        "tokens": sum(r.tokens for r in rows),
        "pairs": sum(r.pairs for r in rows),
        "non_tokens": sum(r.non_tokens for r in rows),
        "merges": sum(r.merges for r in rows),
        "traces_with_merge": sum(r.merges > 0 for r in rows),
        "max_merges_per_trace": max((r.merges for r in rows), default=0),
        "split_fires": {v: sum(r.split_fires[v] for r in rows) for v in SPLIT_VARIANTS},
        "blocks": sum(r.blocks for r in rows),
        "uniform_blocks": sum(r.uniform_blocks for r in rows),
        "uniform_blocks_double": sum(r.uniform_blocks_double for r in rows),
        "repeat_candidates": sum(r.repeat_candidates for r in rows),
        "repeat_max_cosine": max(cosines, default=None),
        "duplicate_block_pairs": sum(r.duplicate_block_pairs for r in rows),
        "traces_with_duplicate_blocks": with_duplicates,
        "share_with_duplicate_blocks": with_duplicates / len(rows) if rows else 0.0,
        "max_duplicate_pairs_per_trace": max((r.duplicate_block_pairs for r in rows), default=0),
        "longest_token_run": max((r.longest_run for r in rows), default=0),
    }


def _grouped(rows: Sequence[TraceCounts], key: str) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[TraceCounts]] = {}
    for row in rows:
        groups.setdefault(str(getattr(row, key)), []).append(row)
    return {name: _aggregate(groups[name]) for name in sorted(groups)}


def _rule_rates(pairs: Sequence[tuple[bytes, bytes]], memo: PairMemo) -> dict[str, Any]:
    """How often each split rule fires on these pairs (attack pairs: the catch rate)."""
    out: dict[str, Any] = {"pairs": len(pairs)}
    for variant in SPLIT_VARIANTS:
        fired = sum(memo.fire(p, variant) for p in pairs)
        out[variant] = {"fires": fired, "share": fired / len(pairs) if pairs else 0.0}
    return out


def measure(
    traces: Sequence[Trace],
    tokenizer: Tokenizer,
    embedder: EmbeddingModel,
    *,
    block_size: int = 16,
    repeat_share: float = 0.5,
    max_embedded: int = 30_000,
    attack_count: int = 20_000,
    stress_count: int = 30_000,
    seed: int = 0,
) -> dict[str, Any]:
    """All the figures of the module docstring, JSON-serialisable."""
    memo = PairMemo(tokenizer)
    token_lists = [tokenizer.tokenize(t.reasoning) for t in traces]
    examples: dict[tuple[bytes, bytes], dict[str, Any]] = {}
    pair_counts: Counter[tuple[bytes, bytes]] = Counter()
    rows = [
        count_trace(trace, tokens, memo, block_size, examples, pair_counts)
        for trace, tokens in zip(traces, token_lists, strict=True)
    ]

    candidates = [
        c
        for k, tokens in enumerate(token_lists)
        for c in repeat_candidates(tokens, k, block_size, repeat_share)
    ]
    found = len(candidates)
    if found > max_embedded:
        candidates = random.Random(seed).sample(candidates, max_embedded)
    sims = repeat_cosines(candidates, embedder)
    for candidate, sim in zip(candidates, sims, strict=True):
        row = rows[candidate.trace]
        row.repeat_candidates += 1
        row.repeat_max_cosine = max(sim, row.repeat_max_cosine or -1.0)
    ranked = sorted(zip(sims, candidates, strict=True), key=lambda sc: -sc[0])
    top = [
        {
            "cosine": round(sim, 4),
            "trace": traces[c.trace].id,
            "block": c.block,
            "token": repr(c.token),
            "share": round(c.share, 3),
            "length": c.length,
            "text": c.text,
        }
        for sim, c in ranked[:10]
    ]

    causes: Counter[str] = Counter()
    for pair, n in pair_counts.items():
        causes[merge_cause(*pair)] += n
    frequent = sorted(pair_counts, key=lambda p: -pair_counts[p])[:MAX_EXAMPLES]

    stress_merges: Counter[tuple[bytes, bytes]] = Counter()
    stress_total = 0
    for text in stress_texts(traces, stress_count, seed):
        tokens = tokenizer.tokenize(text)
        stress_total += max(0, len(tokens) - 1)
        stress_merges.update(p for p in pairwise(tokens) if memo.merge(p))
    stress_fires = {v: sum(n for p, n in stress_merges.items() if memo.fire(p, v)) for v in SPLIT_VARIANTS}

    attacks = attack_pairs(token_lists, tokenizer, attack_count, seed)
    attack_rates = _rule_rates(attacks, memo)
    missed = Counter(p for p in attacks if not memo.fire(p, RECOMMENDED_RULE))
    attack_rates["undecodable"] = sum(not _decodes(a + b) for a, b in attacks)
    attack_rates["top_missed_by_recommended"] = [
        {"a": repr(a), "b": repr(b), "count": n} for (a, b), n in missed.most_common(20)
    ]

    overall = _aggregate(rows)
    return {
        "block_size": block_size,
        "overall": overall,
        "by_domain": _grouped(rows, "domain"),
        "by_family": _grouped(rows, "family"),
        "by_length": _grouped(rows, "band"),
        "merges": {
            "distinct_pairs": len(pair_counts),
            "causes": dict(causes.most_common()),
            "examples": [{**examples[p], "count": pair_counts[p]} for p in frequent],
        },
        "split_rules": {
            "recommended": RECOMMENDED_RULE,
            "contexts": asdict(CONTEXTS),
            "minimal_contexts": asdict(MINIMAL_CONTEXTS),
            "honest_fires": overall["split_fires"],
            "stress": {"texts": stress_count, "pairs": stress_total, "fires": stress_fires},
            "attack": attack_rates,
        },
        "repeated_token": {
            "min_share": repeat_share,
            "candidates": found,
            "blocks": len({(c.trace, c.block) for c in candidates}),
            "embedded": len(candidates),
            "sampled": found > len(candidates),
            "max_cosine": max(sims, default=None),
            "at_or_above": {str(t): sum(s >= t for s in sims) for t in (0.8, 0.9, 0.95, 0.98)},
            "top": top,
            "longest_runs": [
                {"trace": r.id, "run": r.longest_run, "token": r.longest_run_token}
                for r in sorted(rows, key=lambda r: -r.longest_run)[:10]
            ],
        },
        "traces": [asdict(r) for r in rows],
    }


def _decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
