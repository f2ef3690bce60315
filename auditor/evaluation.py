"""The evaluation harness: the whole protocol on honest and inflated traces (DESIGN §6).

For each trace (honest) and each (attack, IR) cell, a simulated provider commits through
`auditor.commitment.commit`, the auditor challenges it round by round (`auditor.exposure`), the provider
opens, and `auditor.verify.verify_response` runs checks 1–3 and the semantic checks 4–8
(`auditor.semantic`). The report gives detection per attack x IR, the false-positive rate on honest
traces, the exposure actually used, per domain, with Wilson 95% intervals.

Speed without changing any outcome: the exposure plan (count sample, block order, token runs) does not
depend on the content, and no check ever sees a leaf that was not opened. So round r commits with real
embeddings for the blocks and tokens of rounds 1..r only (`PlannedEmbedder`; every other leaf gets a
placeholder fingerprint) and verifies the cumulative challenge of round r; if that is inconclusive, the
provider re-commits with round r+1's leaves embedded as well. Every revealed leaf, every proof and every
check result is exactly what the fully embedded commitment gives. Embeddings are cached on disk by
content hash (`auditor.embedding_cache`).

Structural attacks are simulated as the provider would run them: `overclaim` commits m leaves and
reports m' > m; `coin_padding` pads the tree with copies of the last leaf hash (CoIn's construction).
Neither can open an index >= m, so both answer those indices with the last real leaf.
"""

import json
import math
import random
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from auditor.attacks import ATTACKS, AttackContext, InflatedTrace, inflate
from auditor.commitment import (
    AnswerCommitment,
    Commitment,
    Opening,
    Openings,
    PublicCommitment,
    Response,
    commit,
    salt_for,
)
from auditor.embedding_cache import CachedEmbedder, PlannedEmbedder
from auditor.exposure import ExposurePlan, ExposurePolicy, plan_exposure
from auditor.fingerprint import EmbeddingModel
from auditor.heads.train import calibrate_on_reference
from auditor.merkle import BLAKE3, MerkleTree
from auditor.semantic import SemanticSuite, VerifierKind
from auditor.traces import Trace, stable_fraction
from auditor.verify import Verification, verify_response

DEFAULT_IRS = (0.1, 0.25, 0.5, 1.0, 3.0)
HONEST = "honest"


@dataclass(frozen=True)
class EvalConfig:
    attacks: tuple[str, ...] = tuple(ATTACKS)
    irs: tuple[float, ...] = DEFAULT_IRS
    block_size: int = 16
    traces_per_cell: int = 50
    honest_traces: int | None = None  # None: every trace
    seed: int = 0
    verifier: VerifierKind = "deepset"
    policy: ExposurePolicy = field(default_factory=ExposurePolicy)
    # Recorded in the report. > 0: `coin eval` held back this share of the questions as honest reference
    # traces (`split_reference`) and re-fit each domain's thresholds on them (`reference_suites`).
    reference_share: float = 0.0


@dataclass(frozen=True)
class AuditOutcome:
    """One audited report: what was attacked, the verdict, and the exposure it took."""

    trace_id: str
    domain: str
    attack: str
    requested_ir: float
    ir: float
    verdict: str
    failed_checks: tuple[str, ...]
    benign_probability: float | None
    rounds: int
    block_exposure: float
    token_visibility: float
    # Content attacks: whether the full exposure plan (every round, the whole budget) reveals a block
    # holding an injected token — what a perfect per-block judge would need — and whether it opens an
    # injected token itself (what a token-level judge needs). None otherwise.
    reachable: bool | None = None
    token_reachable: bool | None = None

    @property
    def flagged(self) -> bool:
        return self.verdict == "fail"


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default); (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _verifier_figure(verification: Verification) -> float | None:
    for check in verification.checks:
        if check.name == "verifier":
            return check.figure
    return None


class Auditor:
    """Runs single audits: simulated provider (commit, open) and the real verifier path."""

    def __init__(
        self,
        embedder: EmbeddingModel,
        suite: SemanticSuite,
        config: EvalConfig,
        domain_suites: Mapping[str, SemanticSuite] | None = None,
    ) -> None:
        self.embedder = embedder
        self.suite = suite
        self.config = config
        self.domain_suites = dict(domain_suites or {})

    def audit(
        self, trace: Trace, tokens: Sequence[bytes], inflated: InflatedTrace | None, rng: random.Random
    ) -> AuditOutcome:
        secret = rng.randbytes(32)
        claimed = inflated.claimed_size if inflated else len(tokens)
        plan = plan_exposure(claimed, self.config.block_size, self.config.policy, rng)
        structural = inflated.structural if inflated else "none"
        suite = self.domain_suites.get(trace.domain, self.suite)
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
                list(tokens), trace.answer, secret, block_size=self.config.block_size, embedder=embedder
            )
            challenge = plan.challenge(r)
            if structural == "none":
                response = openings.respond(challenge.indices, challenge.content_indices)
            else:
                public, response = _structural_response(public, openings, claimed, structural, plan, r)
            verification = verify_response(
                public, challenge, response, embedder=self.embedder, semantic_checks=suite.checks()
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
            attack=inflated.attack if inflated else HONEST,
            requested_ir=inflated.requested_ir if inflated else 0.0,
            ir=inflated.ir if inflated else 0.0,
            verdict=verification.verdict,
            failed_checks=tuple(c.name for c in verification.failed),
            benign_probability=_verifier_figure(verification),
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
    commitment = public.commitment
    public = PublicCommitment(
        Commitment(tree.root, claimed, commitment.block_size, commitment.embd_id, commitment.tokenizer_id),
        AnswerCommitment(public.answer.digest, public.answer.embedding, public.answer.text),
    )
    challenge = plan.challenge(r)
    content = set(challenge.content_indices)
    out = []
    for index in challenge.indices:
        source = min(index, m - 1)  # indices past the real leaves can only be answered with the last one
        proof = tuple(tree.inclusion_proof(min(index, tree.size - 1)))
        salt = salt_for(openings.secret, source)
        if index in content:
            out.append(
                Opening(index, salt, proof, openings.fingerprints[source].tobytes(), openings.tokens[source])
            )
        else:
            digest_only = openings.open(source, content=False).fingerprint_digest
            out.append(Opening(index, salt, proof, fingerprint_digest_only=digest_only))
    return public, Response(tuple(out))


def reference_suites(
    reference: Sequence[Trace], suite: SemanticSuite, embedder: EmbeddingModel, config: EvalConfig
) -> dict[str, SemanticSuite]:
    """One suite per domain of `reference`: the same heads, every threshold re-fit on that domain's
    honest reference traces at the shipped target rate (`auditor.heads.train.calibrate_on_reference`)."""
    by_domain: dict[str, list[Trace]] = defaultdict(list)
    for trace in reference:
        by_domain[trace.domain].append(trace)
    target_fpr = suite.heads.calibration["target_fpr"]
    return {
        domain: SemanticSuite(
            calibrate_on_reference(
                suite.heads,
                traces,
                suite.tokenizer,
                embedder,
                config.policy,
                block_size=config.block_size,
                target_fpr=target_fpr,
                seed=config.seed,
            ),
            suite.tokenizer,
            suite.policy,
            suite.verifier,
        )
        for domain, traces in sorted(by_domain.items())
    }


def _cell_traces(traces: Sequence[Trace], n: int | None, seed: int, salt: str) -> list[Trace]:
    ranked = sorted(traces, key=lambda t: stable_fraction(f"{salt}:{t.id}", seed))
    return ranked if n is None else ranked[:n]


def run_evaluation(
    traces: Sequence[Trace],
    embedder: EmbeddingModel,
    suite: SemanticSuite,
    config: EvalConfig,
    *,
    domain_suites: Mapping[str, SemanticSuite] | None = None,
    save_every: int = 200,
) -> list[AuditOutcome]:
    """Audit every honest trace (or `honest_traces` of them) and `traces_per_cell` traces per cell,
    each domain with its own suite where `domain_suites` has one (else `suite`)."""
    ctx = AttackContext(suite.tokenizer, traces, config.block_size)
    auditor = Auditor(embedder, suite, config, domain_suites)
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
        outcomes.append(auditor.audit(trace, committed, inflated, rng))
        if isinstance(embedder, CachedEmbedder) and (k + 1) % save_every == 0:
            embedder.save()
    if isinstance(embedder, CachedEmbedder):
        embedder.save()
    return outcomes


# --- the report ---------------------------------------------------------------------------------------


def _rate(flags: Sequence[bool]) -> dict[str, float | int]:
    hits = int(sum(flags))
    low, high = wilson(hits, len(flags))
    return {
        "rate": hits / len(flags) if flags else float("nan"),
        "ci_low": low,
        "ci_high": high,
        "n": len(flags),
    }


def summarise(outcomes: Sequence[AuditOutcome], config: EvalConfig, meta: dict[str, Any]) -> dict[str, Any]:
    honest = [o for o in outcomes if o.attack == HONEST]
    fpr = _rate([o.flagged for o in honest])
    cells: dict[tuple[str, float], list[AuditOutcome]] = defaultdict(list)
    by_domain: dict[tuple[str, str, float], list[AuditOutcome]] = defaultdict(list)
    for o in outcomes:
        if o.attack != HONEST:
            cells[(o.attack, o.requested_ir)].append(o)
            by_domain[(o.domain, o.attack, o.requested_ir)].append(o)
    detection = []
    for (attack, ir), group in sorted(
        cells.items(), key=lambda kv: (config.attacks.index(kv[0][0]), kv[0][1])
    ):
        rate = _rate([o.flagged for o in group])
        reachable = [o.reachable for o in group if o.reachable is not None]
        token_reachable = [o.token_reachable for o in group if o.token_reachable is not None]
        detection.append(
            {
                "attack": attack,
                "kind": ATTACKS[attack].kind,
                "ir": ir,
                "achieved_ir": float(np.mean([o.ir for o in group])),
                "detection_rate": rate["rate"],
                "ci_low": rate["ci_low"],
                "ci_high": rate["ci_high"],
                "n": rate["n"],
                "reachable_rate": float(np.mean(reachable)) if reachable else None,
                "token_reachable_rate": float(np.mean(token_reachable)) if token_reachable else None,
                "mean_block_exposure": float(np.mean([o.block_exposure for o in group])),
                "mean_token_visibility": float(np.mean([o.token_visibility for o in group])),
                "failed_checks": _check_counts(group),
            }
        )
    domains = sorted({o.domain for o in outcomes})
    per_domain = []
    for domain in domains:
        mine = [o for o in honest if o.domain == domain]
        row: dict[str, Any] = {"domain": domain, "false_positive": _rate([o.flagged for o in mine])}
        row["honest_block_exposure"] = float(np.mean([o.block_exposure for o in mine])) if mine else None
        row["honest_token_visibility"] = float(np.mean([o.token_visibility for o in mine])) if mine else None
        row["detection"] = [
            {"attack": a, "ir": ir, **_rate([o.flagged for o in group])}
            for (d, a, ir), group in sorted(by_domain.items())
            if d == domain
        ]
        per_domain.append(row)
    return {
        "meta": meta,
        "config": {**asdict(config), "policy": asdict(config.policy)},
        "false_positive_rate": fpr["rate"],
        "false_positive_ci": [fpr["ci_low"], fpr["ci_high"]],
        "honest_n": fpr["n"],
        "honest_failed_checks": _check_counts(honest),
        "mean_block_exposure": float(np.mean([o.block_exposure for o in outcomes])),
        "mean_token_visibility": float(np.mean([o.token_visibility for o in outcomes])),
        "honest_mean_block_exposure": float(np.mean([o.block_exposure for o in honest])) if honest else None,
        "honest_mean_token_visibility": float(np.mean([o.token_visibility for o in honest]))
        if honest
        else None,
        "detection": detection,
        "per_domain": per_domain,
        "roc": roc_points(outcomes),
    }


def _check_counts(group: Sequence[AuditOutcome]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for o in group:
        for name in o.failed_checks:
            counts[name] += 1
    return dict(sorted(counts.items()))


def roc_points(outcomes: Sequence[AuditOutcome]) -> dict[str, Any]:
    """ROC of the verifier's final P(benign): honest traces against inflated ones, per IR (content
    attacks only; structural ones never reach the semantic checks)."""
    honest = [
        o.benign_probability for o in outcomes if o.attack == HONEST and o.benign_probability is not None
    ]
    curves: dict[str, Any] = {}
    for ir in sorted({o.requested_ir for o in outcomes if o.attack != HONEST}):
        attacked = [
            o.benign_probability
            for o in outcomes
            if o.attack != HONEST and o.requested_ir == ir and o.benign_probability is not None
        ]
        if not honest or not attacked:
            continue
        # At most ~200 operating points: enough for the plot, small enough for report.json.
        thresholds = sorted(set(np.quantile(honest + attacked, np.linspace(0, 1, 201)).tolist()))
        fpr = [float(np.mean([h < t for h in honest])) for t in thresholds] + [1.0]
        tpr = [float(np.mean([a < t for a in attacked])) for t in thresholds] + [1.0]
        area = float(np.trapezoid([0.0, *tpr], [0.0, *fpr]))
        curves[str(ir)] = {"fpr": fpr, "tpr": tpr, "auc": area}
    return curves


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _calibration_line(reference_traces: dict[str, int] | None) -> str:
    if not reference_traces:
        return "Calibration: the shipped thresholds (honest validation traces of the training domains)."
    counts = ", ".join(f"{domain} {n}" for domain, n in sorted(reference_traces.items()))
    return (
        "Calibration: per domain, on honest reference traces of questions the evaluation never sees "
        f"({counts} traces)."
    )


def render_markdown(report: dict[str, Any]) -> str:
    lines = ["# CoIn Audit evaluation", ""]
    meta = report["meta"]
    lines += [
        f"Traces: {', '.join(meta.get('trace_files', []))} — domains {', '.join(meta.get('domains', []))}.",
        f"Verifier: {report['config']['verifier']}; block size {report['config']['block_size']}; "
        f"budget {_pct(report['config']['policy']['max_block_fraction'])} of blocks, "
        f"{_pct(report['config']['policy']['max_token_fraction'])} of tokens; seed {report['config']['seed']}.",
        _calibration_line(meta.get("reference_traces")),
        "",
        "## Summary",
        "",
        "| figure | value | 95% CI |",
        "|---|---:|---|",
        f"| false-positive rate on honest traces (n={report['honest_n']}) | {_pct(report['false_positive_rate'])} | "
        f"{_pct(report['false_positive_ci'][0])}–{_pct(report['false_positive_ci'][1])} |",
        f"| mean block exposure (all audits) | {_pct(report['mean_block_exposure'])} | |",
        f"| mean token visibility (all audits) | {_pct(report['mean_token_visibility'])} | |",
        f"| mean block exposure (honest) | {_pct(report['honest_mean_block_exposure'] or 0)} | |",
        f"| mean token visibility (honest) | {_pct(report['honest_mean_token_visibility'] or 0)} | |",
        "",
        "## Detection rate per attack × IR (Wilson 95% CI)",
        "",
    ]
    irs = sorted({row["ir"] for row in report["detection"]})
    lines.append("| attack | kind | " + " | ".join(f"IR {ir:g}" for ir in irs) + " |")
    lines.append("|---|---|" + "---:|" * len(irs))
    attacks: dict[str, dict[float, dict[str, Any]]] = defaultdict(dict)
    kinds = {}
    for row in report["detection"]:
        attacks[row["attack"]][row["ir"]] = row
        kinds[row["attack"]] = row["kind"]
    for attack, cells in attacks.items():
        rendered = []
        for ir in irs:
            cell = cells.get(ir)
            rendered.append(
                f"{_pct(cell['detection_rate'])} ({_pct(cell['ci_low'])}–{_pct(cell['ci_high'])})"
                if cell
                else "—"
            )
        lines.append(f"| {attack} | {kinds[attack]} | " + " | ".join(rendered) + " |")
    lines += [
        "",
        f"Cells have n = {report['config']['traces_per_cell']} traces (fewer if some were too short).",
        "",
        "## Sampling ceiling (content attacks)",
        "",
        "Share of inflated audits whose full exposure plan (every round) reveals at least one block holding",
        "an injected token / opens at least one injected token: the detection rates a perfect judge of",
        "each revealed block / each opened token would reach.",
        "",
        "| attack | " + " | ".join(f"IR {ir:g}" for ir in irs) + " |",
        "|---|" + "---:|" * len(irs),
    ]
    for attack, cells in attacks.items():
        ceilings = [cells.get(ir, {}) for ir in irs]
        if any(c.get("reachable_rate") is not None for c in ceilings):
            rendered = [
                f"{_pct(c['reachable_rate'])} / {_pct(c['token_reachable_rate'])}"
                if c.get("reachable_rate") is not None
                else "—"
                for c in ceilings
            ]
            lines.append(f"| {attack} | " + " | ".join(rendered) + " |")
    lines.append("")
    lines += [
        "## Per domain",
        "",
        "| domain | FPR (95% CI) | detection IR ≥ 0.5 | detection IR = 0.25 | honest block exposure |",
    ]
    lines.append("|---|---:|---:|---:|---:|")
    for row in report["per_domain"]:
        hi = [d for d in row["detection"] if d["ir"] >= 0.5]
        mid = [d for d in row["detection"] if d["ir"] == 0.25]

        def pooled(cells: list[dict[str, Any]]) -> str:
            n = sum(c["n"] for c in cells)
            hits = sum(round(c["rate"] * c["n"]) for c in cells)
            return _pct(hits / n) + f" (n={n})" if n else "—"

        fp = row["false_positive"]
        lines.append(
            f"| {row['domain']} | {_pct(fp['rate']) if fp['n'] else '—'} ({_pct(fp['ci_low'])}–{_pct(fp['ci_high'])}) | "
            f"{pooled(hi)} | {pooled(mid)} | {_pct(row['honest_block_exposure'] or 0)} |"
        )
    lines += ["", "## Checks that fired", "", f"Honest: {report['honest_failed_checks']}", ""]
    for row in report["detection"]:
        lines.append(f"- {row['attack']} @ IR {row['ir']:g}: {row['failed_checks']}")
    roc = report["roc"]
    if roc:
        lines += ["", "## Verifier ROC (content attacks, final P(benign))", ""]
        lines += [f"- IR {ir}: AUC {curve['auc']:.3f}" for ir, curve in roc.items()]
    lines += ["", "Plots: `detection_vs_ir.png`, `roc.png`.", ""]
    return "\n".join(lines)


def plot_report(report: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(8, 5))
    attacks: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in report["detection"]:
        attacks[row["attack"]].append(row)
    colours = plt.get_cmap("tab20")  # eleven attacks: more than the default ten colours
    for k, (attack, rows) in enumerate(attacks.items()):
        rows.sort(key=lambda r: r["ir"])
        x = [r["ir"] for r in rows]
        y = [r["detection_rate"] for r in rows]
        err = [  # clipped: the Wilson bound can sit a rounding error inside the rate
            [max(0.0, r["detection_rate"] - r["ci_low"]) for r in rows],
            [max(0.0, r["ci_high"] - r["detection_rate"]) for r in rows],
        ]
        ax.errorbar(
            x, y, yerr=err, marker="o", capsize=3, label=attack, color=colours((2 * k) % 20 + (2 * k) // 20)
        )
    ax.axhline(report["false_positive_rate"], color="grey", linestyle="--", label="FPR (honest)")
    ax.set_xscale("log")
    ax.set_xlabel("inflation ratio (injected / genuine tokens)")
    ax.set_ylabel("detection rate")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Detection vs IR (Wilson 95% CI)")
    fig.tight_layout()
    paths.append(out / "detection_vs_ir.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for ir, curve in report["roc"].items():
        ax.plot([0.0, *curve["fpr"]], [0.0, *curve["tpr"]], label=f"IR {ir} (AUC {curve['auc']:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set_xlabel("false-positive rate (honest)")
    ax.set_ylabel("true-positive rate (inflated)")
    ax.set_title("Verifier ROC, content attacks")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "roc.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def write_report(
    outcomes: Sequence[AuditOutcome],
    config: EvalConfig,
    out: Path,
    meta: dict[str, Any],
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """report.json, report.md, outcomes.jsonl and the PNG plots under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    report = summarise(outcomes, config, meta)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "report.md").write_text(render_markdown(report))
    with (out / "outcomes.jsonl").open("w") as fh:
        for o in outcomes:
            fh.write(json.dumps(asdict(o)) + "\n")
    for path in plot_report(report, out):
        log(f"wrote {path}")
    log(f"wrote {out / 'report.json'} and {out / 'report.md'}")
    return report
