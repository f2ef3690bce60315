"""The evaluation harness: the whole protocol on honest and inflated traces (DESIGN §6).

For each trace (honest) and each (attack, IR) cell, a simulated provider commits through
`auditor.protocol.commitment.commit`, the auditor challenges it round by round (`auditor.semantic.exposure`), the provider
opens, and `auditor.protocol.verify.verify_response` runs checks 1–3 and the semantic checks 4–8
(`auditor.semantic.checks`). The report gives detection per attack x IR, the false-positive rate on honest
traces, the exposure actually used, per domain, with Wilson 95% intervals.

Speed without changing any outcome: the exposure plan (count sample, block order, token runs) does not
depend on the content, and no check ever sees a leaf that was not opened. So round r commits with real
embeddings for the blocks and tokens of rounds 1..r only (`PlannedEmbedder`; every other leaf gets a
placeholder fingerprint) and verifies the cumulative challenge of round r; if that is inconclusive, the
provider re-commits with round r+1's leaves embedded as well. Every revealed leaf, every proof and every
check result is exactly what the fully embedded commitment gives. Embeddings are cached on disk by
content hash (`auditor.research.embedding_cache`).

Structural attacks are simulated as the provider would run them: `overclaim` commits m leaves and
reports m' > m; `coin_padding` pads the tree with copies of the last leaf hash (CoIn's construction).
Neither can open an index >= m, so both answer those indices with the last real leaf (and, under coin/2,
with the profile of the m real tokens).

Commitments are made under `EvalConfig.protocol` (coin/2 by default: the exposure plan opens NGRAM-token
runs and the `repetition_profile` and `copied_spans` checks run on every audit; coin/1 evaluates as
before). `copied_spans` applies `EvalConfig.copy_rule` (the shipped rule unless a fold sets its own).
"""

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from tqdm import tqdm

from auditor.protocol import PROTOCOL_VERSION
from auditor.protocol.commitment import (
    DEFAULT_BLOCK_SIZE,
    Opening,
    Openings,
    PublicCommitment,
    Response,
    commit,
    salt_for,
)
from auditor.protocol.copies import COPY_RULE, CopyRule
from auditor.protocol.errors import ProtocolError
from auditor.protocol.fingerprint import EmbeddingModel
from auditor.protocol.merkle import BLAKE3, MerkleTree
from auditor.protocol.verify import Verification, verify_response
from auditor.research.attacks import ATTACKS, AttackContext, InflatedTrace, inflate
from auditor.research.embedding_cache import CachedEmbedder, PlannedEmbedder
from auditor.research.traces import Trace, json_lines, model_family, stable_fraction
from auditor.semantic.checks import SemanticSuite
from auditor.semantic.exposure import ExposurePlan, ExposurePolicy, min_run_for, plan_exposure

DEFAULT_IRS = (0.1, 0.25, 0.5, 1.0, 3.0)
HONEST = "honest"


@dataclass(frozen=True)
class EvalConfig:
    attacks: tuple[str, ...] = tuple(ATTACKS)
    irs: tuple[float, ...] = DEFAULT_IRS
    block_size: int = DEFAULT_BLOCK_SIZE
    traces_per_cell: int = 50
    honest_traces: int | None = None  # None: every trace
    seed: int = 0
    policy: ExposurePolicy = field(default_factory=ExposurePolicy)
    protocol: str = PROTOCOL_VERSION
    # The copied_spans rule the audits apply; None: the shipped COPY_RULE, fitted on every domain of the
    # corpus. A leave-one-domain-out fold sets its own, fitted without its domain (`lodo.run_fold`).
    copy_rule: CopyRule | None = None


@dataclass(frozen=True)
class AuditOutcome:
    """One audited report: what was attacked, the verdict, and the exposure it took."""

    trace_id: str
    domain: str
    model_family: str
    genuine_tokens: int  # the honest trace's length, which the length bands go by
    attack: str
    requested_ir: float
    ir: float
    verdict: str  # pass | suspect | fail | inconclusive
    failed_checks: tuple[str, ...]  # proof checks that failed
    flagged_checks: tuple[str, ...]  # statistical checks that flagged
    verifier_p_value: float | None
    rounds: int
    block_exposure: float
    token_visibility: float
    # Content attacks: whether the full exposure plan (every round, the whole budget) reveals a block
    # holding an injected token — what a perfect per-block judge would need — and whether it opens an
    # injected token itself (what a token-level judge needs). None otherwise.
    reachable: bool | None = None
    token_reachable: bool | None = None

    @property
    def detected(self) -> bool:
        """The audit said `fail` (proof) or `suspect` (statistical evidence)."""
        return self.verdict in ("fail", "suspect")


def read_outcomes(path: Path) -> list[AuditOutcome]:
    """The audits of one `outcomes.jsonl`; a line that is not one is a ProtocolError naming the file
    and line."""
    known = {f.name for f in fields(AuditOutcome)}
    required = {f.name for f in fields(AuditOutcome) if f.default is MISSING}
    outcomes = []
    for where, obj in json_lines(path):
        if not isinstance(obj, dict):
            raise ProtocolError(f"{where}: expected a JSON object (an audit outcome)")
        if missing := required - obj.keys():
            raise ProtocolError(f"{where}: not an audit outcome (missing {', '.join(sorted(missing))})")
        row = {k: v for k, v in obj.items() if k in known}
        row["failed_checks"] = tuple(row["failed_checks"])
        row["flagged_checks"] = tuple(row["flagged_checks"])
        outcomes.append(AuditOutcome(**row))
    return outcomes


def _verifier_figure(verification: Verification) -> float | None:
    for check in verification.checks:
        if check.name == "verifier":
            return check.figure
    return None


class Auditor:
    """Runs single audits: simulated provider (commit, open) and the real verifier path."""

    def __init__(self, embedder: EmbeddingModel, suite: SemanticSuite, config: EvalConfig) -> None:
        self.embedder = embedder
        self.suite = suite
        self.config = config

    def audit(
        self,
        trace: Trace,
        tokens: Sequence[bytes],
        inflated: InflatedTrace | None,
        rng: random.Random,
        genuine_tokens: int,
    ) -> AuditOutcome:
        secret = rng.randbytes(32)
        claimed = inflated.claimed_size if inflated else len(tokens)
        config = self.config
        plan = plan_exposure(claimed, config.block_size, config.policy, rng, min_run_for(config.protocol))
        structural = inflated.structural if inflated else "none"
        suite = self.suite
        verification: Verification | None = None
        rounds = 0
        for r in range(plan.rounds):
            rounds = r + 1
            end = plan.round_ends[r]
            blocks = plan.blocks[:end]
            positions = {i for run in plan.runs[:end] for i in run}
            embedder = PlannedEmbedder.for_plan(
                self.embedder, tokens, trace.answer, self.config.block_size, blocks, positions
            )
            public, openings = commit(
                list(tokens),
                trace.answer,
                secret,
                block_size=config.block_size,
                embedder=embedder,
                version=config.protocol,
            )
            challenge = plan.challenge(r)
            if structural == "none":
                response = openings.respond(challenge.indices, challenge.content_indices)
            else:
                public, response = _structural_response(public, openings, claimed, structural, plan, r)
            verification = verify_response(
                public,
                challenge,
                response,
                embedder=self.embedder,
                semantic_checks=suite.checks(),
                copy_rule=config.copy_rule or COPY_RULE,
            )
            if verification.verdict != "inconclusive":
                break
        assert verification is not None
        challenge = plan.challenge(rounds - 1)
        reachable = token_reachable = None
        if inflated is not None and structural == "none":
            size, injected = self.config.block_size, inflated.injected
            reachable = any(any(injected[b * size : (b + 1) * size]) for b in plan.blocks)
            token_reachable = any(injected[i] for run in plan.runs for i in run)
        return AuditOutcome(
            trace_id=trace.id,
            domain=trace.domain,
            model_family=model_family(trace.model),
            genuine_tokens=genuine_tokens,
            attack=inflated.attack if inflated else HONEST,
            requested_ir=inflated.requested_ir if inflated else 0.0,
            ir=inflated.ir if inflated else 0.0,
            verdict=verification.verdict,
            failed_checks=tuple(c.name for c in verification.failed),
            flagged_checks=tuple(c.name for c in verification.flagged),
            verifier_p_value=_verifier_figure(verification),
            rounds=rounds,
            block_exposure=challenge.block_exposure,
            token_visibility=challenge.token_visibility,
            reachable=reachable,
            token_reachable=token_reachable,
        )


def _structural_response(
    public: PublicCommitment, openings: Openings, claimed: int, structural: str, plan: ExposurePlan, r: int
) -> tuple[PublicCommitment, Response]:
    """A provider that committed m real leaves but reports `claimed` > m (see the module docstring)."""
    m = len(openings.tokens)
    if structural == "duplicate_last_leaf":
        leaves = [openings.tree.leaf_hash(i) for i in range(m)]
        tree = MerkleTree(leaves + [leaves[-1]] * (claimed - m), BLAKE3)
    else:
        tree = openings.tree
    public = dataclasses.replace(
        public, commitment=dataclasses.replace(public.commitment, root=tree.root, size=claimed)
    )
    version = public.commitment.version
    challenge = plan.challenge(r)
    content = set(challenge.content_indices)
    out = []
    for index in challenge.indices:
        source = min(index, m - 1)  # indices past the real leaves can only be answered with the last one
        proof = tuple(tree.inclusion_proof(min(index, tree.size - 1)))
        salt = salt_for(openings.secret, source, version)
        if index in content:
            out.append(
                Opening(index, salt, proof, openings.fingerprints[source].tobytes(), openings.tokens[source])
            )
        else:
            digest_only = openings.open(source, content=False).fingerprint_digest
            out.append(Opening(index, salt, proof, fingerprint_digest_only=digest_only))
    repetition = openings.repetition
    real = [i for i in challenge.content_indices if i < m]
    return public, Response(tuple(out), repetition.open(real) if repetition else None)


def _cell_traces(traces: Sequence[Trace], n: int | None, seed: int, salt: str) -> list[Trace]:
    ranked = sorted(traces, key=lambda t: stable_fraction(f"{salt}:{t.id}", seed))
    return ranked if n is None else ranked[:n]


def run_evaluation(
    traces: Sequence[Trace],
    embedder: EmbeddingModel,
    suite: SemanticSuite,
    config: EvalConfig,
    *,
    pool: Sequence[Trace] | None = None,
    save_every: int = 200,
) -> list[AuditOutcome]:
    """Audit every honest trace (or `honest_traces` of them) and `traces_per_cell` traces per cell.
    The attacks draw their material (other domains, similar questions, Markov text) from `pool`
    (default: `traces`)."""
    ctx = AttackContext(suite.tokenizer, pool or traces, config.block_size)
    auditor = Auditor(embedder, suite, config)
    honest = _cell_traces(traces, config.honest_traces, config.seed, HONEST)
    attacked = _cell_traces(traces, config.traces_per_cell, config.seed, "attacked")
    jobs: list[tuple[Trace, str, float]] = [(t, HONEST, 0.0) for t in honest]
    jobs += [(t, a, ir) for a in config.attacks for ir in config.irs for t in attacked]
    outcomes: list[AuditOutcome] = []
    for k, (trace, attack, ir) in enumerate(tqdm(jobs, desc="audits", unit="audit")):
        rng = random.Random(f"{config.seed}:{trace.id}:{attack}:{ir}")
        tokens = ctx.tokens(trace)
        if len(tokens) < 2:
            continue
        inflated = None if attack == HONEST else inflate(trace, attack, ir, rng, ctx)
        committed = list(inflated.tokens) if inflated else tokens
        outcomes.append(auditor.audit(trace, committed, inflated, rng, len(tokens)))
        if isinstance(embedder, CachedEmbedder) and (k + 1) % save_every == 0:
            embedder.save()
    if isinstance(embedder, CachedEmbedder):
        embedder.save()
    return outcomes


# --- the report ---------------------------------------------------------------------------------------
