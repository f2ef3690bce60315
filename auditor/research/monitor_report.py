"""`coin monitor-eval`'s report folder: monitor.json, monitor.md and two plots.

`python -m auditor.research.monitor_report DIR` re-renders a report from its monitor.json alone (no
simulation): the targets and the headline, read off the folds' cells, are derived again with this code,
and monitor.json and monitor.md are written again; the folds, the calibration and the plots are left as
they are.
"""

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from auditor.research.evaluation.lodo import rerendered
from auditor.research.monitor_eval import headline, targets

ALARM_PLOT = "monitor_alarm.png"
INTERVAL_PLOT = "monitor_interval.png"
CALIBRATION_FILE = "calibration.json"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _audits(cell: dict[str, Any]) -> str:
    """'median / p90', with the share never alarmed when there is one."""
    median, p90, never = cell["median_audits_to_alarm"], cell["p90_audits_to_alarm"], cell["never_alarmed"]
    if never == 1:
        return "never"
    shown = "never" if median is None else f"{median:g} / {'—' if p90 is None else f'{p90:g}'}"
    return shown if never == 0 else f"{shown} ({100 * never:.1f}% never)"


def _grid(cells: list[dict[str, Any]], share: float, show: Callable[[dict[str, Any]], str]) -> list[str]:
    rows = [c for c in cells if c["share"] == share]
    irs = sorted({c["ir"] for c in rows})
    lines = ["| attack | " + " | ".join(f"IR {ir:g}" for ir in irs) + " |", "|---|" + "---:|" * len(irs)]
    for attack in dict.fromkeys(c["attack"] for c in rows):
        by_ir = {c["ir"]: c for c in rows if c["attack"] == attack}
        lines.append(
            f"| {attack} | " + " | ".join(show(by_ir[ir]) if ir in by_ir else "—" for ir in irs) + " |"
        )
    return lines


def _interval_cell(cell: dict[str, Any]) -> str:
    assumed = cell.get("assumed_token_share_mean")
    point = "" if assumed is None else f"; ŝ {assumed:.2f}"
    lower = f"≥ {cell['token_share_lower_mean']:.3f} (π ≥ {cell['inflated_reports_lower_mean']:.2f})"
    return f"{cell['true_token_share']:.2f}: {lower}{point}"


def _count(audits: float) -> str:
    return "more than 10,000" if audits > 10_000 else f"~{audits:,.0f}"


def _why(cell: dict[str, Any]) -> str:
    best, own = cell["best_possible_audits"], cell["best_possible_audits_own_null"]
    if best is None:
        reason = "flags no more often than the composite null allows an honest provider: no test against it can alarm"
    else:
        reason = (
            f"a test that knew its flag rates would need {_count(best)} audits against the composite null"
        )
    own_text = "never" if own is None else _count(own)
    return f"{reason} (against this domain's own honest rates, thresholds up to 0.5: {own_text})"


def render_markdown(report: dict[str, Any]) -> str:
    config = report["config"]
    thresholds = tuple(config["thresholds"])
    lines = [
        "# Provider monitoring, simulated on the leave-one-domain-out outcomes",
        "",
        f"`coin monitor-eval --lodo-dir {report['lodo_dir']}`: folds {', '.join(report['folds'])}; "
        f"{config['honest_providers']} honest providers per domain and {config['providers']} per attack × IR × "
        f"share cell, {config['horizon']} audits each, α = {config['alpha']}, seed {config['seed']}. "
        "Method: `auditor.monitoring` (module docstrings); simulation: `auditor.research.monitor_eval`.",
        "",
        "Per audit the score S is the verifier's p-value, 0 on a proof failure or another statistical flag, "
        "1 when the verifier did not run. The alarm: the first proof failure, or the mixture e-process on "
        f"1{{S < t}} for t in {thresholds} reaching 1/α against the composite null r_t (the worst fold's Wilson "
        "95% upper bound, at least t) — taken from the *other* folds for each simulated domain.",
        "",
        "## Targets (every fold: " + ", ".join(report["targets"]["domains"]) + ")",
        "",
        "| target | met | misses |",
        "|---|---|---|",
    ]
    names = {
        "false_alarm": "honest false alarm ≤ 1% within the horizon",
        "first_fail": "structural and padding attacks: alarm by the first failing audit",
        "speed": "content attacks: median ≤ 50 audits at IR ≥ 0.5, p = 1; ≤ 500 at IR 0.25, p = 0.3",
        "coverage": "token-share interval coverage ≥ 95% in every cell",
    }
    for key, title in names.items():
        misses = report["targets"]["misses"][key]
        met = "yes" if report["targets"]["met"][key] else "**no**"
        lines.append(f"| {title} | {met} | {len(misses)} |")
    lines += [
        "",
        "## Composite null and honest providers",
        "",
        f"Rates of honest audits scoring below t = {thresholds}, and the bound each simulated domain was tested "
        "against (from the other folds).",
        "",
        "| domain | honest audits | honest rates | null bound r_t (folds) | false alarms (95% CI) | interval coverage |",
        "|---|---:|---|---|---:|---:|",
    ]
    for domain, fold in report["folds"].items():
        honest, bound = fold["honest"], fold["bound"]
        rates = ", ".join(f"{r:.3f}" for r in honest["flag_rates"])
        nulls = ", ".join(f"{r:.3f}" for r in bound["rates"])
        lines.append(
            f"| {domain} | {honest['pool']} | {rates} | {nulls} ({', '.join(bound['domains'])}) | "
            f"{honest['false_alarms']}/{honest['providers']} = {_pct(honest['false_alarm_rate'])} "
            f"({_pct(honest['ci_low'])}–{_pct(honest['ci_high'])}) | {_pct(honest['coverage_end'])} |"
        )
    ladder = next(iter(report["transfer"].values()))["thresholds"]
    lines += [
        "",
        f"Which thresholds carry over: each fold's honest rate below t = {tuple(ladder)} against the bound of "
        "the other folds (**bold**: above it — a rung there would alarm that domain's honest providers).",
        "",
        "| domain | " + " | ".join(f"t = {t:g}" for t in ladder) + " |",
        "|---|" + "---:|" * len(ladder),
    ]
    for domain, row in report["transfer"].items():
        cells = [
            f"**{r:.3f}** > {b:.3f}" if over else f"{r:.3f} ≤ {b:.3f}"
            for r, b, over in zip(row["rates"], row["bound"], row["exceeds"], strict=True)
        ]
        lines.append(f"| {domain} | " + " | ".join(cells) + " |")
    shipped = report["calibration"]["bound"]
    lines += [
        "",
        f"The calibration for the service (every fold: {', '.join(shipped['domains'])}): r_t = "
        + ", ".join(f"{r:.3f}" for r in shipped["rates"])
        + f" (`{CALIBRATION_FILE}`, loaded with `MonitorPolicy.from_json`).",
        "",
        "## Audits to alarm",
        "",
        "Median / 90th percentile of the audits until the alarm, per held-out domain and share p of inflated "
        f"reports (never: not within {config['horizon']} audits). Plot: `{ALARM_PLOT}`.",
    ]
    for domain, fold in report["folds"].items():
        if fold["honest"]["false_alarm_rate"] > config["alpha"]:
            lines += [
                "",
                f"*{domain}: its honest providers alarm too ({_pct(fold['honest']['false_alarm_rate'])}): its "
                "honest rates exceed the bound of the other folds, so the null does not hold there and the "
                "audits to alarm below are not detection.*",
            ]
        for share in sorted({c["share"] for c in fold["cells"]}, reverse=True):
            lines += ["", f"**{domain}, p = {share:g}**", "", *_grid(fold["cells"], share, _audits)]
    lines += [
        "",
        "## Why the speed targets are missed where they are",
        "",
    ]
    misses = report["targets"]["misses"]["speed"]
    for domain, fold in report["folds"].items():
        for cell in fold["cells"]:
            where = f"{domain} {cell['attack']} IR {cell['ir']:g} p {cell['share']:g}"
            if any(m.startswith(where + ":") for m in misses):
                lines.append(f"- {where}: median {_audits(cell)}; {_why(cell)}.")
    if not misses:
        lines.append("None missed.")
    lines += [
        "",
        "## The inflated share of billed tokens",
        "",
        "Guaranteed (95%, anytime) interval: [L · ρ_min / (1 + ρ_min), 1], L the lower confidence sequence "
        "on the share of inflated reports, ρ_min the smallest inflation ratio counted "
        f"({report['calibration']['min_inflation_ratio']}). The upper end stays 1: an inflated report may "
        "look honest (similar_question and prompt_answer do), and no statistical check measures "
        "how much was injected, so nothing bounds the share from above. Coverage is read at the end of the "
        "horizon and at each provider's alarm (the end, if it never alarms): a stopping time, where a "
        "confidence sequence must hold. Each cell below: the true share: the mean lower end (and of L, the "
        "lower bound on the share of inflated reports, here p = 1); ŝ, the point estimate that assumes the "
        "evaluation's average detection and ratio (not covered by any guarantee). Plot: "
        f"`{INTERVAL_PLOT}`.",
        "",
        "| domain | lowest coverage | mean width (p = 1) |",
        "|---|---:|---:|",
    ]
    for domain, fold in report["folds"].items():
        coverage = fold["interval_coverage_min"]
        full = [c["interval_width_mean"] for c in fold["cells"] if c["share"] == 1.0]
        width = sum(full) / len(full) if full else float("nan")
        lines.append(f"| {domain} | {_pct(coverage)} | {width:.3f} |")
    for domain, fold in report["folds"].items():
        lines += ["", f"**{domain}, p = 1**", "", *_grid(fold["cells"], 1.0, _interval_cell)]
    lines += ["", "## Headline", "", "```json", json.dumps(report["headline"], indent=1), "```", ""]
    if "rerendered" in report:
        lines += [f"Re-rendered {report['rerendered']['date']}: {report['rerendered']['how']}.", ""]
    return "\n".join(lines)


def plot_monitor(report: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folds = report["folds"]
    shares = sorted({c["share"] for f in folds.values() for c in f["cells"]}, reverse=True)
    horizon = report["config"]["horizon"]
    colours = plt.get_cmap("tab20")
    fig, axes = plt.subplots(
        len(folds), len(shares), figsize=(4.2 * len(shares), 3.2 * len(folds)), squeeze=False, sharey=True
    )
    for i, (domain, fold) in enumerate(folds.items()):
        attacks = list(dict.fromkeys(c["attack"] for c in fold["cells"]))
        for j, share in enumerate(shares):
            ax = axes[i][j]
            for k, attack in enumerate(attacks):
                rows = sorted(
                    (c for c in fold["cells"] if c["attack"] == attack and c["share"] == share),
                    key=lambda c: c["ir"],
                )
                x = [c["ir"] for c in rows]
                y = [c["median_audits_to_alarm"] or 2 * horizon for c in rows]
                ax.plot(x, y, marker="o", label=attack, color=colours((2 * k) % 20 + (2 * k) // 20))
            ax.axhline(horizon, color="grey", linestyle=":")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{domain}, p = {share:g}", fontsize=9)
            if i == len(folds) - 1:
                ax.set_xlabel("inflation ratio")
            if j == 0:
                ax.set_ylabel("median audits to alarm")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="center right", fontsize=7, title=f"at {2 * horizon}: never", title_fontsize=7
    )
    fig.tight_layout(rect=(0, 0, 0.85, 1))
    paths = [out / ALARM_PLOT]
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(folds), figsize=(4.2 * len(folds), 4), squeeze=False)
    for ax, (domain, fold) in zip(axes[0], folds.items(), strict=True):
        truth = [c["true_token_share"] for c in fold["cells"]]
        ax.scatter(truth, [c["token_share_lower_mean"] for c in fold["cells"]], s=10, label="mean lower end")
        assumed = [c.get("assumed_token_share_mean") for c in fold["cells"]]
        if all(a is not None for a in assumed):
            ax.scatter(truth, assumed, s=10, marker="x", label="point estimate (assumed detection)")
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
        ax.set_xlabel("true inflated token share")
        ax.set_title(domain, fontsize=9)
    axes[0][0].set_ylabel("estimate")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / INTERVAL_PLOT)
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


def write_monitor_report(report: dict[str, Any], out: Path, log: Callable[[str], None] = print) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "monitor.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "monitor.md").write_text(render_markdown(report))
    # The policy for the service (every fold), ready to ship: `MonitorPolicy.from_json`.
    (out / CALIBRATION_FILE).write_text(json.dumps(report["calibration"], indent=1) + "\n")
    for path in plot_monitor(report, out):
        log(f"wrote {path}")
    log(f"wrote {out / 'monitor.json'}, {out / 'monitor.md'} and {out / CALIBRATION_FILE}")


def rerender_monitor_report(out: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Derive the targets and headline of `out/monitor.json` again from its folds and write monitor.json
    and monitor.md; `rerendered` says when, with which code, and that nothing was simulated again."""
    path = out / "monitor.json"
    report: dict[str, Any] = json.loads(path.read_text())
    report["targets"], report["headline"] = targets(report["folds"]), headline(report["folds"])
    report["rerendered"] = rerendered(
        "python -m auditor.research.monitor_report: the targets and the headline derived again from "
        "the folds in this file, over every fold; no provider simulated again"
    )
    path.write_text(json.dumps(report, indent=1) + "\n")
    (out / "monitor.md").write_text(render_markdown(report))
    log(f"wrote {path} and {out / 'monitor.md'}")
    return report


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m auditor.research.monitor_report MONITOR_REPORT_DIR")
    rerender_monitor_report(Path(sys.argv[1]))
