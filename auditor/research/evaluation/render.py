"""Evaluation reports as Markdown: one evaluation (`render_markdown`) and leave-one-domain-out
(`render_lodo`)."""

from collections import defaultdict
from typing import Any


def _pct(x: float | None) -> str:
    return "—" if x is None or x != x else f"{100 * x:.1f}%"


def _interval(cell: dict[str, Any]) -> str:
    if not cell["n"]:
        return "—"
    return f"{_pct(cell['rate'])} ({_pct(cell['ci_low'])}–{_pct(cell['ci_high'])})"


def honest_table(title: str, rows: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        f"| {title} | n | `fail` (95% CI) | `suspect` (95% CI) | checks that flagged |",
        "|---|---:|---:|---:|---|",
    ]
    for name, row in rows.items():
        flagged = ", ".join(f"{k} {v}" for k, v in row["flagged_checks"].items()) or "—"
        lines.append(
            f"| {name} | {row['fail']['n']} | {_interval(row['fail'])} | {_interval(row['suspect'])} | {flagged} |"
        )
    return lines


def detection_table(rows: list[dict[str, Any]], worst: list[dict[str, Any]] | None = None) -> list[str]:
    """Detection (Wilson 95% CI) per attack × IR; with `worst` (a leave-one-domain-out report's
    `detection_worst_fold`), each cell also gives the worst fold's rate and domain."""
    worst_of = {(w["attack"], w["ir"]): w for w in worst or []}
    irs = sorted({row["ir"] for row in rows})
    lines = [
        "| attack | kind | " + " | ".join(f"IR {ir:g}" for ir in irs) + " |",
        "|---|---|" + "---:|" * len(irs),
    ]
    attacks: dict[str, dict[float, dict[str, Any]]] = defaultdict(dict)
    kinds = {}
    for row in rows:
        attacks[row["attack"]][row["ir"]] = row
        kinds[row["attack"]] = row["kind"]
    for attack, cells in attacks.items():
        rendered = []
        for ir in irs:
            cell = cells.get(ir)
            text = (
                f"{_pct(cell['detection_rate'])} ({_pct(cell['ci_low'])}–{_pct(cell['ci_high'])})"
                if cell
                else "—"
            )
            if (w := worst_of.get((attack, ir))) is not None:
                tied = w.get("tied", [w["domain"]])
                text += f"; worst {_pct(w['detection_rate'])} {w['domain'] if len(tied) == 1 else f'{len(tied)} folds'}"
            rendered.append(text)
        lines.append(f"| {attack} | {kinds[attack]} | " + " | ".join(rendered) + " |")
    return lines


def ceiling_table(rows: list[dict[str, Any]]) -> list[str]:
    irs = sorted({row["ir"] for row in rows})
    lines = ["| attack | " + " | ".join(f"IR {ir:g}" for ir in irs) + " |", "|---|" + "---:|" * len(irs)]
    attacks: dict[str, dict[float, dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        attacks[row["attack"]][row["ir"]] = row
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
    return lines


def _config_line(config: dict[str, Any]) -> str:
    policy = config["policy"]
    return (
        f"Block size {config['block_size']}; budget {_pct(policy['max_block_fraction'])} of blocks, "
        f"{_pct(policy['max_token_fraction'])} of tokens, up to {policy['rounds']} rounds; "
        f"{config['traces_per_cell']} traces per attack × IR cell; seed {config['seed']}."
    )


def _exposure_lines(report: dict[str, Any]) -> list[str]:
    return [
        f"Exposure: mean {_pct(report['mean_block_exposure'])} of blocks and {_pct(report['mean_token_visibility'])}"
        f" of tokens per audit (at most {_pct(report['max_block_exposure'])} and"
        f" {_pct(report['max_token_visibility'])}).",
    ]


def render_markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [
        "# CoIn Audit evaluation",
        "",
        f"Traces: {', '.join(meta.get('trace_files', []))} — domains {', '.join(meta.get('domains', []))}.",
        _config_line(report["config"]),
        f"Checkpoint: {meta.get('checkpoint', '—')}.",
        "",
        "`fail` is proof (a check that cannot fire on honest text); `suspect` is statistical evidence.",
        "Detection counts either.",
        "",
        "## Honest traces",
        "",
        *honest_table("all", {"all": report["honest"]}),
        "",
        *honest_table("domain", report["honest_by_domain"]),
        "",
        *honest_table("length (tokens)", report["honest_by_length"]),
        "",
        *honest_table("model family", report["honest_by_model_family"]),
        "",
        *_exposure_lines(report),
        "",
        "## Detection (`fail` or `suspect`) per attack × IR (Wilson 95% CI)",
        "",
        *detection_table(report["detection"]),
        "",
        "## Sampling ceiling (content attacks)",
        "",
        "Share of inflated audits whose full exposure plan reveals at least one block holding an injected",
        "token / opens at least one injected token: what a perfect judge of each block / token would reach.",
        "",
        *ceiling_table(report["detection"]),
        "",
        "## Checks that fired on inflated audits",
        "",
    ]
    for row in report["detection"]:
        lines.append(
            f"- {row['attack']} @ IR {row['ir']:g}: fail {row['failed_checks'] or '—'}; suspect {row['flagged_checks'] or '—'}"
        )
    if report["roc"]:
        lines += ["", "## Verifier ROC (content attacks, final p-value)", ""]
        lines += [f"- IR {ir}: AUC {curve['auc']:.3f}" for ir, curve in report["roc"].items()]
    lines += ["", "Plots: `detection_vs_ir.png`, `roc.png`.", ""]
    return "\n".join(lines)


def _cell_name(cell: dict[str, Any]) -> str:
    band = "" if cell["band"] is None else f", {cell['band']} tokens"
    return f"{cell['domain']}{band}, n = {cell['n']}"


def _provenance(meta: dict[str, Any]) -> list[str]:
    """What produced the report: the code's commit and each fold's checkpoint and copy rule."""
    code = meta.get("code")
    lines = [
        "Code: "
        + (
            f"commit {code['commit'][:12]}{' with uncommitted changes' if code['uncommitted_changes'] else ''}."
            if code
            else "not recorded."
        )
    ]
    if "note" in meta:
        lines.append(meta["note"])
    if "fold_runs" not in meta:
        lines.append(
            "Fold records: none (a run from before they were kept, whose audits applied the shipped copy"
            " rule, fitted on every domain, the left-out one included)."
        )
    for domain, run in (meta.get("fold_runs") or {}).items():
        if run is None:
            lines.append(
                f"- fold {domain}: outcomes without a fold record (checkpoint and copy rule unknown)"
            )
            continue
        rule = run["copy_rule"]
        lines.append(
            f"- fold {domain}: checkpoint {run['checkpoint']}, trained on {', '.join(run['trained_on'] or [])};"
            f" copy rule {rule['label']} (copied {rule['copied']:.4f}, repeated {rule['repeated']:.4f},"
            f" at least {rule['min_tokens']} tokens); protocol {run['protocol']}"
        )
    if "rerendered" in meta:
        lines.append(f"Re-rendered {meta['rerendered']['date']}: {meta['rerendered']['how']}.")
    return lines


def render_lodo(report: dict[str, Any]) -> str:
    folds = report["folds"]
    any_fold = next(iter(folds.values()))
    headline = report["headline"]
    worst = report.get("honest_worst_cell")
    where = ""
    if worst:
        named = [
            f"`{v}`: {_cell_name(worst[v]) if worst[v]['rate'] else 'none'}" for v in ("fail", "suspect")
        ]
        where = f" ({'; '.join(named)})"
    lines = [
        "# CoIn Audit evaluation: leave-one-domain-out",
        "",
        "Each fold trains and calibrates on the other domains and audits every honest trace of its own",
        "domain and the attack cells drawn from it. `fail` is proof; `suspect` is statistical evidence;",
        "detection counts either, and is measured on the attack types the heads were trained on.",
        _config_line(any_fold["config"]),
        "",
        *_provenance(report["meta"]),
        "",
        "## Folds (honest traces of the left-out domain)",
        "",
        "| left-out domain | n | `fail` (95% CI) | `suspect` (95% CI) | lowest content detection at IR 0.5 |",
        "|---|---:|---:|---:|---:|",
    ]
    for domain, fold in folds.items():
        honest = fold["honest"]
        lines.append(
            f"| {domain} | {honest['fail']['n']} | {_interval(honest['fail'])} | {_interval(honest['suspect'])} |"
            f" {_pct(fold['headline']['detection_ir05_min'])} |"
        )
    lines += [
        "",
        f"**Worst fold or fold × length band: `fail` {_pct(headline['fail_rate_honest_max'])}, `suspect`"
        f" {_pct(headline['suspect_rate_honest_max'])}{where}; lowest content-attack detection at IR 0.5"
        f" (worst fold) {_pct(headline['detection_ir05_min'])}.**",
        "",
        "## Honest traces by length and model family (all folds)",
        "",
        *honest_table("length (tokens)", report["honest_by_length"]),
        "",
        *honest_table("model family", report["honest_by_model_family"]),
        "",
        "Per fold and length band:",
        "",
        "| left-out domain | " + " | ".join(report["honest_by_length"]) + " |",
        "|---|" + "---:|" * len(report["honest_by_length"]),
    ]
    for domain, fold in folds.items():
        cells = [
            f"{_pct(row['suspect']['rate'])} / {_pct(row['fail']['rate'])} (n={row['fail']['n']})"
            if row["fail"]["n"]
            else "—"
            for row in fold["honest_by_length"].values()
        ]
        lines.append(f"| {domain} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "(each cell: `suspect` / `fail`.)",
        "",
        "## Detection per attack × IR: all folds pooled (Wilson 95% CI); the worst fold",
        "",
        *detection_table(report["detection"], report.get("detection_worst_fold")),
        "",
        "Lowest fold at IR 0.5: "
        + ", ".join(
            f"{attack} {_pct(value)}" for attack, value in report["detection_ir05_worst_fold"].items()
        ),
        "",
        "## Sampling ceiling (all folds)",
        "",
        *ceiling_table(report["detection"]),
        "",
    ]
    for domain, fold in folds.items():
        lines += [
            f"## Fold: {domain}",
            "",
            *_exposure_lines(fold),
            "",
            *detection_table(fold["detection"]),
            "",
        ]
    return "\n".join(lines)
