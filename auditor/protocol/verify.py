"""The auditor's checks of a response against a commitment (DESIGN §3, "Verification checks" 1–3).

1. ``proof``: every challenged index is opened (content indices with their fingerprint and token) and
   every audit path verifies against (root, size) — RFC 9162 §2.1.3.2.
2. ``block_consistency``: all content openings of one block carry the same block embedding.
3. ``token_embedding``: q(Embd(token)) matches the committed token half (cosine >= 0.98), so the
   provider really used Embd — a check CoIn lacks.

Under `coin/2` two more proof checks read the repetition profile (`auditor.protocol.repetition`):

- ``repetition_profile``: the response's profile is the one the report committed (its digest), every
  bucket key it opens is in the committed key tree, and every fingerprint whose n-gram the content
  openings reveal is the one those tokens give — the only test of a profile entry, so the detail states
  the chance this challenge had of catching a profile lied on 5% of its positions;
- ``copied_spans``: the committed profile holds more copied text than the honest bound fitted to the
  measured honest traces — an empirical bound, unlike the others (`auditor.protocol.copies`,
  docs/protocol.md).

Checks 4–8 (matching heads, duplicates, tokenization plausibility, aggregation) plug in through the
``semantic_checks`` seam: each is a ``SemanticCheck`` that sees the verified openings as an
``OpenedTrace`` and returns a ``CheckResult``. They run only when checks 1–3 hold, since semantics of
unproven leaves mean nothing.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from auditor.protocol.challenge import DEFAULT_EPSILON, Challenge, detection_probability
from auditor.protocol.commitment import Commitment, Opening, PublicCommitment, Response
from auditor.protocol.copies import COPY_RULE, CopyRule, copy_figures
from auditor.protocol.errors import ProofError, ProtocolError
from auditor.protocol.fingerprint import EMBED_DIM, EmbeddingModel, Int8Array, cosine, get_embedder, quantize
from auditor.protocol.merkle import BLAKE3, verify_inclusion
from auditor.protocol.repetition import (
    NGRAM,
    PROFILE_BYTES,
    RepetitionCommitment,
    RepetitionOpening,
    bucket_of,
    fingerprint,
    profile_digest,
    revealed_ngram_hashes,
)

log = logging.getLogger(__name__)

TOKEN_COSINE_THRESHOLD = 0.98
# `fail`: a proof check found evidence that identifies inflation; `suspect`: a statistical check flags the
# trace (evidence for monitoring, no accusation); `inconclusive`: more revealed blocks are wanted.
Outcome = Literal["pass", "suspect", "fail", "inconclusive"]
# `proof`: may accuse — cannot fire on honest text (argued and measured in docs/protocol.md; for
# `copied_spans` a bound fitted to honest traces); `statistical`: a calibrated judgement with a
# false-positive rate.
CheckKind = Literal["proof", "statistical"]


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome, with the figure it was decided on, the threshold it was compared with, and a
    human-readable detail. Only a proof check may fail an audit; a statistical one may only flag it."""

    name: str
    outcome: Outcome
    figure: float | None = None
    detail: str = ""
    kind: CheckKind = "proof"
    threshold: float | None = None

    def __post_init__(self) -> None:
        if (self.kind, self.outcome) in (("proof", "suspect"), ("statistical", "fail")):
            raise ValueError(f"check {self.name}: a {self.kind} check cannot say {self.outcome!r}")

    @property
    def passed(self) -> bool:
        return self.outcome == "pass"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "outcome": self.outcome,
            "figure": self.figure,
            "threshold": self.threshold,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class OpenedTrace:
    """What the semantic checks may see: the public commitment, the challenge and verified openings,
    and the auditor's own Embd (to embed text rebuilt from what was revealed)."""

    public: PublicCommitment
    challenge: Challenge
    content: tuple[Opening, ...]
    embedder: EmbeddingModel
    block_codes: dict[int, Int8Array] = field(default_factory=dict)

    @property
    def tokens(self) -> list[bytes]:
        return [o.token or b"" for o in self.content]

    @property
    def token_codes(self) -> Int8Array:
        if not self.content:
            return np.zeros((0, EMBED_DIM), dtype=np.int8)
        return np.stack([o.token_codes for o in self.content])


class SemanticCheck(Protocol):
    name: str

    def __call__(self, opened: OpenedTrace) -> CheckResult: ...


@dataclass(frozen=True)
class Verification:
    checks: tuple[CheckResult, ...]
    count_detection_probability: float

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(c for c in self.checks if c.outcome == "fail")

    @property
    def flagged(self) -> tuple[CheckResult, ...]:
        return tuple(c for c in self.checks if c.outcome == "suspect")

    @property
    def verdict(self) -> Outcome:
        """`fail` on any proof; else `inconclusive` while a check wants more blocks (progressive exposure
        reveals them, and may still find a proof); else `suspect` on any statistical flag; else `pass`."""
        if self.failed:
            return "fail"
        if any(c.outcome == "inconclusive" for c in self.checks):
            return "inconclusive"
        return "suspect" if self.flagged else "pass"

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "checks": [c.to_json() for c in self.checks],
            "count_detection_probability": self.count_detection_probability,
        }


def _check_proofs(public: PublicCommitment, challenge: Challenge, response: Response) -> CheckResult:
    commitment = public.commitment
    by_index: dict[int, Opening] = {}
    for opening in response.openings:
        if opening.index in by_index:
            return CheckResult("proof", "fail", None, f"index {opening.index} opened twice")
        by_index[opening.index] = opening
    wanted = set(challenge.indices)
    missing = sorted(wanted - by_index.keys())
    extra = sorted(by_index.keys() - wanted)
    if missing or extra:
        detail = "; ".join(
            f"{what} indices {found[:10]}"
            for what, found in (("missing", missing), ("unrequested", extra))
            if found
        )
        return CheckResult("proof", "fail", len(missing) + len(extra), detail)
    bare = [i for i in challenge.content_indices if not by_index[i].is_content]
    if bare:
        return CheckResult("proof", "fail", len(bare), f"content indices opened without content: {bare[:10]}")
    bad: list[str] = []
    for index in sorted(wanted):
        opening = by_index[index]
        try:
            verify_inclusion(
                opening.leaf_hash, index, commitment.size, opening.proof, commitment.root, BLAKE3
            )
        except ProofError as exc:
            bad.append(f"{index}: {exc}")
    if bad:
        return CheckResult("proof", "fail", len(bad), f"{len(bad)} of {len(wanted)} paths fail; {bad[:3]}")
    return CheckResult(
        "proof", "pass", 0, f"{len(wanted)} paths verify against (root, size={commitment.size})"
    )


def _check_blocks(
    challenge: Challenge, content: Sequence[Opening]
) -> tuple[CheckResult, dict[int, Int8Array]]:
    blocks: dict[int, Int8Array] = {}
    inconsistent: set[int] = set()
    for opening in content:
        block = opening.index // challenge.block_size
        codes = opening.block_codes
        if block in blocks and not np.array_equal(blocks[block], codes):
            inconsistent.add(block)
        blocks.setdefault(block, codes)
    if inconsistent:
        detail = f"blocks {sorted(inconsistent)[:10]} carry different block embeddings in different leaves"
        return CheckResult("block_consistency", "fail", len(inconsistent), detail), blocks
    return CheckResult("block_consistency", "pass", 0, f"{len(blocks)} revealed blocks consistent"), blocks


def _check_token_embeddings(content: Sequence[Opening], embedder: EmbeddingModel) -> CheckResult:
    if not content:
        return CheckResult("token_embedding", "pass", None, "no content openings")
    expected = quantize(embedder.embed_tokens([o.token or b"" for o in content]))
    committed = np.stack([o.token_codes for o in content])
    sims = cosine(expected, committed)
    worst = float(sims.min())
    low = [content[int(k)].index for k in np.flatnonzero(sims < TOKEN_COSINE_THRESHOLD)]
    if low:
        detail = f"{len(low)} tokens do not match their committed embedding (indices {low[:10]})"
        return CheckResult("token_embedding", "fail", worst, detail, threshold=TOKEN_COSINE_THRESHOLD)
    return CheckResult(
        "token_embedding",
        "pass",
        worst,
        f"min cosine {worst:.4f} >= {TOKEN_COSINE_THRESHOLD}",
        threshold=TOKEN_COSINE_THRESHOLD,
    )


def _profile_refusal(commitment: Commitment, opened: RepetitionOpening | None) -> str:
    """Why the response's profile is not the one the report committed ("" when it is, or when neither
    has one)."""
    committed, size = commitment.repetition, commitment.size
    if committed is None:
        return (
            "" if opened is None else f"{commitment.version} has no repetition profile; the response sent one"
        )
    if opened is None:
        return "a coin/2 response must carry the repetition profile"
    if len(opened.profile) != size * PROFILE_BYTES:
        return f"the profile holds {len(opened.profile) // PROFILE_BYTES} fingerprints, not {size}"
    if profile_digest(opened.profile) != committed.digest:
        return "the profile is not the one the report committed (its digest differs)"
    return ""


def _check_fingerprints(
    committed: RepetitionCommitment, size: int, content: Sequence[Opening], opened: RepetitionOpening
) -> CheckResult:
    """Each fingerprint whose n-gram the content openings reveal, recomputed with its bucket's committed
    key (all computed first, then compared)."""
    hashes = revealed_ngram_hashes({o.index: o.token or b"" for o in content})
    needed = {bucket_of(h, size) for h in hashes.values()}
    keys = {k.bucket: k for k in opened.keys}
    if keys.keys() != needed:
        missing, extra = sorted(needed - keys.keys()), sorted(keys.keys() - needed)
        detail = f"bucket keys missing {missing[:10]}, unrequested {extra[:10]}"
        return CheckResult("repetition_profile", "fail", None, detail)
    for key in opened.keys:
        try:
            verify_inclusion(key.leaf_hash, key.bucket, size, key.proof, committed.key_root, BLAKE3)
        except ProofError as exc:
            detail = f"bucket key {key.bucket} is not in the committed key tree: {exc}"
            return CheckResult("repetition_profile", "fail", None, detail)
    expected = {i: fingerprint(keys[bucket_of(h, size)].key, h) for i, h in hashes.items()}
    lied = [i for i, r in expected.items() if opened.fingerprint_at(i) != r]
    if lied:
        detail = f"fingerprints at {lied[:10]} are not those of their revealed n-grams: the profile lies"
        return CheckResult("repetition_profile", "fail", len(lied), detail)
    catch = detection_probability(DEFAULT_EPSILON, len(expected))
    detail = (
        f"profile committed by the report; {len(expected)} fingerprints recomputed from revealed tokens "
        f"(a profile lied on {DEFAULT_EPSILON:.0%} of its positions past each block's first {NGRAM - 1} is "
        f"caught with probability {catch:.3f})"
    )
    return CheckResult("repetition_profile", "pass", len(expected), detail)


def _check_copies(profile: bytes, rule: CopyRule) -> CheckResult:
    figures = copy_figures(profile)
    # Report the mass that comes closer to its threshold (both are in the detail).
    copied_share, repeated_share = (
        figures.copied_fraction / rule.copied,
        figures.repeated_fraction / rule.repeated,
    )
    figure, threshold = (
        (figures.copied_fraction, rule.copied)
        if copied_share >= repeated_share
        else (figures.repeated_fraction, rule.repeated)
    )
    detail = (
        f"copied {figures.copied} tokens ({figures.copied_fraction:.1%}, fail above {rule.copied:.0%}), "
        f"repeated elsewhere {figures.repeated} ({figures.repeated_fraction:.1%}, fail above "
        f"{rule.repeated:.0%}), each mass at least {rule.min_tokens} tokens to fail; {figures.copies} copies, "
        f"the longest {figures.longest} tokens; the {rule.label} rule"
    )
    outcome: Outcome = "fail" if figures.proves_copying(rule) else "pass"
    return CheckResult("copied_spans", outcome, figure, detail, threshold=threshold)


def verify_response(
    public: PublicCommitment,
    challenge: Challenge,
    response: Response,
    *,
    embedder: EmbeddingModel | None = None,
    semantic_checks: Sequence[SemanticCheck] = (),
    copy_rule: CopyRule = COPY_RULE,
) -> Verification:
    """Run checks 1–3 (and under coin/2 the profile checks), then the semantic checks, and return every
    result with its figure."""
    commitment = public.commitment
    if (challenge.size, challenge.block_size) != (commitment.size, commitment.block_size):
        raise ProtocolError("challenge: size or block_size differ from the commitment's")
    embd = embedder or get_embedder()
    if commitment.embd_id != embd.embd_id:
        raise ProtocolError(
            f"commitment.embd_id: {commitment.embd_id!r} is not this auditor's {embd.embd_id!r}"
        )
    k = len(challenge.count_indices)
    proof = _check_proofs(public, challenge, response)
    checks = [proof]
    if proof.passed:
        wanted = set(challenge.content_indices)
        content = tuple(o for o in response.openings if o.index in wanted)
        consistency, blocks = _check_blocks(challenge, content)
        checks += [consistency, _check_token_embeddings(content, embd)]
        committed, profile = commitment.repetition, response.repetition
        refusal = _profile_refusal(commitment, profile)
        if refusal:  # a proof failure, like a wrong opening: a malformed answer cannot turn one away
            checks.append(CheckResult("repetition_profile", "fail", None, refusal))
        elif committed is not None and profile is not None:
            checks += [
                _check_fingerprints(committed, commitment.size, content, profile),
                _check_copies(profile.profile, copy_rule),
            ]
        if all(c.passed for c in checks):
            opened = OpenedTrace(public, challenge, content, embd, blocks)
            checks += [_run_semantic(check, opened) for check in semantic_checks]
    return Verification(tuple(checks), detection_probability(DEFAULT_EPSILON, k))


def _run_semantic(check: SemanticCheck, opened: OpenedTrace) -> CheckResult:
    """The check's result; `inconclusive`, naming the error, when it raises on this response's data —
    else a response that makes one check raise would throw away the proof failures the others find, and a
    provider could turn its `fail` into no verdict at all. Faults of the auditor's own (its models, memory,
    a time limit) are not the response's doing: they still stop the verification, which is tried again."""
    try:
        return check(opened)
    except ProtocolError:  # a ValueError, but the auditor's mismatch (e.g. of heads and model), not data
        raise
    except (ArithmeticError, LookupError, TypeError, ValueError, RecursionError) as error:
        log.exception("semantic check %s raised on a response", check.name)
        return CheckResult(
            check.name, "inconclusive", None, f"the check raised {type(error).__name__}: not decided"
        )
