"""The semantic checks 4–8 of DESIGN §3, as `SemanticCheck`s for `auditor.protocol.verify.verify_response`.

4. `tokens_to_block`: the Tokens-to-Block head scores each revealed token against its revealed block.
5. `block_to_answer`: the Block-to-Answer head scores each revealed block against the answer embedding.
   Checks 4 and 5 report evidence; the verifier (8) turns it, with everything else, into the decision.
6. `duplicate_blocks`: near-identical revealed block embeddings (self-repetition passes CoIn), and
   `repeated_token`: a revealed block whose text is one token repeated (CoIn's own padding attack).
7. `tokenization`: revealed tokens must be vocabulary tokens of the declared tokenizer, and adjacent
   revealed tokens must not merge when re-tokenized (a word split into more tokens than the tokenizer
   makes — the re-tokenization attack).
8. `verifier`: per-block evidence -> P(benign), by the learned DeepSet or the rule (worst block),
   with the sequential decision of progressive exposure (`auditor.semantic.exposure`): fail below the calibrated
   threshold, pass when the budget is spent or a clean sample is already conclusive, else inconclusive
   (ask for the next round).

Every threshold comes from the calibration shipped with the heads (fit on honest validation traces to
the target false-positive rate, see `auditor.research.training`). All checks read only what the verifier was
shown: revealed block codes, revealed token codes and bytes, and the answer commitment.
"""

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from auditor.protocol.errors import ModelError, ProtocolError
from auditor.protocol.fingerprint import EMBED_DIM, EmbeddingModel, Int8Array, cosine, decode_token, quantize
from auditor.protocol.tokenize import Tokenizer, get_tokenizer
from auditor.protocol.verify import TOKEN_COSINE_THRESHOLD, CheckResult, OpenedTrace, Outcome, SemanticCheck
from auditor.semantic.exposure import ExposurePolicy
from auditor.semantic.heads import HeadBundle

FEATURE_NAMES = (
    "tokens_to_block_mean",
    "tokens_to_block_min",
    "block_to_answer",
    "answer_cosine",
    "max_block_cosine",
    "mean_block_cosine",
    "token_bytes",
    "space_start",
    "ascii_fraction",
    "non_token_fraction",
    "merge_fraction",
    "has_pair",
    "repeat_fraction",
    "position",
    "centroid_cosine",
    "block_to_answer_gap",
    "answer_cosine_gap",
    "revealed_blocks",
    "block_to_trace",
)
FloatMatrix = npt.NDArray[np.float32]
VerifierKind = Literal["deepset", "rule"]
# Rebuilt texts whose codes a suite keeps (int8, 384 bytes each: ~6 MB).
REBUILT_CACHE_SIZE = 16_384


@dataclass(frozen=True)
class RevealedBlock:
    """One revealed block: its code and the tokens opened inside it (sorted by index)."""

    index: int
    codes: Int8Array
    token_indices: tuple[int, ...]
    tokens: tuple[bytes, ...]
    token_codes: Int8Array


@dataclass(frozen=True)
class Revealed:
    """Everything the semantic checks see of one report."""

    num_blocks: int
    answer_codes: Int8Array
    blocks: tuple[RevealedBlock, ...]

    def __post_init__(self) -> None:
        if not self.blocks:
            raise ProtocolError("semantic checks: no revealed blocks")
        arrays = [self.answer_codes] + [b.codes for b in self.blocks] + [b.token_codes for b in self.blocks]
        for array in arrays:
            if not np.all(np.isfinite(np.asarray(array, dtype=np.float64))):
                raise ProtocolError("semantic checks: an embedding contains NaN or infinite values")
        if self.answer_codes.shape != (EMBED_DIM,):
            raise ProtocolError(f"semantic checks: answer embedding has shape {self.answer_codes.shape}")
        for block in self.blocks:
            shapes = (block.codes.shape, block.token_codes.shape, len(block.token_indices))
            if shapes != ((EMBED_DIM,), (len(block.tokens), EMBED_DIM), len(block.tokens)):
                raise ProtocolError(f"semantic checks: block {block.index} embeddings have the wrong shape")
            if not block.tokens or not 0 <= block.index < self.num_blocks:
                raise ProtocolError(f"semantic checks: block {block.index} has no tokens or is out of range")


def revealed_from_opened(opened: OpenedTrace) -> Revealed:
    """Group the verified content openings of `opened` by block."""
    size = opened.challenge.block_size
    by_block: dict[int, list[int]] = {}
    for k, opening in enumerate(opened.content):
        by_block.setdefault(opening.index // size, []).append(k)
    blocks = []
    for index in sorted(by_block):
        members = sorted(by_block[index], key=lambda k: opened.content[k].index)
        blocks.append(
            RevealedBlock(
                index=index,
                codes=opened.block_codes[index],
                token_indices=tuple(opened.content[k].index for k in members),
                tokens=tuple(opened.content[k].token or b"" for k in members),
                token_codes=np.stack([opened.content[k].token_codes for k in members]),
            )
        )
    return Revealed(opened.challenge.num_blocks, opened.public.answer.codes, tuple(blocks))


def _adjacent_pairs(block: RevealedBlock) -> list[tuple[bytes, bytes]]:
    pairs = []
    for k in range(len(block.tokens) - 1):
        if block.token_indices[k + 1] == block.token_indices[k] + 1:
            pairs.append((block.tokens[k], block.tokens[k + 1]))
    return pairs


def merges_when_retokenized(first: bytes, second: bytes, tokenizer: Tokenizer) -> bool:
    """True when the tokenizer would write `first + second` as a single token: the provider split a
    token the tokenizer never splits. Pairs that are not whole UTF-8 text cannot be re-tokenized as
    text and count as not merging."""
    try:
        text = (first + second).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return len(tokenizer.tokenize(text)) == 1


@dataclass(frozen=True)
class Evidence:
    """Per-block feature rows (FEATURE_NAMES order) plus the raw counts the rule checks use."""

    revealed: Revealed
    features: FloatMatrix
    non_tokens: int
    merges: int


def context_codes(block_codes: FloatMatrix) -> FloatMatrix:
    """For each block, the mean code of the *other* blocks (the context the Block-to-Trace head reads)."""
    others: FloatMatrix = ((block_codes.sum(0, keepdims=True) - block_codes) / (len(block_codes) - 1)).astype(
        np.float32
    )
    return others


def block_features(revealed: Revealed, heads: HeadBundle, tokenizer: Tokenizer) -> Evidence:
    """The evidence vector of every revealed block (see FEATURE_NAMES)."""
    blocks = revealed.blocks
    block_codes = np.stack([b.codes for b in blocks]).astype(np.float32)
    answer = np.broadcast_to(revealed.answer_codes.astype(np.float32), block_codes.shape)
    to_answer = heads.pair_logits(heads.block_to_answer, block_codes, answer)
    answer_cos = cosine(block_codes, answer)
    token_codes = np.concatenate([b.token_codes for b in blocks]).astype(np.float32)
    owners = np.concatenate([np.full(len(b.tokens), k) for k, b in enumerate(blocks)])
    to_block = heads.pair_logits(heads.tokens_to_block, token_codes, block_codes[owners])
    unit = block_codes / np.maximum(np.linalg.norm(block_codes, axis=1, keepdims=True), 1e-12)
    if len(blocks) > 1:
        sims = unit @ unit.T
        np.fill_diagonal(sims, np.nan)
        max_cos = np.nanmax(sims, axis=1)
        mean_cos = np.nanmean(sims, axis=1)
        # How well each block fits the rest of the revealed trace: an injected block stands out.
        others = context_codes(block_codes)
        centroid_cos = cosine(block_codes, others)
        to_trace = heads.pair_logits(heads.block_to_trace, block_codes, others)
    else:
        max_cos = mean_cos = centroid_cos = to_trace = np.zeros(1, dtype=np.float32)
    answer_gap = to_answer - np.median(to_answer)
    answer_cos_gap = answer_cos - np.median(answer_cos)
    rows = []
    non_tokens = merges = 0
    for k, block in enumerate(blocks):
        scores = to_block[owners == k]
        pairs = _adjacent_pairs(block)
        block_merges = sum(merges_when_retokenized(a, b, tokenizer) for a, b in pairs)
        block_non_tokens = sum(not tokenizer.is_token(t) for t in block.tokens)
        non_tokens += block_non_tokens
        merges += block_merges
        n = len(block.tokens)
        rows.append(
            [
                float(scores.mean()),
                float(scores.min()),
                float(to_answer[k]),
                float(answer_cos[k]),
                float(max_cos[k]),
                float(mean_cos[k]),
                sum(len(t) for t in block.tokens) / n,
                sum(t[:1] == b" " for t in block.tokens) / n,
                sum(t.isascii() for t in block.tokens) / n,
                block_non_tokens / n,
                block_merges / len(pairs) if pairs else 0.0,
                float(bool(pairs)),
                sum(a == b for a, b in pairs) / len(pairs) if pairs else 0.0,
                block.index / max(1, revealed.num_blocks - 1),
                float(centroid_cos[k]),
                float(answer_gap[k]),
                float(answer_cos_gap[k]),
                math.log1p(len(blocks)),
                float(to_trace[k]),
            ]
        )
    features = np.asarray(rows, dtype=np.float32)
    return Evidence(revealed, features, non_tokens, merges)


def _column(evidence: Evidence, name: str) -> FloatMatrix:
    column: FloatMatrix = evidence.features[:, FEATURE_NAMES.index(name)]
    return column


def _sigmoid(x: FloatMatrix) -> FloatMatrix:
    out: FloatMatrix = (1.0 / (1.0 + np.exp(-x))).astype(np.float32)
    return out


def rule_benign_probability(evidence: Evidence, calibration: dict[str, float]) -> float:
    """The most suspicious block decides: P(benign) = 1 - max_j s_j, with s_j the largest of the two
    heads' P(not genuine), a near-duplicate flag and a tokenization flag for block j."""
    head_a = 1.0 - _sigmoid(_column(evidence, "tokens_to_block_mean"))
    head_b = 1.0 - _sigmoid(_column(evidence, "block_to_answer"))
    duplicate = (_column(evidence, "max_block_cosine") >= calibration["duplicate_cosine"]).astype(np.float32)
    tokenization = (
        (_column(evidence, "non_token_fraction") > 0) | (_column(evidence, "merge_fraction") > 0)
    ).astype(np.float32)
    suspicion = np.maximum.reduce([head_a, head_b, duplicate, tokenization])
    return float(1.0 - np.clip(suspicion, 0.0, 1.0).max())


def deepset_benign_probability(evidence: Evidence, heads: HeadBundle) -> float:
    return 1.0 / (1.0 + math.exp(-heads.deepset_logit(evidence.features)))


@dataclass
class SemanticSuite:
    """Checks 4–8 sharing one evidence computation per opened trace."""

    heads: HeadBundle
    tokenizer: Tokenizer
    policy: ExposurePolicy = field(default_factory=ExposurePolicy)
    verifier: VerifierKind = "deepset"
    _last: tuple[OpenedTrace, Evidence] | None = field(default=None, repr=False)
    _rebuilt: OrderedDict[str, Int8Array] = field(default_factory=OrderedDict, repr=False)
    _rebuilt_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def for_tokenizer(
        cls,
        heads: HeadBundle,
        tokenizer_id: str,
        policy: ExposurePolicy | None = None,
        verifier: VerifierKind = "deepset",
    ) -> "SemanticSuite":
        return cls(heads, get_tokenizer(tokenizer_id), policy or ExposurePolicy(), verifier)

    def __post_init__(self) -> None:
        if self.heads.feature_names != FEATURE_NAMES:
            raise ModelError(
                "head checkpoint was trained on other verifier features; retrain with `coin train-heads`"
            )

    def evidence(self, opened: OpenedTrace) -> Evidence:
        if opened.public.commitment.embd_id != self.heads.embd_id:
            raise ProtocolError(
                f"commitment.embd_id {opened.public.commitment.embd_id!r} is not the heads' {self.heads.embd_id!r}"
            )
        if opened.public.commitment.tokenizer_id != self.tokenizer.id:
            raise ProtocolError(f"commitment.tokenizer_id is not {self.tokenizer.id!r}")
        # Keyed by the object itself (and holding it): an id() could be reused by the next audit's
        # OpenedTrace once this one is freed, which would hand it stale evidence.
        if self._last is None or self._last[0] is not opened:
            self._last = (
                opened,
                block_features(revealed_from_opened(opened), self.heads, self.tokenizer),
            )
        return self._last[1]

    def rebuilt_codes(self, texts: Sequence[str], embedder: EmbeddingModel) -> Int8Array:
        """q(Embd(text)) for texts the auditor rebuilt from openings, through a bounded LRU cache: the
        same common tokens come back audit after audit, and every round re-verifies the earlier rounds'
        blocks; without it this Embd call is most of a verification's CPU. Keyed by text alone: callers
        have checked, through `evidence`, that the commitment's embd_id is these heads'."""
        with self._rebuilt_lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._rebuilt]
        codes = quantize(embedder.embed_texts(missing))
        with self._rebuilt_lock:
            self._rebuilt.update(zip(missing, codes, strict=True))
            for text in texts:
                self._rebuilt.move_to_end(text)
            rebuilt = np.stack([self._rebuilt[t] for t in texts])
            while len(self._rebuilt) > REBUILT_CACHE_SIZE:
                self._rebuilt.popitem(last=False)
        return rebuilt

    def benign_probability(self, evidence: Evidence) -> float:
        if self.verifier == "rule":
            return rule_benign_probability(evidence, self.heads.calibration)
        return deepset_benign_probability(evidence, self.heads)

    def checks(self) -> list[SemanticCheck]:
        return [
            TokensToBlockCheck(self),
            BlockToAnswerCheck(self),
            DuplicateBlocksCheck(self),
            RepeatedTokenCheck(self),
            TokenizationCheck(self),
            VerifierCheck(self),
        ]


@dataclass
class TokensToBlockCheck:
    """Check 4: the lowest per-block mean logit of the Tokens-to-Block head.

    Evidence, not a decision: one 16-token block is too little text for a head to condemn a trace on its
    own, and a separate threshold per head would add its own false positives under domain shift. The
    figure goes to the verifier (check 8), which decides at one calibrated point; the detail says how
    the figure compares with the lowest honest validation value (the alarm level)."""

    suite: SemanticSuite
    name: str = "tokens_to_block"

    def __call__(self, opened: OpenedTrace) -> CheckResult:
        evidence = self.suite.evidence(opened)
        return _evidence_result(
            self.name, _column(evidence, "tokens_to_block_mean"), self.suite.heads.calibration
        )


@dataclass
class BlockToAnswerCheck:
    """Check 5: the lowest Block-to-Answer logit over revealed blocks (evidence, as check 4)."""

    suite: SemanticSuite
    name: str = "block_to_answer"

    def __call__(self, opened: OpenedTrace) -> CheckResult:
        evidence = self.suite.evidence(opened)
        return _evidence_result(self.name, _column(evidence, "block_to_answer"), self.suite.heads.calibration)


def _evidence_result(name: str, logits: FloatMatrix, calibration: dict[str, float]) -> CheckResult:
    worst = float(logits.min())
    alarm = calibration[f"{name}_alarm"]
    below = int((logits < alarm).sum())
    detail = (
        f"min block logit {worst:.2f}; {below} of {len(logits)} blocks below the alarm level {alarm:.2f} "
        "(evidence for the verifier, which decides)"
    )
    return CheckResult(name, "pass", worst, detail)


@dataclass
class DuplicateBlocksCheck:
    """Check 6: the highest cosine between two distinct revealed blocks."""

    suite: SemanticSuite
    name: str = "duplicate_blocks"

    def __call__(self, opened: OpenedTrace) -> CheckResult:
        evidence = self.suite.evidence(opened)
        worst = float(_column(evidence, "max_block_cosine").max())
        threshold = self.suite.heads.calibration["duplicate_cosine"]
        outcome: Outcome = "fail" if worst >= threshold else "pass"
        repeats = float(_column(evidence, "repeat_fraction").mean())
        detail = f"max cosine {worst:.3f} (threshold {threshold:.3f}); repeated adjacent tokens {repeats:.2f}"
        return CheckResult(self.name, outcome, worst, detail)


def repeated_token_texts(revealed: Revealed, size: int, block_size: int) -> dict[int, str]:
    """For each revealed block of two or more tokens whose opened tokens are all the same token t: the
    text the block would have if it were t repeated over its whole length (blocks are [jB, min((j+1)B,
    m)), DESIGN §3)."""
    texts = {}
    for block in revealed.blocks:
        length = min(block_size, size - block.index * block_size)
        if length >= 2 and len(set(block.tokens)) == 1:
            texts[block.index] = decode_token(block.tokens[0] * length)
    return texts


@dataclass
class RepeatedTokenCheck:
    """Check 6 inside a block: a revealed block that is one token repeated — the padding CoIn leaves open
    (the last token repeated under fresh indices), or any one-token filler. The auditor rebuilds the text
    such a block would have from its opened token, embeds it with its own Embd and compares it with the
    committed block embedding at check 3's tolerance: a match identifies the block's text, so no
    calibration is involved. One-token blocks are exempt (they are trivially their own token)."""

    suite: SemanticSuite
    name: str = "repeated_token"

    def __call__(self, opened: OpenedTrace) -> CheckResult:
        revealed = self.suite.evidence(opened).revealed
        texts = repeated_token_texts(revealed, opened.challenge.size, opened.challenge.block_size)
        if not texts:
            return CheckResult(self.name, "pass", None, "no revealed block opens a single repeated token")
        indices = sorted(texts)
        rebuilt = self.suite.rebuilt_codes([texts[j] for j in indices], opened.embedder)
        similarity = cosine(rebuilt, np.stack([opened.block_codes[j] for j in indices]))
        matched = [j for j, value in zip(indices, similarity, strict=True) if value >= TOKEN_COSINE_THRESHOLD]
        worst = float(similarity.max())
        if matched:
            detail = f"blocks {matched[:10]} are their opened token repeated (cosine {worst:.3f})"
            return CheckResult(self.name, "fail", worst, detail)
        detail = f"{len(indices)} blocks tested; max cosine to their token repeated {worst:.3f}"
        return CheckResult(self.name, "pass", worst, detail)


@dataclass
class TokenizationCheck:
    """Check 7: vocabulary membership (hard) and re-tokenization merges of adjacent revealed tokens."""

    suite: SemanticSuite
    name: str = "tokenization"

    def __call__(self, opened: OpenedTrace) -> CheckResult:
        evidence = self.suite.evidence(opened)
        limit = self.suite.heads.calibration["merge_count"]
        failed = evidence.non_tokens > 0 or evidence.merges >= limit
        detail = (
            f"{evidence.non_tokens} revealed tokens outside the {self.suite.tokenizer.id} vocabulary; "
            f"{evidence.merges} adjacent pairs merge when re-tokenized (fail at {limit:.0f}); "
            f"mean token length {float(_column(evidence, 'token_bytes').mean()):.2f} bytes"
        )
        return CheckResult(
            self.name, "fail" if failed else "pass", float(evidence.non_tokens + evidence.merges), detail
        )


@dataclass
class VerifierCheck:
    """Check 8: P(benign) and the sequential decision of progressive exposure."""

    suite: SemanticSuite
    name: str = "verifier"

    def __call__(self, opened: OpenedTrace) -> CheckResult:
        evidence = self.suite.evidence(opened)
        p = self.suite.benign_probability(evidence)
        calibration = self.suite.heads.calibration
        fail_below = calibration[f"{self.suite.verifier}_fail"]
        pass_above = calibration[f"{self.suite.verifier}_pass"]
        revealed = len(evidence.revealed.blocks)
        budget = self.suite.policy.block_budget(evidence.revealed.num_blocks)
        detail = f"P(benign) = {p:.4f} ({self.suite.verifier}) over {revealed} of {budget} budgeted blocks"
        if p < fail_below:
            return CheckResult(self.name, "fail", p, detail + f"; below {fail_below:.4f}")
        if revealed >= budget:
            return CheckResult(self.name, "pass", p, detail + "; budget spent")
        if revealed >= self.suite.policy.confident_blocks and p >= pass_above:
            return CheckResult(self.name, "pass", p, detail + "; clean sample already conclusive")
        return CheckResult(self.name, "inconclusive", p, detail + "; reveal more blocks")
