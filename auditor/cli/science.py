"""`coin train-heads` and `coin eval` (DESIGN §6): the science commands, composed into the `coin` CLI.

Both run on a CPU: one torch thread (the machine is shared), embeddings cached on disk under
`var/cache/` keyed by content hash, progress bars on stderr.
"""

import os
import time
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from auditor.protocol.commitment import DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE
from auditor.protocol.errors import ModelError, ProtocolError
from auditor.protocol.tokenize import DEFAULT_TOKENIZER_ID
from auditor.research.attacks import ATTACKS, CONTENT_ATTACKS
from auditor.semantic.exposure import ExposurePolicy

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


@app.command("train-heads")
def train_heads_command(
    traces: Annotated[list[Path] | None, typer.Option(help="traces files or folders (repeatable)")] = None,
    out: Annotated[Path | None, typer.Option(help="checkpoint path (default: the packaged weights)")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    held_out: Annotated[str, typer.Option(help="domains kept out of training")] = "general_reasoning,medical",
    heads_traces: Annotated[int, typer.Option(help="traces for the pair heads")] = 500,
    stack_traces: Annotated[int, typer.Option(help="traces for the DeepSet (stacking)")] = 300,
    validation_traces: Annotated[int, typer.Option(help="traces for calibration")] = 350,
    target_fpr: Annotated[float, typer.Option(help="false-positive rate to calibrate to")] = 0.01,
    block_size: Annotated[
        int, typer.Option(help="tokens per block the heads are trained on")
    ] = DEFAULT_BLOCK_SIZE,
    attacks: Annotated[
        str,
        typer.Option(
            help="content attacks to train on, comma-separated, or 'all' (leave one out to test transfer)"
        ),
    ] = "all",
    cache_dir: Annotated[Path, typer.Option()] = DEFAULT_CACHE,
) -> None:
    """Train heads A and B and the DeepSet verifier, calibrate every threshold, save the checkpoint."""
    if not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE:
        raise typer.BadParameter(f"block-size: {MIN_BLOCK_SIZE}..{MAX_BLOCK_SIZE} tokens (DESIGN §3)")
    train_attacks = _names(attacks, CONTENT_ATTACKS)
    if not train_attacks or not set(train_attacks) <= set(CONTENT_ATTACKS):
        raise typer.BadParameter(f"attacks: some of {', '.join(CONTENT_ATTACKS)}")
    _setup()
    from auditor.protocol.tokenize import get_tokenizer
    from auditor.research.embedding_cache import CachedEmbedder
    from auditor.research.traces import load_traces, split_traces
    from auditor.research.training import TrainConfig, train_heads, write_model_card
    from auditor.semantic.heads import WEIGHTS_DIR

    started = time.monotonic()
    try:
        all_traces = load_traces(traces or [DEFAULT_TRACES])
        split = split_traces(all_traces, held_out_domains=tuple(held_out.split(",")), seed=seed)
        typer.echo(
            f"split: {len(split.train)} train, {len(split.validation)} validation, {len(split.test)} test"
        )
        embedder = CachedEmbedder(cache_dir)
        config = TrainConfig(
            seed=seed,
            heads_traces=heads_traces,
            stack_traces=stack_traces,
            validation_traces=validation_traces,
            target_fpr=target_fpr,
            block_size=block_size,
            attacks=train_attacks,
        )
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
        write_model_card(bundle, card, held_out.split(","))
        typer.echo(f"wrote {card}")
    except (ProtocolError, ModelError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    shown = {k: v for k, v in bundle.metrics.items() if k.startswith("auc")}
    typer.echo(f"validation: {shown}")
    typer.echo(f"done in {time.monotonic() - started:.0f} s")


@app.command("eval")
def eval_command(
    traces: Annotated[list[Path], typer.Option(help="traces files or folders (repeat --traces for several)")],
    out: Annotated[Path, typer.Option(help="output folder for report.json, report.md and plots")],
    attacks: Annotated[str, typer.Option(help="comma-separated attack names, or 'all'")] = "all",
    ir: Annotated[str, typer.Option(help="inflation ratios")] = "0.1,0.25,0.5,1,3",
    domains: Annotated[str | None, typer.Option(help="only these domains (comma-separated)")] = None,
    traces_per_cell: Annotated[int, typer.Option(help="traces per attack x IR cell")] = 50,
    honest_traces: Annotated[int | None, typer.Option(help="honest traces (default: all)")] = None,
    verifier: Annotated[str, typer.Option(help="deepset or rule")] = "deepset",
    block_size: Annotated[int, typer.Option()] = DEFAULT_BLOCK_SIZE,
    rounds: Annotated[
        int, typer.Option(help="exposure rounds: 1 reveals the whole budget at once, no early stop")
    ] = ExposurePolicy.rounds,
    seed: Annotated[int, typer.Option()] = 0,
    heads: Annotated[Path | None, typer.Option(help="head checkpoint (default: the packaged one)")] = None,
    reference_share: Annotated[
        float,
        typer.Option(
            help="hold back this share of the questions as honest reference traces and calibrate each "
            "domain on its own (0: the checkpoint's calibration)"
        ),
    ] = 0.0,
    cache_dir: Annotated[Path, typer.Option()] = DEFAULT_CACHE,
) -> None:
    """Run the whole protocol on honest and inflated traces and write the report."""
    names = _names(attacks, tuple(ATTACKS))
    unknown = [a for a in names if a not in ATTACKS]
    if unknown:
        raise typer.BadParameter(f"unknown attacks {unknown}; known: {', '.join(ATTACKS)}")
    if verifier not in ("deepset", "rule"):
        raise typer.BadParameter("verifier: deepset or rule")
    if rounds < 1:
        raise typer.BadParameter("rounds: at least 1")
    if not 0 <= reference_share < 1:
        raise typer.BadParameter("reference-share: in [0, 1)")
    irs = _floats(ir, "ir")
    _setup()
    from auditor.research.embedding_cache import CachedEmbedder
    from auditor.research.evaluation.report import write_report
    from auditor.research.evaluation.run import EvalConfig, reference_suites, run_evaluation
    from auditor.research.traces import load_traces, split_reference, trace_files
    from auditor.semantic.checks import SemanticSuite
    from auditor.semantic.heads import load_heads

    started = time.monotonic()
    try:
        files = trace_files(traces)
        loaded = load_traces(files, domains=domains.split(",") if domains else None)
        if not loaded:
            raise ProtocolError("traces: nothing to evaluate (check --domains)")
        embedder = CachedEmbedder(cache_dir)
        bundle = load_heads(heads, embd_id=embedder.embd_id)
        config = EvalConfig(
            attacks=names,
            irs=irs,
            block_size=block_size,
            traces_per_cell=traces_per_cell,
            honest_traces=honest_traces,
            seed=seed,
            verifier="rule" if verifier == "rule" else "deepset",
            policy=ExposurePolicy(rounds=rounds),
            reference_share=reference_share,
        )
        suite = SemanticSuite.for_tokenizer(bundle, DEFAULT_TOKENIZER_ID, config.policy, config.verifier)
        domain_suites, reference_counts = None, None
        if reference_share:
            reference, evaluated = split_reference(loaded, reference_share, seed=seed)
            loaded = list(evaluated)
            reference_counts = dict(Counter(t.domain for t in reference))
            missing = sorted({t.domain for t in loaded} - set(reference_counts))
            if missing:
                raise ProtocolError(f"no reference traces for {missing}; raise --reference-share")
            domain_suites = reference_suites(reference, suite, embedder, config)
        outcomes = run_evaluation(loaded, embedder, suite, config, domain_suites=domain_suites)
        meta = {
            "trace_files": [str(f) for f in files],
            "domains": sorted({t.domain for t in loaded}),
            "traces": len(loaded),
            "embd_id": embedder.embd_id,
            "seconds": round(time.monotonic() - started, 1),
        }
        if reference_counts:
            meta["reference_traces"] = reference_counts
        report = write_report(outcomes, config, out, meta, log=typer.echo)
    except (ProtocolError, ModelError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"FPR {report['false_positive_rate']:.3%}, block exposure {report['mean_block_exposure']:.1%}, "
        f"token visibility {report['mean_token_visibility']:.2%}; {time.monotonic() - started:.0f} s"
    )
