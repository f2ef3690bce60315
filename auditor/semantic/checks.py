"""The semantic checks 4–8 of DESIGN §3, as `SemanticCheck`s for `auditor.protocol.verify.verify_response`.

Proof checks (`fail`: they cannot fire on honest text; the argument and the measurement over every
trace are in docs/protocol.md):
- `repeated_token` (check 6): a revealed block whose text is one token repeated — rebuilt by the
  auditor and identified by its embedding (CoIn's own padding attack).
- `vocabulary` (check 7): a revealed token the declared tokenizer cannot produce.
- `split_token` (check 7): an opened pair of adjacent tokens that is one token of the declared
  tokenizer cut in two, in a place no honest tokenization can cut it.

Statistical checks (`suspect`: evidence for monitoring, each calibrated on honest traces):
- `tokens_to_block`, `block_to_answer` (checks 4, 5): the two heads' lowest logits — evidence the
  verifier reads; they never flag on their own.
- `duplicate_blocks` (check 6): near-identical revealed blocks (self-repetition passes CoIn).
- `retokenization` (check 7): adjacent revealed tokens the tokenizer would write as one token (a word
  split into more tokens), tested against the honest rate of such pairs.
- `verifier` (check 8): every revealed block is judged *against the other revealed blocks of the same
  trace* — each of its measures minus their median over the others — so a domain whose blocks all read
  differently from the training domains moves every block alike and none stands out. Two scores per
  block: the block model's (trained to point at injected blocks) and an unsupervised outlier score
  (the squared length of its gap vector: unlike the others in any direction — which is how the genuine
  blocks of a trace inflated several times over stand out from the injected majority). Each score
  becomes a p-value against honest calibration blocks; the audit's statistic is the smallest one. Its
  threshold depends on how many blocks the audit's plan may reveal (more blocks, more chances for one
  odd block) and is the most cautious of the per-domain thresholds fit on honest traces of each training
  domain (`auditor.semantic.calibration.verifier_bands`): the false-positive rate does not grow with a
  trace's length, and holds for a new domain as unusual as the most unusual one trained on.

The verifier also drives progressive exposure (`auditor.semantic.exposure`): `inconclusive` asks for
the next round, until the budget is spent or a clean sample is already conclusive. All checks read only
what the verifier was shown: revealed block codes, revealed token codes and bytes, and the answer
commitment.
"""

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from auditor.protocol.errors import ModelError, ProtocolError
from auditor.protocol.fingerprint import EMBED_DIM, EmbeddingModel, Int8Array, cosine, decode_token, quantize
from auditor.protocol.tokenize import Tokenizer, get_tokenizer
from auditor.protocol.verify import TOKEN_COSINE_THRESHOLD, CheckResult, OpenedTrace, Outcome, SemanticCheck
from auditor.semantic.exposure import ExposurePolicy
from auditor.semantic.heads import HeadBundle
from auditor.semantic.tokenization import merges_when_retokenized, proves_split

# What is measured of each revealed block; the verifier reads each as a gap to the other blocks.
MEASURES = (
    "tokens_to_block_mean",
    "tokens_to_block_min",
    "block_to_answer",
    "answer_cosine",
    "block_to_trace",
    "centroid_cosine",
    "max_block_cosine",
    "token_bytes",
    "space_start",
    "ascii_fraction",
    "merge_fraction",
    "repeat_fraction",
)
FEATURE_NAMES = tuple(f"{name}_gap" for name in MEASURES)
# A scaled gap counts at most this much in the outlier score, so that one measure cannot carry it alone.
GAP_CLIP = 10.0
# Where block p-values leave the empirical null for its fitted exponential tail (see block_p_values).
TAIL_SHARE = 0.01
TAIL_MIN = 50
FloatMatrix = npt.NDArray[np.float32]
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


def adjacent_pairs(block: RevealedBlock) -> list[tuple[int, bytes, bytes]]:
    """The opened tokens of `block` that are neighbours in the trace: (index of the second, first,
    second)."""
    pairs = []
    for k in range(len(block.tokens) - 1):
        if block.token_indices[k + 1] == block.token_indices[k] + 1:
            pairs.append((block.token_indices[k + 1], block.tokens[k], block.tokens[k + 1]))
    return pairs


@dataclass(frozen=True)
class Tokenization:
    """What the opened tokens say about their tokenization: tokens outside the vocabulary, adjacent
    opened pairs, those that merge when re-tokenized, and those that prove a split (by the index of
    their second token)."""

    non_tokens: int
    pairs: int
    merges: int
    splits: tuple[int, ...]


@dataclass(frozen=True)
class Evidence:
    """What the checks read of one opened trace: every block's measures (MEASURES order), the verifier's
    features (FEATURE_NAMES order: the measures as scaled gaps to the other blocks), and counts."""

    revealed: Revealed
    measures: FloatMatrix
    features: FloatMatrix
    tokenization: Tokenization

    def column(self, name: str) -> FloatMatrix:
        values: FloatMatrix = self.measures[:, MEASURES.index(name)]
        return values


def context_codes(block_codes: FloatMatrix) -> FloatMatrix:
    """For each block, the mean code of the *other* blocks (the context the Block-to-Trace head reads)."""
    others: FloatMatrix = ((block_codes.sum(0, keepdims=True) - block_codes) / (len(block_codes) - 1)).astype(
        np.float32
    )
    return others


def gaps_to_others(measures: FloatMatrix) -> FloatMatrix:
    """Each block's measures minus their median over the *other* revealed blocks (zero for a lone block:
    there is nothing to compare it with)."""
    k = len(measures)
    if k < 2:
        return np.zeros_like(measures)
    gaps = np.empty_like(measures)
    for j in range(k):
        gaps[j] = measures[j] - np.median(np.delete(measures, j, axis=0), axis=0)
    return gaps


def block_measures(
    revealed: Revealed, heads: HeadBundle, tokenizer: Tokenizer
) -> tuple[FloatMatrix, Tokenization]:
    """The measures of every revealed block (MEASURES order), and what its opened tokens say about their
    tokenization."""
    blocks = revealed.blocks
    block_codes = np.stack([b.codes for b in blocks]).astype(np.float32)
    answer = np.broadcast_to(revealed.answer_codes.astype(np.float32), block_codes.shape)
    to_answer = heads.pair_logits(heads.block_to_answer, block_codes, answer)
    answer_cos = cosine(block_codes, answer)
    token_codes = np.concatenate([b.token_codes for b in blocks]).astype(np.float32)
    owners = np.concatenate([np.full(len(b.tokens), k) for k, b in enumerate(blocks)])
    to_block = heads.pair_logits(heads.tokens_to_block, token_codes, block_codes[owners])
    if len(blocks) > 1:
        unit = block_codes / np.maximum(np.linalg.norm(block_codes, axis=1, keepdims=True), 1e-12)
        sims = unit @ unit.T
        np.fill_diagonal(sims, np.nan)
        max_cos = np.nanmax(sims, axis=1)
        others = context_codes(block_codes)
        centroid_cos = cosine(block_codes, others)
        to_trace = heads.pair_logits(heads.block_to_trace, block_codes, others)
    else:
        max_cos = centroid_cos = to_trace = np.zeros(1, dtype=np.float32)
    rows = []
    non_tokens = merges = pair_count = 0
    splits: list[int] = []
    for k, block in enumerate(blocks):
        scores = to_block[owners == k]
        pairs = adjacent_pairs(block)
        # Only a pair that merges when re-tokenized can prove a split, which keeps the proof cheap.
        merging = [(index, a, b) for index, a, b in pairs if merges_when_retokenized(a, b, tokenizer)]
        splits += [index for index, a, b in merging if proves_split(a, b, tokenizer)]
        block_merges = len(merging)
        non_tokens += sum(not tokenizer.is_token(t) for t in block.tokens)
        merges += block_merges
        pair_count += len(pairs)
        n = len(block.tokens)
        rows.append(
            [
                float(scores.mean()),
                float(scores.min()),
                float(to_answer[k]),
                float(answer_cos[k]),
                float(to_trace[k]),
                float(centroid_cos[k]),
                float(max_cos[k]),
                sum(len(t) for t in block.tokens) / n,
                sum(t[:1] == b" " for t in block.tokens) / n,
                sum(t.isascii() for t in block.tokens) / n,
                block_merges / len(pairs) if pairs else 0.0,
                sum(a == b for _, a, b in pairs) / len(pairs) if pairs else 0.0,
            ]
        )
    return np.asarray(rows, dtype=np.float32), Tokenization(non_tokens, pair_count, merges, tuple(splits))


def evidence_of(revealed: Revealed, heads: HeadBundle, tokenizer: Tokenizer) -> Evidence:
    measures, tokenization = block_measures(revealed, heads, tokenizer)
    features = (gaps_to_others(measures) / heads.feature_scale).astype(np.float32)
    return Evidence(revealed, measures, features, tokenization)


def block_p_values(scores: npt.NDArray[np.float64], null: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """P-values of block scores against the sorted scores of honest calibration blocks (`null`).

    Up to the null's upper tail, the conformal p-value: the share of honest blocks that score at least
    as high, counting the block itself. A Bonferroni test over dozens of blocks needs p-values far
    below 1/len(null), so in the tail — the top `TAIL_SHARE` of the null, or its top `TAIL_MIN`
    scores if that is more — the p-value follows the exponential law fit to the excesses over the
    tail's threshold (peaks over threshold: tail share × exp(−excess / mean excess))."""
    n = len(null)
    at_least = n - np.searchsorted(null, scores, side="left")
    p = (1.0 + at_least) / (1.0 + n)
    share = max(TAIL_SHARE, TAIL_MIN / max(n, 1))
    if share <= 0.5:  # a null too small for a tail fit keeps its conformal p-values
        threshold = float(np.quantile(null, 1.0 - share))
        excesses = null[null > threshold] - threshold
        if len(excesses) and excesses.mean() > 0:
            tail = scores > threshold
            p[tail] = share * np.exp(-(scores[tail] - threshold) / excesses.mean())
    return np.asarray(np.maximum(p, np.finfo(np.float64).tiny), dtype=np.float64)


def outlier_scores(features: FloatMatrix) -> npt.NDArray[np.float64]:
    """How unlike the other revealed blocks each block is, in any direction: the squared length of its
    clipped, scaled gap vector."""
    clipped = np.clip(features.astype(np.float64), -GAP_CLIP, GAP_CLIP)
    scores: npt.NDArray[np.float64] = (clipped**2).sum(axis=1)
    return scores


@dataclass(frozen=True)
class VerifierStatistic:
    p_value: float  # the smallest p-value of any revealed block, under either score
    worst_block: int  # index of the block it belongs to


def verifier_statistic(evidence: Evidence, heads: HeadBundle) -> VerifierStatistic:
    p = np.minimum(
        block_p_values(heads.block_scores(evidence.features), heads.null_scores),
        block_p_values(outlier_scores(evidence.features), heads.null_outliers),
    )
    worst = int(np.argmin(p))
    return VerifierStatistic(float(p[worst]), evidence.revealed.blocks[worst].index)


def binomial_tail(successes: int, trials: int, rate: float) -> float:
    """P(X >= successes) for X ~ Binomial(trials, rate), summed over the upper tail in log space: a
    binomial coefficient of a thousand trials is beyond a float, and 1 minus the lower tail loses the
    small probabilities the check compares."""
    if successes <= 0 or rate >= 1.0:
        return 1.0
    if successes > trials or rate <= 0.0:
        return 0.0
    log_rate, log_rest, log_trials = math.log(rate), math.log1p(-rate), math.lgamma(trials + 1)
    terms = (
        log_trials - math.lgamma(i + 1) - math.lgamma(trials - i + 1) + i * log_rate + (trials - i) * log_rest
        for i in range(successes, trials + 1)
    )
    return min(1.0, math.fsum(math.exp(term) for term in terms))


@dataclass
class SemanticSuite:
    """Checks 4–8 sharing one evidence computation per opened trace."""

    heads: HeadBundle
    tokenizer: Tokenizer
    policy: ExposurePolicy = field(default_factory=ExposurePolicy)
    _last: tuple[OpenedTrace, Evidence] | None = field(default=None, repr=False)
    _rebuilt: OrderedDict[str, Int8Array] = field(default_factory=OrderedDict, repr=False)
    _rebuilt_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def for_tokenizer(
        cls, heads: HeadBundle, tokenizer_id: str, policy: ExposurePolicy | None = None
    ) -> "SemanticSuite":
        return cls(heads, get_tokenizer(tokenizer_id), policy or ExposurePolicy())

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
            self._last = (opened, evidence_of(revealed_from_opened(opened), self.heads, self.tokenizer))
        return self._last[1]

    def rebuilt_codes(self, texts: Sequence[str], embedder: EmbeddingModel) -> Int8Array:
        """q(Embd(text)) for texts the auditor rebuilt from openings, through a bounded LRU cache: the
        same common tokens come back audit after audit, and every round re-verifies the earlier rounds'
        blocks; without it this Embd call is most of a verification's CPU. Keyed by text alone: callers
        have checked, through `evidence`, that the commitment's embd_id is these heads'."""
        distinct = list(dict.fromkeys(texts))
        with self._rebuilt_lock:
            found = {t: self._rebuilt[t] for t in distinct if t in self._rebuilt}
        missing = [t for t in distinct if t not in found]
        # Each row copied: a view would keep its whole batch alive for as long as it stays cached.
        found.update(
            zip(missing, (row.copy() for row in quantize(embedder.embed_texts(missing))), strict=True)
        )
        # Another verification may have evicted some of `found` meanwhile: each is put back, not moved.
        with self._rebuilt_lock:
            for text in distinct:
                self._rebuilt[text] = found[text]
                self._rebuilt.move_to_end(text)
            while len(self._rebuilt) > REBUILT_CACHE_SIZE:
                self._rebuilt.popitem(last=False)
        return np.stack([found[t] for t in texts])

    def checks(self) -> list[SemanticCheck]:
        return [
            TokensToBlockCheck(self),
            BlockToAnswerCheck(self),
            DuplicateBlocksCheck(self),
            RepeatedTokenCheck(self),
            VocabularyCheck(self),
            SplitTokenCheck(self),
            RetokenizationCheck(self),
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
            self.name, evidence.column("tokens_to_block_mean"), self.suite.heads.calibration
        )


@dataclass
class BlockToAnswerCheck:
    """Check 5: the lowest Block-to-Answer logit over revealed blocks (evidence, as check 4)."""

    suite: SemanticSuite
    name: str = "block_to_answer"

    def __call__(self, opened: OpenedTrace) -> CheckResult:
        evidence = self.suite.evidence(opened)
        return _evidence_result(self.name, evidence.column("block_to_answer"), self.suite.heads.calibration)


def _evidence_result(name: str, logits: FloatMatrix, calibration: dict[str, float]) -> CheckResult:
    worst = float(logits.min())
    alarm = calibration[f"{name}_alarm"]
    below = int((logits < alarm).sum())
    detail = (
        f"min block logit {worst:.2f}; {below} of {len(logits)} blocks below the alarm level {alarm:.2f} "
        "(evidence for the verifier, which decides)"
    )
    return CheckResult(name, "pass", worst, detail, kind="statistical", threshold=alarm)


@dataclass
class DuplicateBlocksCheck:
    """Check 6, statistical: the highest cosine between two distinct revealed blocks. Honest traces do
    repeat themselves (an equation, a rule restated), so this flags, it does not prove."""

    suite: SemanticSuite
    name: str = "duplicate_blocks"

    def __call__(self, opened: OpenedTrace) -> CheckResult:
        evidence = self.suite.evidence(opened)
        if len(evidence.revealed.blocks) < 2:
            return CheckResult(self.name, "pass", None, "one revealed block", kind="statistical")
        worst = float(evidence.column("max_block_cosine").max())
        threshold = self.suite.heads.calibration["duplicate_cosine"]
        # Strictly above: the calibration allows its alpha of honest traces *at* the threshold (above 1,
        # when more honest traces than that reveal two identical blocks, it never flags).
        outcome: Outcome = "suspect" if worst > threshold else "pass"
        detail = f"max cosine between revealed blocks {worst:.4f} (suspect above {threshold:.4f})"
        return CheckResult(self.name, outcome, worst, detail, kind="statistical", threshold=threshold)


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
            return CheckResult(self.name, "fail", worst, detail, threshold=TOKEN_COSINE_THRESHOLD)
        detail = f"{len(indices)} blocks tested; max cosine to their token repeated {worst:.3f}"
        return CheckResult(self.name, "pass", worst, detail, threshold=TOKEN_COSINE_THRESHOLD)


@dataclass
class VocabularyCheck:
    """Check 7, proof: every revealed token is a token of the declared tokenizer's vocabulary (its
    tokenizer cannot produce anything else)."""

    suite: SemanticSuite
    name: str = "vocabulary"

    def __call__(self, opened: OpenedTrace) -> CheckResult:
        evidence = self.suite.evidence(opened)
        tokens = sum(len(block.tokens) for block in evidence.revealed.blocks)
        detail = f"{evidence.tokenization.non_tokens} of {tokens} revealed tokens outside the {self.suite.tokenizer.id} vocabulary"
        outcome: Outcome = "fail" if evidence.tokenization.non_tokens else "pass"
        return CheckResult(self.name, outcome, float(evidence.tokenization.non_tokens), detail, threshold=0.0)


@dataclass
class SplitTokenCheck:
    """Check 7, proof: an opened adjacent pair that the declared tokenizer would never produce — one token
    of its vocabulary cut in two, whatever text surrounds it (`auditor.semantic.tokenization`)."""

    suite: SemanticSuite
    name: str = "split_token"

    def __call__(self, opened: OpenedTrace) -> CheckResult:
        evidence = self.suite.evidence(opened)
        splits = evidence.tokenization.splits
        if splits:
            detail = f"opened pairs ending at {list(splits[:10])} are single {self.suite.tokenizer.id} tokens cut in two"
            return CheckResult(self.name, "fail", float(len(splits)), detail, threshold=0.0)
        detail = f"none of {evidence.tokenization.pairs} adjacent opened pairs is a token cut in two"
        return CheckResult(self.name, "pass", 0.0, detail, threshold=0.0)


@dataclass
class RetokenizationCheck:
    """Check 7, statistical: adjacent opened tokens that the tokenizer would write as one token. Honest
    text has such pairs too, rarely (docs/protocol.md says why), so the count is tested against the
    honest rate per pair: suspect when P(Binomial(pairs, rate) >= merges) is below the check's alpha."""

    suite: SemanticSuite
    name: str = "retokenization"

    def __call__(self, opened: OpenedTrace) -> CheckResult:
        evidence = self.suite.evidence(opened)
        calibration = self.suite.heads.calibration
        alpha, rate = calibration["retokenization_alpha"], calibration["merge_rate"]
        p = binomial_tail(evidence.tokenization.merges, evidence.tokenization.pairs, rate)
        detail = (
            f"{evidence.tokenization.merges} of {evidence.tokenization.pairs} adjacent opened pairs merge when re-tokenized "
            f"(honest rate {rate:.2e} per pair; p = {p:.2e}, suspect below {alpha})"
        )
        outcome: Outcome = "suspect" if p < alpha else "pass"
        return CheckResult(self.name, outcome, p, detail, kind="statistical", threshold=alpha)


@dataclass
class VerifierCheck:
    """Check 8: the audit's statistic (see the module docstring) against its band's threshold, and the
    sequential decision of progressive exposure: suspect below the threshold (the statistic only falls
    as blocks are revealed); pass when the budget is spent, or when a clean sample of `confident_blocks`
    is already as clean as a typical honest trace of its band; else inconclusive."""

    suite: SemanticSuite
    name: str = "verifier"

    def __call__(self, opened: OpenedTrace) -> CheckResult:
        evidence = self.suite.evidence(opened)
        planned = self.suite.policy.block_budget(evidence.revealed.num_blocks)
        statistic = verifier_statistic(evidence, self.suite.heads)
        band = self.suite.heads.verifier_band(planned)
        revealed = len(evidence.revealed.blocks)
        detail = (
            f"smallest block p-value {statistic.p_value:.2e} (block {statistic.worst_block}); "
            f"{revealed} of {planned} planned blocks revealed"
        )

        def result(outcome: Outcome, why: str) -> CheckResult:
            return CheckResult(
                self.name,
                outcome,
                statistic.p_value,
                detail + why,
                kind="statistical",
                threshold=band.threshold,
            )

        if statistic.p_value < band.threshold:
            return result(
                "suspect",
                f"; below {band.threshold:.2e}, the threshold for plans of up to {band.max_planned} blocks",
            )
        if revealed >= planned:
            return result("pass", "; budget spent")
        if revealed >= self.suite.policy.confident_blocks and statistic.p_value >= band.pass_level:
            return result("pass", "; clean sample already conclusive")
        return result("inconclusive", "; reveal more blocks")
