"""The evaluation report as Markdown."""

from collections import defaultdict
from typing import Any


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
