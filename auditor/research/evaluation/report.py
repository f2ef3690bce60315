"""Write an evaluation's report folder: report.json, report.md, outcomes.jsonl and the plots."""

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from auditor.research.evaluation.lodo import summarise_lodo
from auditor.research.evaluation.plots import plot_report
from auditor.research.evaluation.render import render_lodo, render_markdown
from auditor.research.evaluation.run import AuditOutcome, EvalConfig
from auditor.research.evaluation.summary import summarise


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


def write_lodo_report(
    folds: dict[str, list[AuditOutcome]],
    config: EvalConfig,
    out: Path,
    meta: dict[str, Any],
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """report.json and report.md of a leave-one-domain-out run, with each fold's plots under its folder."""
    out.mkdir(parents=True, exist_ok=True)
    report = summarise_lodo(folds, config, meta)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "report.md").write_text(render_lodo(report))
    for domain, fold in report["folds"].items():
        for path in plot_report(fold, out / f"fold-{domain}"):
            log(f"wrote {path}")
    log(f"wrote {out / 'report.json'} and {out / 'report.md'}")
    return report
