"""Leave-one-domain-out evaluation (DESIGN §6): for each domain, train and calibrate on the others, audit
every honest trace of it and the attack cells drawn from it; report every fold and the worst.

Each fold's checkpoint and outcomes are kept under `out/fold-<domain>/`; what is already there is read
back, not recomputed (a long run can be resumed; delete a fold's outcomes to re-audit with changed
checks, its checkpoint to retrain). The shipped checkpoint is the
same training on every domain (`coin train-heads`).
"""

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from auditor.protocol.fingerprint import EmbeddingModel
from auditor.protocol.tokenize import Tokenizer
from auditor.research.attacks import CONTENT_ATTACKS
from auditor.research.evaluation.run import HONEST, AuditOutcome, EvalConfig, read_outcomes, run_evaluation
from auditor.research.evaluation.summary import (
    HEADLINE_IR,
    LENGTH_BANDS,
    detection_rows,
    honest_rates,
    length_band,
    summarise,
)
from auditor.research.traces import Trace, split_traces
from auditor.research.training import TrainConfig, train_heads
from auditor.semantic.checks import SemanticSuite
from auditor.semantic.heads import CHECKPOINT_NAME, load_heads

OUTCOMES_FILE = "outcomes.jsonl"


def _write_outcomes(path: Path, outcomes: Sequence[AuditOutcome]) -> None:
    path.write_text("".join(json.dumps(asdict(o)) + "\n" for o in outcomes))


def run_fold(
    domain: str,
    traces: Sequence[Trace],
    embedder: EmbeddingModel,
    tokenizer: Tokenizer,
    train_config: TrainConfig,
    eval_config: EvalConfig,
    out: Path,
    log: Callable[[str], None],
) -> list[AuditOutcome]:
    """Train without `domain`, then audit `domain`'s traces (the attacks may draw on every trace)."""
    folder = out / f"fold-{domain}"
    if (folder / OUTCOMES_FILE).is_file():
        log(f"fold {domain}: outcomes found in {folder}, not recomputed")
        return read_outcomes(folder / OUTCOMES_FILE)
    if (folder / CHECKPOINT_NAME).is_file():
        log(f"fold {domain}: checkpoint found in {folder}, not retrained")
        bundle = load_heads(folder / CHECKPOINT_NAME, embd_id=embedder.embd_id)
    else:
        rest = [t for t in traces if t.domain != domain]
        split = split_traces(rest, held_out_domains=(), seed=train_config.seed)
        log(f"fold {domain}: training on {sorted({t.domain for t in split.train})}")
        bundle = train_heads(
            split.train,
            split.validation,
            tokenizer,
            embedder,
            train_config,
            out=folder / CHECKPOINT_NAME,
            log=log,
        )
    suite = SemanticSuite(bundle, tokenizer, eval_config.policy)
    test = [t for t in traces if t.domain == domain]
    log(f"fold {domain}: auditing {len(test)} honest traces and the attack cells")
    outcomes = run_evaluation(test, embedder, suite, eval_config, pool=traces)
    _write_outcomes(folder / OUTCOMES_FILE, outcomes)
    return outcomes


def run_lodo(
    traces: Sequence[Trace],
    embedder: EmbeddingModel,
    tokenizer: Tokenizer,
    train_config: TrainConfig,
    eval_config: EvalConfig,
    out: Path,
    log: Callable[[str], None] = print,
) -> dict[str, list[AuditOutcome]]:
    out.mkdir(parents=True, exist_ok=True)
    domains = sorted({t.domain for t in traces})
    return {d: run_fold(d, traces, embedder, tokenizer, train_config, eval_config, out, log) for d in domains}


def summarise_lodo(
    folds: dict[str, list[AuditOutcome]], config: EvalConfig, meta: dict[str, Any]
) -> dict[str, Any]:
    """Every fold's report, the honest rates per length band and model family over all folds (each
    trace is audited once, in the fold that left its domain out), and the worst of them."""
    per_fold = {
        domain: summarise(outcomes, config, {**meta, "fold": domain}) for domain, outcomes in folds.items()
    }
    everything = [o for outcomes in folds.values() for o in outcomes]
    honest = [o for o in everything if o.attack == HONEST]
    by_length = {
        name: honest_rates([o for o in honest if length_band(o.genuine_tokens) == name])
        for name, _, _ in LENGTH_BANDS
    }
    families: dict[str, list[AuditOutcome]] = {}
    for o in honest:
        families.setdefault(o.model_family, []).append(o)
    # Worst rates over the folds and over the length bands (pooled over folds; bands with no trace skipped).
    cells = [fold["honest"] for fold in per_fold.values()] + [r for r in by_length.values() if r["fail"]["n"]]
    worst_detection = {}
    for attack in config.attacks:
        if attack not in CONTENT_ATTACKS:
            continue
        found = [
            row["detection_rate"]
            for fold in per_fold.values()
            for row in fold["detection"]
            if row["attack"] == attack and row["ir"] == HEADLINE_IR
        ]
        if found:
            worst_detection[attack] = min(found)
    return {
        "meta": meta,
        "folds": per_fold,
        "honest": honest_rates(honest),
        "honest_by_length": by_length,
        "honest_by_model_family": {k: honest_rates(v) for k, v in sorted(families.items())},
        "detection": detection_rows(everything, config),
        "detection_ir05_worst_fold": worst_detection,
        "headline": {
            "fail_rate_honest_max": max(c["fail"]["rate"] for c in cells),
            "suspect_rate_honest_max": max(c["suspect"]["rate"] for c in cells),
            "detection_ir05_min": min(worst_detection.values()) if worst_detection else None,
        },
    }
