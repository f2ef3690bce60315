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

The copy family repeats the trace's own text the way a provider would paste it, each copied unit once
(`CopyPlacement`): whole sentences or paragraphs pasted right after their source (`near`: "X X") or at a
boundary at least a third of the trace away (`far`), a few of them gathered in shuffled order into one
passage (`shuffled`), or a contiguous passage of whole sentences in its own order pasted far from it
(`passage`: a section restated). Only when every unit has been copied once does a unit come back.
"""

import random
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import pairwise
from typing import Literal

from auditor.protocol.commitment import DEFAULT_BLOCK_SIZE
from auditor.protocol.errors import ProtocolError
from auditor.protocol.tokenize import Tokenizer
from auditor.research.traces import Trace, stable_fraction


class Placement(StrEnum):
    APPEND = "append"
    BLOCKS = "blocks"
    SPREAD = "spread"


class CopyPlacement(StrEnum):
    NEAR = "near"
    FAR = "far"
    SHUFFLED = "shuffled"
    PASSAGE = "passage"


Structural = Literal["none", "overclaim", "duplicate_last_leaf"]


@dataclass(frozen=True)
class InflatedTrace:
    """What an inflating provider commits (`tokens`) and claims (`claimed_size`).

    `injected[i]` marks committed tokens that are not genuine reasoning (for `retokenize`: every piece
    of a split token). `structural` names how an over-claimed count is backed in the tree."""

    attack: str
    requested_ir: float
    placement: Placement | CopyPlacement
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


def _ends_sentence(token: bytes) -> bool:
    return token.rstrip().endswith((b".", b"\n", b"?", b"!"))


def _boundaries(genuine: Sequence[bytes]) -> list[int]:
    """Positions after a sentence or line end (where a provider would splice text), plus the end."""
    positions = [k + 1 for k, tok in enumerate(genuine) if _ends_sentence(tok)]
    return positions or list(range(len(genuine) + 1))


Insertion = tuple[int, list[bytes]]  # (position in the genuine trace, tokens inserted there)


def _insert(genuine: Sequence[bytes], insertions: Sequence[Insertion]) -> tuple[list[bytes], list[bool]]:
    """The genuine tokens with each insertion placed before genuine[position] (insertions at one
    position keep their order); returns the tokens and the injected mask."""
    tokens: list[bytes] = []
    mask: list[bool] = []
    cursor = 0
    for position, chunk in sorted(insertions, key=lambda item: item[0]):
        tokens.extend(genuine[cursor:position])
        mask.extend([False] * (position - cursor))
        cursor = position
        tokens.extend(chunk)
        mask.extend([True] * len(chunk))
    tokens.extend(genuine[cursor:])
    mask.extend([False] * (len(genuine) - cursor))
    return tokens, mask


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
    return _insert(genuine, list(zip(positions, chunks, strict=True)))


# --- the copy family: the trace's own sentences and paragraphs pasted again --------------------------

MIN_UNIT_TOKENS = 4  # a "sentence" of fewer tokens is a list number or a stray line end, not a sentence


def _ends_paragraph(tokens: Sequence[bytes], k: int) -> bool:
    token = tokens[k]
    following = tokens[k + 1] if k + 1 < len(tokens) else b"\n"
    return b"\n\n" in token or (token.endswith(b"\n") and following.startswith(b"\n"))


def copy_units(genuine: Sequence[bytes], paragraphs: bool) -> list[tuple[int, int]]:
    """The sentences (or paragraphs) of a trace as [start, end) token spans cut after the tokens that
    end them; units shorter than `MIN_UNIT_TOKENS` are left out (never copied)."""
    ends = [
        k + 1
        for k in range(len(genuine))
        if (_ends_paragraph(genuine, k) if paragraphs else _ends_sentence(genuine[k]))
    ]
    cuts = sorted({0, *ends, len(genuine)})
    spans = [(a, b) for a, b in pairwise(cuts) if b - a >= MIN_UNIT_TOKENS]
    return spans or [(0, len(genuine))]


def _drawn_units(units: Sequence[tuple[int, int]], n: int, rng: random.Random) -> list[tuple[int, int]]:
    """Units in random order, each once before any comes back, the last cut to reach exactly n tokens."""
    out: list[tuple[int, int]] = []
    total = 0
    while total < n:
        order = list(units)
        rng.shuffle(order)
        for start, end in order:
            take = min(end - start, n - total)
            out.append((start, start + take))
            total += take
            if total == n:
                break
    return out


def _far_boundary(boundaries: Sequence[int], source: int, m: int, rng: random.Random) -> int:
    """A boundary at least m / 3 from `source`, or the farthest one."""
    far = [b for b in boundaries if abs(b - source) >= m / 3]
    return rng.choice(far) if far else max(boundaries, key=lambda b: abs(b - source))


def copy_insertions(
    genuine: Sequence[bytes], n: int, rng: random.Random, paragraphs: bool, where: CopyPlacement
) -> list[Insertion]:
    """Where a copying provider pastes n tokens of the trace's own units (see the module docstring)."""
    units = copy_units(genuine, paragraphs)
    boundaries = sorted({0, *(end for _, end in units), len(genuine)})
    m = len(genuine)
    if where == CopyPlacement.PASSAGE:
        out: list[Insertion] = []
        while n > 0:  # a contiguous run of units from a random one on, pasted far from itself
            first = rng.randrange(len(units))
            start = units[first][0]
            end = min(units[-1][1], start + n)
            cut = max((b for _, b in units[first:] if b <= end), default=end)
            out.append((_far_boundary(boundaries, start, m, rng), list(genuine[start:cut])))
            n -= cut - start
        return out
    drawn = _drawn_units(units, n, rng)
    if where == CopyPlacement.NEAR:
        return [(end, list(genuine[start:end])) for start, end in drawn]
    if where == CopyPlacement.FAR:
        return [(_far_boundary(boundaries, start, m, rng), list(genuine[start:end])) for start, end in drawn]
    passage = [token for start, end in drawn for token in genuine[start:end]]  # drawn order is shuffled
    return [(rng.choice(boundaries), passage)]


def copier(paragraphs: bool, where: CopyPlacement) -> "Copier":
    def copy(genuine: list[bytes], n: int, rng: random.Random) -> tuple[list[bytes], list[bool]]:
        return _insert(genuine, copy_insertions(genuine, n, rng, paragraphs, where))

    return copy


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


Copier = Callable[[list[bytes], int, random.Random], tuple[list[bytes], list[bool]]]


@dataclass(frozen=True)
class AttackSpec:
    name: str
    kind: Literal["naive", "adaptive", "structural"]
    placement: Placement | CopyPlacement
    generator: Generator | None  # None: structural, re-tokenization or a copy (no text from elsewhere)
    copier: Copier | None = None  # the copy family: where the trace's own units are pasted again


ATTACKS: dict[str, AttackSpec] = {
    spec.name: spec
    for spec in (
        AttackSpec("random_tokens", "naive", Placement.SPREAD, gen_random_tokens),
        AttackSpec("other_domain", "naive", Placement.BLOCKS, gen_other_domain),
        AttackSpec("similar_question", "adaptive", Placement.BLOCKS, gen_similar_question),
        AttackSpec("prompt_answer", "adaptive", Placement.BLOCKS, gen_prompt_answer),
        AttackSpec("filler", "adaptive", Placement.BLOCKS, gen_filler),
        AttackSpec("self_duplicate", "adaptive", Placement.BLOCKS, gen_self_duplicate),
        *(
            AttackSpec(f"copy_{unit}_{where}", "adaptive", where, None, copier(unit == "paragraph", where))
            for unit in ("sentence", "paragraph")
            for where in (CopyPlacement.NEAR, CopyPlacement.FAR, CopyPlacement.SHUFFLED)
        ),
        AttackSpec(
            "copy_passage", "adaptive", CopyPlacement.PASSAGE, None, copier(False, CopyPlacement.PASSAGE)
        ),
        AttackSpec("markov", "adaptive", Placement.BLOCKS, gen_markov),
        AttackSpec("retokenize", "adaptive", Placement.SPREAD, None),
        AttackSpec("pad_repeat_last", "adaptive", Placement.APPEND, gen_repeat_last),
        AttackSpec("overclaim", "structural", Placement.APPEND, None),
        AttackSpec("coin_padding", "structural", Placement.APPEND, None),
    )
}
# The attacks only the semantic checks can catch (the structural ones fail the count proofs).
CONTENT_ATTACKS = tuple(name for name, spec in ATTACKS.items() if spec.kind != "structural")
# The duplication family: the trace's own text pasted again (the repetition profile's business).
COPY_ATTACKS = ("self_duplicate", *(name for name, spec in ATTACKS.items() if spec.copier is not None))
# What the heads train on by default: every content attack but the copiers, which are the profile's to
# catch (a copy reads exactly like its source to a head); training is what it was before them.
HEAD_ATTACKS = tuple(name for name in CONTENT_ATTACKS if ATTACKS[name].copier is None)


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
    if placement is not None and spec.copier is not None:
        raise ProtocolError(f"placement: {attack} pastes by its own rule ({spec.placement})")
    where = placement or spec.placement
    if spec.kind == "structural":
        structural: Structural = "overclaim" if attack == "overclaim" else "duplicate_last_leaf"
        return InflatedTrace(attack, ir, where, tuple(genuine), (False,) * m, m, m + n, structural)
    if spec.copier is not None:
        tokens, mask = spec.copier(genuine, n, rng)
    elif spec.generator is None:
        tokens, mask = retokenize(genuine, n, ctx.tokenizer, rng)
    else:
        assert isinstance(where, Placement)  # the spec of a text generator names a Placement
        injected = spec.generator(trace, genuine, n, rng, ctx)
        tokens, mask = place(genuine, injected, where, rng, ctx.block_size)
    return InflatedTrace(attack, ir, where, tuple(tokens), tuple(mask), m, len(tokens))
