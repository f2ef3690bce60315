"""Write an evaluation's report folder: report.json, report.md, outcomes.jsonl and the plots.

`python -m auditor.research.evaluation.report DIR` re-renders a leave-one-domain-out report from its
report.json alone (no outcomes, no audits): the figures read off the folds' summaries (`worst_of_folds`)
are derived again with this code and report.md is written again; the folds' figures are left as they are.
"""

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from auditor.research.evaluation.lodo import (
    code_version,
    read_fold_record,
    rerendered,
    summarise_lodo,
    worst_of_folds,
)
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
    """report.json and report.md of a leave-one-domain-out run, with each fold's plots under its folder.
    The meta gains what produced each fold (`fold_runs`: its `fold.json`, None where the outcomes
    predate it) and the commit of the code that wrote the report."""
    out.mkdir(parents=True, exist_ok=True)
    runs = {domain: read_fold_record(out / f"fold-{domain}") for domain in folds}
    meta = {**meta, "protocol": config.protocol, "code": code_version(), "fold_runs": runs}
    report = summarise_lodo(folds, config, meta)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "report.md").write_text(render_lodo(report))
    for domain, fold in report["folds"].items():
        for path in plot_report(fold, out / f"fold-{domain}"):
            log(f"wrote {path}")
    log(f"wrote {out / 'report.json'} and {out / 'report.md'}")
    return report


def rerender_lodo_report(out: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Derive a leave-one-domain-out report's cross-fold figures again from its report.json and write
    report.json and report.md; `meta.rerendered` says when, with which code, and that nothing was
    re-audited."""
    path = out / "report.json"
    report: dict[str, Any] = json.loads(path.read_text())
    report.update(worst_of_folds(report["folds"]))
    report["meta"]["rerendered"] = rerendered(
        "python -m auditor.research.evaluation.report: the figures across folds (worst fold per "
        "cell, worst fold or fold × length band, headline) derived again from the folds' summaries in "
        "this file; no outcome re-read, no audit re-run"
    )
    path.write_text(json.dumps(report, indent=1) + "\n")
    (out / "report.md").write_text(render_lodo(report))
    log(f"wrote {path} and {out / 'report.md'}")
    return report


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m auditor.research.evaluation.report LODO_REPORT_DIR")
    rerender_lodo_report(Path(sys.argv[1]))
