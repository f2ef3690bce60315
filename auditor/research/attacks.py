"""The attack suite: turn a genuine trace into an inflated one (DESIGN §6, "Attack suite").

Every attack works on token bytes (the provider commits tokens, DESIGN §3) and is parameterised by the
inflation ratio IR = injected tokens / genuine tokens. Content attacks produce the token list the
provider commits faithfully (so checks 1–3 pass and only the semantic checks can catch them); the two
structural attacks keep the genuine tokens and over-claim the count, which only the count openings can
catch. Each attack is deterministic given its `random.Random`.

Naive: `random_tokens` (random vocabulary tokens), `other_domain` (reasoning of another domain).
Adaptive: `similar_question` (reasoning of the most similar *other* question in the same domain),
`prompt_answer` (spans of the prompt and answer repeated), `filler` (generic self-verification sentences
in the trace's own style), `self_duplicate` (the trace's own spans copied, unaligned to blocks),
`markov` (a token trigram model fit on same-domain traces — a stand-in for a small LM), `retokenize`
(genuine tokens split into more, shorter vocabulary tokens), `pad_repeat_last` (CoIn's padding with fresh
leaf indices: the last token repeated), `overclaim` (claimed size > committed leaves) and
`coin_padding` (CoIn's duplicate-last-leaf padding: the tree is padded with copies of the last leaf hash).

Placement follows what a real provider would do: `append` (after the genuine trace), `blocks`
(chunks of 1–4 blocks interleaved at sentence boundaries) or `spread` (runs of 1–3 tokens anywhere).
"""

import random
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from auditor.protocol.commitment import DEFAULT_BLOCK_SIZE
from auditor.protocol.errors import ProtocolError
from auditor.protocol.tokenize import Tokenizer
from auditor.research.traces import Trace, stable_fraction


class Placement(StrEnum):
    APPEND = "append"
    BLOCKS = "blocks"
    SPREAD = "spread"


Structural = Literal["none", "overclaim", "duplicate_last_leaf"]


@dataclass(frozen=True)
class InflatedTrace:
    """What an inflating provider commits (`tokens`) and claims (`claimed_size`).

    `injected[i]` marks committed tokens that are not genuine reasoning (for `retokenize`: every piece
    of a split token). `structural` names how an over-claimed count is backed in the tree."""

    attack: str
    requested_ir: float
    placement: Placement
    tokens: tuple[bytes, ...]
    injected: tuple[bool, ...]
    genuine_count: int
    claimed_size: int
    structural: Structural = "none"

    @property
    def ir(self) -> float:
        """Achieved inflation ratio: extra claimed tokens over genuine tokens."""
        return (self.claimed_size - self.genuine_count) / self.genuine_count


# --- the attacker's resources ----------------------------------------------------------------------

_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")
_FILLER_OPENERS = (
    "wait",
    "hmm",
    "let me",
    "okay",
    "ok,",
    "alternatively",
    "hold on",
    "actually",
    "so,",
    "but",
)
_FILLER_WORDS = (
    "check",
    "verify",
    "sure",
    "confirm",
    "again",
    "double",
    "correct",
    "right",
    "mistake",
    "think",
)
GENERIC_FILLER = (
    "Wait, let me double-check that.",
    "Hmm, let me verify this again.",
    "Let me make sure I haven't missed anything.",
    "Okay, so far this seems right.",
    "Wait, is that correct? Let me think again.",
    "Let me go through this one more time to be sure.",
    "Hmm, I should confirm this step.",
    "Actually, let me re-check the reasoning above.",
)


def _is_filler(sentence: str) -> bool:
    words = sentence.split()
    lowered = sentence.strip().lower()
    return (
        3 <= len(words) <= 14
        and lowered.startswith(_FILLER_OPENERS)
        and any(word in lowered for word in _FILLER_WORDS)
    )


class TrigramModel:
    """A token trigram model with back-off to bigrams and unigrams, sampled by occurrence counts."""

    def __init__(self, sequences: Sequence[Sequence[bytes]]) -> None:
        self.trigrams: dict[tuple[bytes, bytes], list[bytes]] = defaultdict(list)
        self.bigrams: dict[bytes, list[bytes]] = defaultdict(list)
        self.unigrams: list[bytes] = []
        for seq in sequences:
            for k, token in enumerate(seq):
                self.unigrams.append(token)
                if k >= 1:
                    self.bigrams[seq[k - 1]].append(token)
                if k >= 2:
                    self.trigrams[(seq[k - 2], seq[k - 1])].append(token)
        if not self.unigrams:
            raise ProtocolError("markov: no training tokens for the trigram model")

    def sample(self, n: int, rng: random.Random) -> list[bytes]:
        out = [rng.choice(self.unigrams)]
        while len(out) < n:
            options = self.trigrams.get((out[-2], out[-1])) if len(out) >= 2 else None
            options = options or self.bigrams.get(out[-1]) or self.unigrams
            out.append(rng.choice(options))
        return out[:n]


@dataclass
class AttackContext:
    """Everything an attacker can draw on: a pool of other traces (its own logs) and the tokenizer.

    Derived resources (tokenizations, question similarity, trigram models, filler banks) are built
    lazily and kept, so one context serves many attacks."""

    tokenizer: Tokenizer
    pool: Sequence[Trace]
    block_size: int = DEFAULT_BLOCK_SIZE
    markov_corpus_tokens: int = 150_000
    _tokens: dict[str, list[bytes]] = field(default_factory=dict, repr=False)
    _neighbours: dict[str, list[Trace]] = field(default_factory=dict, repr=False)
    _indexed_domains: set[str] = field(default_factory=set, repr=False)
    _markov: dict[tuple[str, int], TrigramModel] = field(default_factory=dict, repr=False)
    _filler: dict[str, list[str]] = field(default_factory=dict, repr=False)
    _vocabulary: list[bytes] = field(default_factory=list, repr=False)

    def tokens(self, trace: Trace) -> list[bytes]:
        if trace.id not in self._tokens:
            self._tokens[trace.id] = self.tokenizer.tokenize(trace.reasoning)
        return self._tokens[trace.id]

    def similar_traces(self, trace: Trace) -> list[Trace]:
        """Same-domain traces of *other* questions, most similar question first (TF-IDF cosine)."""
        if trace.domain not in self._indexed_domains:
            self._index_domain(trace.domain)
        ranked = self._neighbours.get(trace.question, [])
        if not ranked:
            raise ProtocolError(f"similar_question: no other question in domain {trace.domain!r}")
        return ranked

    def _index_domain(self, domain: str) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        by_question: dict[str, list[Trace]] = defaultdict(list)
        for t in self.pool:
            if t.domain == domain:
                by_question[t.question].append(t)
        questions = sorted(by_question)
        self._indexed_domains.add(domain)
        if len(questions) < 2:
            return
        matrix = TfidfVectorizer(sublinear_tf=True).fit_transform(questions)
        similarity = (matrix @ matrix.T).toarray()
        for row, question in enumerate(questions):
            order = sorted(range(len(questions)), key=lambda col: (-similarity[row, col], col))
            self._neighbours[question] = [
                t for col in order if col != row for t in by_question[questions[col]]
            ]

    def markov(self, trace: Trace) -> TrigramModel:
        """A trigram model fit on same-domain pool traces of the *other half* of the questions, so the
        generated text never contains the attacked trace itself."""
        half = int(stable_fraction("markov:" + trace.question, 0) < 0.5)
        key = (trace.domain, half)
        if key not in self._markov:
            donors = [
                t
                for t in self.pool
                if t.domain == trace.domain and int(stable_fraction("markov:" + t.question, 0) < 0.5) != half
            ]
            donors.sort(key=lambda t: stable_fraction("markov-order:" + t.id, 0))
            corpus: list[list[bytes]] = []
            total = 0
            for donor in donors:
                if total >= self.markov_corpus_tokens:
                    break
                corpus.append(self.tokens(donor))
                total += len(corpus[-1])
            if not corpus:
                corpus = [self.tokens(trace)]
            self._markov[key] = TrigramModel(corpus)
        return self._markov[key]

    def filler_bank(self, domain: str) -> list[str]:
        """Self-verification sentences mined from the domain's traces (the genre's own phrasing)."""
        if domain not in self._filler:
            bank: list[str] = []
            for t in self.pool:
                if t.domain == domain:
                    bank.extend(s.strip() for s in _SENTENCE.findall(t.reasoning) if _is_filler(s))
            self._filler[domain] = sorted(set(bank)) or list(GENERIC_FILLER)
        return self._filler[domain]

    def vocabulary(self) -> list[bytes]:
        """Ordinary (non-special) tokens of the tokenizer, for the random-token attack."""
        if not self._vocabulary:
            encoding = getattr(self.tokenizer, "encoding", None)
            n_vocab = getattr(encoding, "n_vocab", 0)
            vocab: list[bytes] = []
            if encoding is not None and n_vocab:
                for token_id in range(n_vocab):
                    try:
                        token = encoding.decode_tokens_bytes([token_id])[0]
                    except KeyError:
                        continue
                    if token and not token.startswith(b"<|") and self.tokenizer.is_token(token):
                        vocab.append(token)
            else:
                vocab = sorted({tok for t in self.pool for tok in self.tokens(t)})
            self._vocabulary = vocab
        return self._vocabulary


# --- placement --------------------------------------------------------------------------------------


def _chunks(tokens: Sequence[bytes], low: int, high: int, rng: random.Random) -> list[list[bytes]]:
    out: list[list[bytes]] = []
    k = 0
    while k < len(tokens):
        size = rng.randint(low, high)
        out.append(list(tokens[k : k + size]))
        k += size
    return out


def _boundaries(genuine: Sequence[bytes]) -> list[int]:
    """Positions after a sentence or line end (where a provider would splice text), plus the end."""
    positions = [k + 1 for k, tok in enumerate(genuine) if tok.rstrip().endswith((b".", b"\n", b"?", b"!"))]
    return positions or list(range(len(genuine) + 1))


def place(
    genuine: Sequence[bytes],
    injected: Sequence[bytes],
    placement: Placement,
    rng: random.Random,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> tuple[list[bytes], list[bool]]:
    """Insert `injected` into `genuine`, keeping both in their own order; returns tokens and the mask."""
    if placement == Placement.APPEND:
        chunks = [list(injected)] if injected else []
        positions = [len(genuine)] * len(chunks)
    elif placement == Placement.BLOCKS:
        chunks = _chunks(injected, block_size, 4 * block_size, rng)
        allowed = _boundaries(genuine)
        positions = sorted(rng.choice(allowed) for _ in chunks)
    else:
        chunks = _chunks(injected, 1, 3, rng)
        positions = sorted(rng.randint(0, len(genuine)) for _ in chunks)
    tokens: list[bytes] = []
    mask: list[bool] = []
    cursor = 0
    for position, chunk in zip(positions, chunks, strict=True):
        tokens.extend(genuine[cursor:position])
        mask.extend([False] * (position - cursor))
        cursor = position
        tokens.extend(chunk)
        mask.extend([True] * len(chunk))
    tokens.extend(genuine[cursor:])
    mask.extend([False] * (len(genuine) - cursor))
    return tokens, mask


# --- content generators: each returns exactly n injected tokens ------------------------------------

Generator = Callable[[Trace, list[bytes], int, random.Random, AttackContext], list[bytes]]


def _from_stream(sources: Sequence[Sequence[bytes]], n: int, rng: random.Random) -> list[bytes]:
    """n tokens read contiguously from the sources in turn, each from a random starting point."""
    out: list[bytes] = []
    usable = [s for s in sources if s]
    if not usable:
        raise ProtocolError("attack: no donor tokens available")
    k = 0
    while len(out) < n:
        source = usable[k % len(usable)]
        start = rng.randrange(len(source)) if k < len(usable) else 0
        out.extend(source[start : start + n - len(out)])
        k += 1
    return out


def gen_random_tokens(
    trace: Trace, genuine: list[bytes], n: int, rng: random.Random, ctx: AttackContext
) -> list[bytes]:
    vocab = ctx.vocabulary()
    return [rng.choice(vocab) for _ in range(n)]


def gen_other_domain(
    trace: Trace, genuine: list[bytes], n: int, rng: random.Random, ctx: AttackContext
) -> list[bytes]:
    others = [t for t in ctx.pool if t.domain != trace.domain]
    if not others:
        raise ProtocolError(f"other_domain: the pool has no domain other than {trace.domain!r}")
    donors = rng.sample(others, min(8, len(others)))
    return _from_stream([ctx.tokens(d) for d in donors], n, rng)


def gen_similar_question(
    trace: Trace, genuine: list[bytes], n: int, rng: random.Random, ctx: AttackContext
) -> list[bytes]:
    ranked = ctx.similar_traces(trace)
    return _from_stream([ctx.tokens(d) for d in ranked[:8]], n, rng)


def gen_prompt_answer(
    trace: Trace, genuine: list[bytes], n: int, rng: random.Random, ctx: AttackContext
) -> list[bytes]:
    sources = [ctx.tokenizer.tokenize(trace.question), ctx.tokenizer.tokenize(trace.answer)]
    sources = [s for s in sources if s] or [genuine]
    out: list[bytes] = []
    while len(out) < n:
        source = rng.choice(sources)
        length = rng.randint(8, 40)
        start = rng.randrange(max(1, len(source) - length + 1))
        out.extend(source[start : start + length][: n - len(out)])
    return out


def gen_filler(
    trace: Trace, genuine: list[bytes], n: int, rng: random.Random, ctx: AttackContext
) -> list[bytes]:
    own = sorted({s.strip() for s in _SENTENCE.findall(trace.reasoning) if _is_filler(s)})
    bank = ctx.filler_bank(trace.domain)
    out: list[bytes] = []
    while len(out) < n:
        sentence = rng.choice(own) if own and rng.random() < 0.5 else rng.choice(bank)
        out.extend(ctx.tokenizer.tokenize(("\n\n" if rng.random() < 0.3 else " ") + sentence))
    return out[:n]


def gen_self_duplicate(
    trace: Trace, genuine: list[bytes], n: int, rng: random.Random, ctx: AttackContext
) -> list[bytes]:
    out: list[bytes] = []
    while len(out) < n:
        length = min(len(genuine), rng.randint(ctx.block_size, 4 * ctx.block_size))
        start = rng.randrange(len(genuine) - length + 1)
        out.extend(genuine[start : start + length][: n - len(out)])
    return out


def gen_markov(
    trace: Trace, genuine: list[bytes], n: int, rng: random.Random, ctx: AttackContext
) -> list[bytes]:
    return ctx.markov(trace).sample(n, rng)


def gen_repeat_last(
    trace: Trace, genuine: list[bytes], n: int, rng: random.Random, ctx: AttackContext
) -> list[bytes]:
    return [genuine[-1]] * n


@dataclass(frozen=True)
class AttackSpec:
    name: str
    kind: Literal["naive", "adaptive", "structural"]
    placement: Placement
    generator: Generator | None  # None: structural or re-tokenization (no injected text)


ATTACKS: dict[str, AttackSpec] = {
    spec.name: spec
    for spec in (
        AttackSpec("random_tokens", "naive", Placement.SPREAD, gen_random_tokens),
        AttackSpec("other_domain", "naive", Placement.BLOCKS, gen_other_domain),
        AttackSpec("similar_question", "adaptive", Placement.BLOCKS, gen_similar_question),
        AttackSpec("prompt_answer", "adaptive", Placement.BLOCKS, gen_prompt_answer),
        AttackSpec("filler", "adaptive", Placement.BLOCKS, gen_filler),
        AttackSpec("self_duplicate", "adaptive", Placement.BLOCKS, gen_self_duplicate),
        AttackSpec("markov", "adaptive", Placement.BLOCKS, gen_markov),
        AttackSpec("retokenize", "adaptive", Placement.SPREAD, None),
        AttackSpec("pad_repeat_last", "adaptive", Placement.APPEND, gen_repeat_last),
        AttackSpec("overclaim", "structural", Placement.APPEND, None),
        AttackSpec("coin_padding", "structural", Placement.APPEND, None),
    )
}
# The attacks only the semantic checks can catch (the structural ones fail the count proofs).
CONTENT_ATTACKS = tuple(name for name, spec in ATTACKS.items() if spec.kind != "structural")


def _split_token(token: bytes, tokenizer: Tokenizer, rng: random.Random) -> tuple[bytes, bytes] | None:
    """Two vocabulary tokens that concatenate to `token` (a random valid cut), or None."""
    cuts = [
        k for k in range(1, len(token)) if tokenizer.is_token(token[:k]) and tokenizer.is_token(token[k:])
    ]
    if not cuts:
        return None
    cut = rng.choice(cuts)
    return token[:cut], token[cut:]


def retokenize(
    genuine: Sequence[bytes], n: int, tokenizer: Tokenizer, rng: random.Random
) -> tuple[list[bytes], list[bool]]:
    """Split genuine tokens into shorter vocabulary tokens until n extra tokens exist (or none can be
    split further); the text is unchanged. Tokens are split as evenly as possible across the trace."""
    pieces: list[list[bytes]] = [[t] for t in genuine]
    order = list(range(len(genuine)))
    rng.shuffle(order)
    added = 0
    while added < n:
        progressed = False
        for position in order:
            if added >= n:
                break
            parts = pieces[position]
            longest = max(range(len(parts)), key=lambda k: len(parts[k]))
            split = _split_token(parts[longest], tokenizer, rng)
            if split is None:
                continue
            parts[longest : longest + 1] = list(split)
            added += 1
            progressed = True
        if not progressed:
            break
    tokens = [p for parts in pieces for p in parts]
    mask = [len(parts) > 1 for parts in pieces for _ in parts]
    return tokens, mask


def inflate(
    trace: Trace,
    attack: str,
    ir: float,
    rng: random.Random,
    ctx: AttackContext,
    *,
    placement: Placement | None = None,
) -> InflatedTrace:
    """Apply `attack` at inflation ratio `ir` to `trace` (see the module docstring)."""
    if attack not in ATTACKS:
        raise ProtocolError(f"attack: unknown {attack!r} (known: {', '.join(ATTACKS)})")
    if not ir > 0:
        raise ProtocolError(f"ir: must be positive, got {ir}")
    spec = ATTACKS[attack]
    genuine = ctx.tokens(trace)
    if len(genuine) < 2:
        raise ProtocolError(f"trace {trace.id}: {len(genuine)} tokens; an attack needs at least 2")
    m = len(genuine)
    n = max(1, round(ir * m))
    where = placement or spec.placement
    if spec.kind == "structural":
        structural: Structural = "overclaim" if attack == "overclaim" else "duplicate_last_leaf"
        return InflatedTrace(attack, ir, where, tuple(genuine), (False,) * m, m, m + n, structural)
    if spec.generator is None:
        tokens, mask = retokenize(genuine, n, ctx.tokenizer, rng)
    else:
        injected = spec.generator(trace, genuine, n, rng, ctx)
        tokens, mask = place(genuine, injected, where, rng, ctx.block_size)
    return InflatedTrace(attack, ir, where, tuple(tokens), tuple(mask), m, len(tokens))
