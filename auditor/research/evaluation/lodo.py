"""Leave-one-domain-out evaluation (DESIGN §6): for each domain, train and calibrate on the others, audit
every honest trace of it and the attack cells drawn from it; report every fold and the worst.

The copied_spans rule is refit per fold too: the audits of a fold apply the tail fit on the other domains'
honest traces (`auditor.research.copy_rates.fold_copy_rule`), not the shipped `COPY_RULE`, which was
fitted on every domain.

Each fold's checkpoint, outcomes and `fold.json` (what produced them: the checkpoint id, the protocol and
evaluation settings, the copy rule, the git commit) are kept under `out/fold-<domain>/`; what is already
there is read back, not recomputed (a long run can be resumed; delete a fold's outcomes to re-audit with
changed checks, its checkpoint to retrain). Outcomes whose `fold.json` names other settings or another
checkpoint than the run resuming them are refused; outcomes without one are read back and reported as of
unknown provenance. The shipped checkpoint is the same training on every domain (`coin train-heads`).
"""

import dataclasses
import datetime
import json
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from auditor.protocol.errors import ProtocolError
from auditor.protocol.fingerprint import EmbeddingModel
from auditor.protocol.tokenize import Tokenizer
from auditor.research.attacks import CONTENT_ATTACKS
from auditor.research.copy_rates import fold_copy_rule
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
from auditor.semantic.heads import CHECKPOINT_NAME, HeadBundle, checkpoint_id_of, load_heads

OUTCOMES_FILE = "outcomes.jsonl"
FOLD_FILE = "fold.json"  # what produced the fold's outcomes


def code_version() -> dict[str, Any] | None:
    """The git commit of this code and whether the working tree differs from it; None outside git."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "uncommitted_changes": bool(status.strip())}


def rerendered(how: str) -> dict[str, Any]:
    """What a report re-derived from its own JSON records: when, with which code, and `how`."""
    return {"date": datetime.date.today().isoformat(), "code": code_version(), "how": how}


def config_json(config: EvalConfig) -> dict[str, Any]:
    """The evaluation settings as report.json and fold.json hold them (JSON types: lists, not tuples)."""
    data: dict[str, Any] = json.loads(json.dumps(asdict(config)))
    return data


def fold_config(config: EvalConfig, traces: Sequence[Trace], domain: str, tokenizer: Tokenizer) -> EvalConfig:
    """`config` with the fold's copy rule: the caller's when it set one, else the tail fit on the other
    domains' honest traces (`fold_copy_rule`)."""
    if config.copy_rule is not None:
        return config
    try:
        rule = fold_copy_rule(traces, domain, lambda t: tokenizer.tokenize(t.reasoning))
    except ValueError as exc:
        raise ProtocolError(
            f"fold {domain}: the other domains' honest traces cannot fit a copy rule ({exc}); "
            "give the evaluation one (EvalConfig.copy_rule)"
        ) from None
    return dataclasses.replace(config, copy_rule=rule)


def _fold_record(domain: str, bundle: HeadBundle, config: EvalConfig, audited: int) -> dict[str, Any]:
    assert config.copy_rule is not None
    return {
        "domain": domain,
        "checkpoint": bundle.checkpoint_id,
        "trained_on": bundle.metrics.get("domains"),
        "train_attacks": list(bundle.metrics.get("config", {}).get("attacks", ())),
        "protocol": config.protocol,
        "copy_rule": asdict(config.copy_rule),
        "honest_traces": audited,
        "config": config_json(config),
        "code": code_version(),
    }


def read_fold_record(folder: Path) -> dict[str, Any] | None:
    """A fold's `fold.json`, or None (outcomes written before the record was kept)."""
    path = folder / FOLD_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except ValueError as exc:
        raise ProtocolError(f"{path}: not JSON ({exc})") from None
    if not isinstance(record, dict):
        raise ProtocolError(f"{path}: expected a JSON object (a fold record)")
    return record


def _check_resumable(folder: Path, config: EvalConfig) -> None:
    """Refuse outcomes recorded under other settings, or with another checkpoint than the folder's."""
    record = read_fold_record(folder)
    if record is None:
        return
    wanted, found = config_json(config), dict(record.get("config", {}))
    if config.copy_rule is None:  # the fold's rule is fitted, and recorded; compare the rest
        found.pop("copy_rule", None)
        wanted.pop("copy_rule")
    checkpoint = folder / CHECKPOINT_NAME
    differ = [k for k in sorted(set(wanted) | set(found)) if wanted.get(k) != found.get(k)]
    if checkpoint.is_file() and checkpoint_id_of(checkpoint) != record.get("checkpoint"):
        differ.append("checkpoint")
    if differ:
        raise ProtocolError(
            f"{folder / OUTCOMES_FILE}: audited with other {', '.join(differ)} than this run "
            f"({folder / FOLD_FILE}); delete the outcomes to re-audit"
        )


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
        _check_resumable(folder, eval_config)
        known = "" if (folder / FOLD_FILE).is_file() else f" (no {FOLD_FILE}: their provenance is unknown)"
        log(f"fold {domain}: outcomes found in {folder}, not recomputed{known}")
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
    config = fold_config(eval_config, traces, domain, tokenizer)
    assert config.copy_rule is not None
    rule = config.copy_rule
    log(f"fold {domain}: copy rule {rule.label}: copied {rule.copied:.4f}, repeated {rule.repeated:.4f}")
    suite = SemanticSuite(bundle, tokenizer, config.policy)
    test = [t for t in traces if t.domain == domain]
    log(f"fold {domain}: auditing {len(test)} honest traces and the attack cells")
    outcomes = run_evaluation(test, embedder, suite, config, pool=traces)
    # The record first: outcomes are what marks a fold done, and they never stand without it.
    record = _fold_record(domain, bundle, config, sum(o.attack == HONEST for o in outcomes))
    (folder / FOLD_FILE).write_text(json.dumps(record, indent=1) + "\n")
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


def _worst(cells: Sequence[tuple[str, str | None, dict[str, Any]]], verdict: str) -> dict[str, Any]:
    """The cell (fold, length band or None for the whole fold, rates) with the highest `verdict` rate."""
    domain, band, rates = max(cells, key=lambda c: c[2][verdict]["rate"])
    return {"domain": domain, "band": band, **rates[verdict]}


def worst_of_folds(per_fold: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """What the report reads off the folds' own summaries (so it can be re-derived from a report.json):
    each attack × IR's worst fold, each content attack's worst fold at IR 0.5, the honest cell (fold, or
    fold × length band) with the highest `fail` and `suspect` rates, and the headline of those."""
    cells: list[tuple[str, str | None, dict[str, Any]]] = []
    for domain, fold in per_fold.items():
        cells.append((domain, None, fold["honest"]))
        cells += [(domain, band, r) for band, r in fold["honest_by_length"].items() if r["fail"]["n"]]
    by_cell: dict[tuple[str, float], list[tuple[str, dict[str, Any]]]] = {}
    for domain, fold in per_fold.items():
        for row in fold["detection"]:
            by_cell.setdefault((row["attack"], row["ir"]), []).append((domain, row))
    worst_detection = []
    for (attack, ir), found in by_cell.items():
        domain, row = min(found, key=lambda f: f[1]["detection_rate"])
        worst_detection.append(
            {
                "attack": attack,
                "ir": ir,
                "domain": domain,
                "tied": [d for d, r in found if r["detection_rate"] == row["detection_rate"]],
                **{k: row[k] for k in ("detection_rate", "ci_low", "ci_high", "n")},
            }
        )
    worst_ir05 = {
        row["attack"]: row["detection_rate"]
        for row in worst_detection
        if row["attack"] in CONTENT_ATTACKS and row["ir"] == HEADLINE_IR
    }
    worst_fail, worst_suspect = _worst(cells, "fail"), _worst(cells, "suspect")
    return {
        "detection_worst_fold": worst_detection,
        "detection_ir05_worst_fold": worst_ir05,
        "honest_worst_cell": {"fail": worst_fail, "suspect": worst_suspect},
        "headline": {
            "fail_rate_honest_max": worst_fail["rate"],
            "suspect_rate_honest_max": worst_suspect["rate"],
            "detection_ir05_min": min(worst_ir05.values()) if worst_ir05 else None,
        },
    }


def summarise_lodo(
    folds: dict[str, list[AuditOutcome]], config: EvalConfig, meta: dict[str, Any]
) -> dict[str, Any]:
    """Every fold's report (its meta with the fold's record from `meta["fold_runs"]`, if any), the
    honest rates per length band and model family over all folds (each trace is audited once, in the fold
    that left its domain out), detection pooled over the folds, and the worst fold of each figure: the
    headline is the worst fold or fold × length band, never a pooled rate."""
    runs = meta.get("fold_runs", {})
    shared = {k: v for k, v in meta.items() if k != "fold_runs"}
    per_fold = {
        domain: summarise(outcomes, config, {**shared, "fold": domain, "fold_run": runs.get(domain)})
        for domain, outcomes in folds.items()
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
    return {
        "meta": meta,
        "folds": per_fold,
        "honest": honest_rates(honest),
        "honest_by_length": by_length,
        "honest_by_model_family": {k: honest_rates(v) for k, v in sorted(families.items())},
        "detection": detection_rows(everything, config),
        **worst_of_folds(per_fold),
    }
