"""`coin train-heads` and `coin eval` (DESIGN §6): the science commands, composed into the `coin` CLI.

Both run on a CPU: one torch thread (the machine is shared), embeddings cached on disk under
`var/cache/` keyed by content hash, progress bars on stderr.
"""

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from auditor.protocol import PROTOCOL_VERSION, PROTOCOL_VERSIONS
from auditor.protocol.commitment import DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE
from auditor.protocol.errors import ModelError, ProtocolError
from auditor.protocol.tokenize import DEFAULT_TOKENIZER_ID
from auditor.research.attacks import ATTACKS, CONTENT_ATTACKS, HEAD_ATTACKS
from auditor.semantic.exposure import ExposurePolicy

if TYPE_CHECKING:
    from auditor.research.training import TrainConfig

app = typer.Typer(help="Train the matching heads and evaluate the auditor against the attack suite.")

DEFAULT_TRACES = Path("../shared/data/traces")
DEFAULT_CACHE = Path("var/cache")


def _setup() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(1)


def _floats(text: str, name: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise typer.BadParameter(f"{name}: expected comma-separated numbers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise typer.BadParameter(f"{name}: expected positive numbers")
    return values


def _names(text: str, every: tuple[str, ...]) -> tuple[str, ...]:
    """`every` for 'all', else the comma-separated names (checked by the caller)."""
    return every if text == "all" else tuple(a.strip() for a in text.split(",") if a.strip())


def _train_config(
    seed: int, heads_traces: int, model_traces: int, block_size: int, attacks: str, shift_margin: bool
) -> "TrainConfig":
    from auditor.research.training import TrainConfig

    if not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE:
        raise typer.BadParameter(f"block-size: {MIN_BLOCK_SIZE}..{MAX_BLOCK_SIZE} tokens (DESIGN §3)")
    train_attacks = _names(attacks, HEAD_ATTACKS)
    if not train_attacks or not set(train_attacks) <= set(CONTENT_ATTACKS):
        raise typer.BadParameter(f"attacks: some of {', '.join(CONTENT_ATTACKS)}")
    return TrainConfig(
        seed=seed,
        heads_traces=heads_traces,
        model_traces=model_traces,
        block_size=block_size,
        attacks=train_attacks,
        shift_margin=shift_margin,
    )


HeadsTraces = Annotated[int, typer.Option(help="traces for the pair heads")]
ModelTraces = Annotated[int, typer.Option(help="traces for the verifier's block model (stacking)")]
TrainAttacks = Annotated[
    str,
    typer.Option(
        help="content attacks to train on, comma-separated, or 'all' (every one but the copy family, "
        "which the repetition profile catches; leave one out to test transfer)"
    ),
]
ShiftMargin = Annotated[
    bool,
    typer.Option(
        "--shift-margin/--no-shift-margin",
        help="set the verifier's thresholds at alpha over the domain-shift margin measured among the "
        "training domains (the shipped fit; --no-shift-margin: the plain composite null)",
    ),
]


@app.command("train-heads")
def train_heads_command(
    traces: Annotated[list[Path] | None, typer.Option(help="traces files or folders (repeatable)")] = None,
    out: Annotated[Path | None, typer.Option(help="checkpoint path (default: the packaged weights)")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    held_out: Annotated[
        str,
        typer.Option(help="domains kept out of training (default: none — the shipped fit uses every domain)"),
    ] = "",
    heads_traces: HeadsTraces = 500,
    model_traces: ModelTraces = 300,
    block_size: Annotated[
        int, typer.Option(help="tokens per block the heads are trained on")
    ] = DEFAULT_BLOCK_SIZE,
    attacks: TrainAttacks = "all",
    shift_margin: ShiftMargin = True,
    cache_dir: Annotated[Path, typer.Option()] = DEFAULT_CACHE,
) -> None:
    """Train the pair heads and the verifier's block model, calibrate the statistical checks, save the
    checkpoint and its model card."""
    config = _train_config(seed, heads_traces, model_traces, block_size, attacks, shift_margin)
    _setup()
    from auditor.protocol.tokenize import get_tokenizer
    from auditor.research.embedding_cache import CachedEmbedder
    from auditor.research.traces import load_traces, split_traces
    from auditor.research.training import train_heads, write_model_card
    from auditor.semantic.heads import WEIGHTS_DIR

    started = time.monotonic()
    try:
        all_traces = load_traces(traces or [DEFAULT_TRACES])
        held = tuple(d for d in held_out.split(",") if d)
        split = split_traces(all_traces, held_out_domains=held, seed=seed)
        typer.echo(
            f"split: {len(split.train)} train, {len(split.validation)} calibration, {len(split.test)} held out"
        )
        embedder = CachedEmbedder(cache_dir)
        bundle = train_heads(
            split.train,
            split.validation,
            get_tokenizer(DEFAULT_TOKENIZER_ID),
            embedder,
            config,
            out=out,
            log=typer.echo,
        )
        embedder.save()
        card = (out.parent if out else WEIGHTS_DIR.parent) / "MODEL_CARD.md"
        write_model_card(bundle, card)
        typer.echo(f"wrote {card}")
    except (ProtocolError, ModelError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    shown = {k: round(v, 3) for k, v in bundle.metrics.items() if k.startswith("auc")}
    typer.echo(f"fit: {shown}")
    typer.echo(f"done in {time.monotonic() - started:.0f} s")


@app.command("eval")
def eval_command(
    traces: Annotated[list[Path], typer.Option(help="traces files or folders (repeat --traces for several)")],
    out: Annotated[Path, typer.Option(help="output folder for report.json, report.md and plots")],
    lodo: Annotated[
        bool,
        typer.Option(
            "--lodo",
            help="leave one domain out: per domain, train on the others and evaluate on it; one report",
        ),
    ] = False,
    attacks: Annotated[str, typer.Option(help="comma-separated attack names, or 'all'")] = "all",
    ir: Annotated[str, typer.Option(help="inflation ratios")] = "0.1,0.25,0.5,1,3",
    domains: Annotated[str | None, typer.Option(help="only these domains (comma-separated)")] = None,
    traces_per_cell: Annotated[int, typer.Option(help="traces per attack x IR cell")] = 50,
    honest_traces: Annotated[int | None, typer.Option(help="honest traces (default: all)")] = None,
    block_size: Annotated[int, typer.Option()] = DEFAULT_BLOCK_SIZE,
    rounds: Annotated[
        int, typer.Option(help="exposure rounds: 1 reveals the whole budget at once, no early stop")
    ] = ExposurePolicy.rounds,
    seed: Annotated[int, typer.Option()] = 0,
    protocol: Annotated[
        str, typer.Option(help="commit under coin/2 (with the repetition profile) or coin/1")
    ] = PROTOCOL_VERSION,
    heads: Annotated[
        Path | None, typer.Option(help="head checkpoint (default: the packaged one; not with --lodo)")
    ] = None,
    heads_traces: HeadsTraces = 500,
    model_traces: ModelTraces = 300,
    train_attacks: TrainAttacks = "all",
    shift_margin: ShiftMargin = True,
    cache_dir: Annotated[Path, typer.Option()] = DEFAULT_CACHE,
) -> None:
    """Run the whole protocol on honest and inflated traces and write the report; the last line printed
    is one JSON object of the headline figures."""
    names = _names(attacks, tuple(ATTACKS))
    unknown = [a for a in names if a not in ATTACKS]
    if unknown:
        raise typer.BadParameter(f"unknown attacks {unknown}; known: {', '.join(ATTACKS)}")
    if rounds < 1:
        raise typer.BadParameter("rounds: at least 1")
    if protocol not in PROTOCOL_VERSIONS:
        raise typer.BadParameter(f"protocol: one of {', '.join(PROTOCOL_VERSIONS)}")
    if lodo and heads is not None:
        raise typer.BadParameter("--heads: --lodo trains its own checkpoint per fold")
    train_config = (
        _train_config(seed, heads_traces, model_traces, block_size, train_attacks, shift_margin)
        if lodo
        else None
    )
    irs = _floats(ir, "ir")
    _setup()
    from auditor.protocol.tokenize import get_tokenizer
    from auditor.research.embedding_cache import CachedEmbedder
    from auditor.research.evaluation.lodo import run_lodo
    from auditor.research.evaluation.report import write_lodo_report, write_report
    from auditor.research.evaluation.run import EvalConfig, run_evaluation
    from auditor.research.traces import load_traces, trace_files
    from auditor.semantic.checks import SemanticSuite
    from auditor.semantic.heads import load_heads

    started = time.monotonic()
    try:
        files = trace_files(traces)
        loaded = load_traces(files, domains=domains.split(",") if domains else None)
        if not loaded:
            raise ProtocolError("traces: nothing to evaluate (check --domains)")
        embedder = CachedEmbedder(cache_dir)
        config = EvalConfig(
            attacks=names,
            irs=irs,
            block_size=block_size,
            traces_per_cell=traces_per_cell,
            honest_traces=honest_traces,
            seed=seed,
            policy=ExposurePolicy(rounds=rounds),
            protocol=protocol,
        )
        trace_domains = sorted({t.domain for t in loaded})
        meta: dict[str, object] = {
            "trace_files": [str(f) for f in files],
            "domains": trace_domains,
            "traces": len(loaded),
            "embd_id": embedder.embd_id,
        }
        if train_config is not None:
            if len(trace_domains) < 2:
                raise ProtocolError("--lodo needs traces of at least two domains")
            tokenizer = get_tokenizer(DEFAULT_TOKENIZER_ID)
            folds = run_lodo(loaded, embedder, tokenizer, train_config, config, out, log=typer.echo)
            embedder.save()
            meta["seconds"] = round(time.monotonic() - started, 1)
            report = write_lodo_report(folds, config, out, meta, log=typer.echo)
        else:
            bundle = load_heads(heads, embd_id=embedder.embd_id)
            meta["checkpoint"] = bundle.checkpoint_id
            suite = SemanticSuite.for_tokenizer(bundle, DEFAULT_TOKENIZER_ID, config.policy)
            outcomes = run_evaluation(loaded, embedder, suite, config)
            meta["seconds"] = round(time.monotonic() - started, 1)
            report = write_report(outcomes, config, out, meta, log=typer.echo)
    except (ProtocolError, ModelError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"done in {time.monotonic() - started:.0f} s")
    typer.echo(json.dumps(report["headline"]))


@app.command("monitor-eval")
def monitor_eval_command(
    out: Annotated[Path, typer.Option(help="output folder for monitor.json, monitor.md and the plots")],
    lodo_dir: Annotated[
        Path,
        typer.Option(help="a leave-one-domain-out run: fold-<domain>/outcomes.jsonl, two folds at least"),
    ] = Path("var/lodo"),
    honest_providers: Annotated[int, typer.Option(help="simulated honest providers per domain")] = 1000,
    providers: Annotated[int, typer.Option(help="simulated providers per attack x IR x share cell")] = 200,
    horizon: Annotated[int, typer.Option(help="audits per provider")] = 1000,
    ir: Annotated[str, typer.Option(help="inflation ratios (cells of the LODO run)")] = "0.1,0.25,0.5,1",
    share: Annotated[
        str, typer.Option(help="shares of a provider's reports that are inflated")
    ] = "0.1,0.3,1",
    alpha: Annotated[float, typer.Option(help="false-alarm probability per provider and period")] = 0.01,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Simulate provider monitoring on the leave-one-domain-out outcomes: audits to alarm, honest false
    alarms and the inflated-share interval's coverage; the last line printed is one JSON object of the
    headline figures."""
    if min(honest_providers, providers, horizon) < 1:
        raise typer.BadParameter("honest-providers, providers and horizon: at least 1")
    if not 0 < alpha < 1:
        raise typer.BadParameter("alpha: in (0, 1)")
    shares = _floats(share, "share")
    if any(s > 1 for s in shares):
        raise typer.BadParameter("share: in (0, 1]")
    irs = _floats(ir, "ir")
    if not lodo_dir.is_dir():
        raise typer.BadParameter(f"lodo-dir: {lodo_dir} is not a folder")
    from auditor.research.monitor_eval import MonitorEvalConfig, run_monitor_eval
    from auditor.research.monitor_report import write_monitor_report

    started = time.monotonic()
    config = MonitorEvalConfig(
        honest_providers=honest_providers,
        providers=providers,
        horizon=horizon,
        irs=irs,
        shares=shares,
        alpha=alpha,
        seed=seed,
    )
    try:
        report = run_monitor_eval(lodo_dir, config, log=typer.echo)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    report["seconds"] = round(time.monotonic() - started, 1)
    write_monitor_report(report, out, log=typer.echo)
    typer.echo(f"done in {time.monotonic() - started:.0f} s")
    typer.echo(json.dumps(report["headline"]))
