"""Training and calibration of the matching heads and the verifier (DESIGN §3 checks 4, 5, 8; §6).

Data: the traces split by `auditor.research.traces.split_traces` (held-out domains kept out entirely; the
rest split by question and model). The training questions are split again by question into a part that
fits the three pair heads and a part that fits the verifier's block model on the heads' *out-of-sample*
outputs (stacking); every trace of the validation questions, honest, calibrates the statistical checks
(`auditor.semantic.calibration`). The shipped checkpoint is the final fit of the leave-one-domain-out
procedure (`auditor.research.evaluation.lodo`): every domain, none held out.

Every training example is what a verifier would actually see: each trace (honest, and inflated by a
content attack of `auditor.research.attacks` at a random IR) is put through the exposure plan of
`auditor.semantic.exposure`, and only the planned blocks, token runs and the answer are embedded — through the
content-addressed cache, so the evaluation later reuses them. Labels: a token is genuine or injected;
a block is genuine (no injected token) or inflated (at least half injected); a set of revealed blocks is
honest or comes from an inflated trace.
"""

import random
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from tqdm import tqdm

from auditor.protocol.commitment import DEFAULT_BLOCK_SIZE
from auditor.protocol.fingerprint import EmbeddingModel, Int8Array, block_texts, decode_token, quantize
from auditor.protocol.tokenize import Tokenizer
from auditor.research.attacks import HEAD_ATTACKS, AttackContext, InflatedTrace, inflate
from auditor.research.embedding_cache import CachedEmbedder
from auditor.research.traces import Trace, stable_fraction
from auditor.semantic.calibration import (
    Alphas,
    calibrate,
    merge_rate,
    null_scores,
    verifier_bands,
    verifier_finals,
)
from auditor.semantic.checks import (
    FEATURE_NAMES,
    MEASURES,
    Evidence,
    Revealed,
    RevealedBlock,
    block_measures,
    context_codes,
    evidence_of,
    gaps_to_others,
)
from auditor.semantic.exposure import ExposurePlan, ExposurePolicy, plan_exposure
from auditor.semantic.heads import CHECKPOINT_NAME, WEIGHTS_DIR, HeadBundle, PairHead

TRAIN_IRS = (0.1, 0.25, 0.5, 1.0, 3.0)
# A block counts as injected, for the block model, when at least this share of its tokens are.
INJECTED_BLOCK = 0.5
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Sample:
    """One trace (honest or inflated) as revealed by its exposure plan, with training labels."""

    trace_id: str
    domain: str
    attack: str  # "honest" for genuine traces
    ir: float
    plan: ExposurePlan
    revealed: Revealed
    block_injected: tuple[float, ...]  # injected fraction of each revealed block
    token_injected: tuple[tuple[bool, ...], ...]  # per revealed block, per revealed token


def revealed_view(
    tokens: Sequence[bytes],
    answer_codes: Int8Array,
    plan: ExposurePlan,
    embedder: EmbeddingModel,
) -> Revealed:
    """Embed exactly what `plan` reveals and group it like `revealed_from_opened`."""
    end = len(plan.blocks)
    texts = block_texts(tokens, plan.block_size)
    runs = [tuple(tokens[i] for i in run) for run in plan.runs[:end]]
    # One batch for the blocks and all their run tokens: the model is far faster on batches.
    wanted = [texts[j] for j in plan.blocks[:end]] + [decode_token(t) for run in runs for t in run]
    codes = quantize(embedder.embed_texts(wanted))
    blocks = []
    offset = end
    for k, (index, run) in enumerate(zip(plan.blocks[:end], plan.runs[:end], strict=True)):
        token_codes = codes[offset : offset + len(run)]
        offset += len(run)
        blocks.append(RevealedBlock(index, codes[k], run, runs[k], token_codes))
    order = sorted(range(len(blocks)), key=lambda k: blocks[k].index)
    return Revealed(-(-plan.size // plan.block_size), answer_codes, tuple(blocks[k] for k in order))


def make_sample(
    trace: Trace,
    inflated: InflatedTrace | None,
    genuine: Sequence[bytes],
    answer_codes: Int8Array,
    embedder: EmbeddingModel,
    policy: ExposurePolicy,
    rng: random.Random,
    block_size: int,
    max_blocks: int,
) -> Sample:
    tokens = list(inflated.tokens) if inflated else list(genuine)
    mask = list(inflated.injected) if inflated else [False] * len(tokens)
    plan = plan_exposure(len(tokens), block_size, policy, rng)
    ends = tuple(sorted({min(e, max_blocks) for e in plan.round_ends}))
    plan = ExposurePlan(
        plan.size, plan.block_size, plan.count_indices, plan.blocks[:max_blocks], plan.runs[:max_blocks], ends
    )
    revealed = revealed_view(tokens, answer_codes, plan, embedder)
    block_injected = tuple(
        float(np.mean(mask[b.index * block_size : (b.index + 1) * block_size])) for b in revealed.blocks
    )
    token_injected = tuple(tuple(mask[i] for i in b.token_indices) for b in revealed.blocks)
    return Sample(
        trace.id,
        trace.domain,
        inflated.attack if inflated else "honest",
        inflated.ir if inflated else 0.0,
        plan,
        revealed,
        block_injected,
        token_injected,
    )


def collect_samples(
    traces: Sequence[Trace],
    ctx: AttackContext,
    embedder: EmbeddingModel,
    policy: ExposurePolicy,
    *,
    seed: int,
    attacked_per_trace: int,
    block_size: int,
    max_blocks: int = 16,
    min_tokens: int | None = None,
    attacks: Sequence[str] = HEAD_ATTACKS,
    desc: str = "samples",
) -> list[Sample]:
    """For each trace of at least `min_tokens` tokens (default: two blocks): the honest sample and
    `attacked_per_trace` inflated ones (an attack of `attacks` and an IR, drawn at random)."""
    samples: list[Sample] = []
    answers = quantize(embedder.embed_texts([t.answer for t in traces]))
    for k, trace in enumerate(tqdm(traces, desc=desc, unit="trace")):
        rng = random.Random(f"{seed}:{trace.id}")
        genuine = ctx.tokens(trace)
        if len(genuine) < (2 * block_size if min_tokens is None else min_tokens):
            continue
        samples.append(
            make_sample(trace, None, genuine, answers[k], embedder, policy, rng, block_size, max_blocks)
        )
        for _ in range(attacked_per_trace):
            attack = rng.choice(attacks)
            inflated = inflate(trace, attack, rng.choice(TRAIN_IRS), rng, ctx)
            samples.append(
                make_sample(
                    trace, inflated, genuine, answers[k], embedder, policy, rng, block_size, max_blocks
                )
            )
    return samples


# --- pair heads -------------------------------------------------------------------------------------


def _fit_pair_head(
    x: FloatArray, y: FloatArray, labels: FloatArray, *, seed: int, epochs: int, desc: str
) -> tuple[PairHead, list[float]]:
    """Binary cross-entropy with class balancing, Adam, small batches; returns the head and losses."""
    torch.manual_seed(seed)
    head = PairHead()
    optimiser = torch.optim.Adam(head.parameters(), lr=1e-3, weight_decay=1e-5)
    positives = float(labels.sum())
    pos_weight = torch.tensor((len(labels) - positives) / max(positives, 1.0))
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    tx, ty, tl = (torch.from_numpy(a) for a in (x / 127.0, y / 127.0, labels))
    generator = torch.Generator().manual_seed(seed)
    losses = []
    head.train()
    for _ in tqdm(range(epochs), desc=desc, unit="epoch"):
        order = torch.randperm(len(tl), generator=generator)
        total = 0.0
        for start in range(0, len(order), 256):
            idx = order[start : start + 256]
            optimiser.zero_grad()
            loss = loss_fn(head(tx[idx], ty[idx]), tl[idx])
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(tl))
    head.eval()
    return head, losses


def token_pairs(samples: Iterable[Sample], rng: random.Random) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(token code, block code, genuine?) for every revealed token, plus as many mismatched pairs
    (a genuine token against another trace's block) as there are genuine ones."""
    tokens, blocks, labels = [], [], []
    pool: list[Int8Array] = []
    for sample in samples:
        for block, flags in zip(sample.revealed.blocks, sample.token_injected, strict=True):
            pool.append(block.codes)
            for code, injected in zip(block.token_codes, flags, strict=True):
                tokens.append(code)
                blocks.append(block.codes)
                labels.append(0.0 if injected else 1.0)
    genuine = [k for k, label in enumerate(labels) if label == 1.0]
    for k in rng.sample(genuine, min(len(genuine), len(pool))):
        tokens.append(tokens[k])
        blocks.append(rng.choice(pool))
        labels.append(0.0)
    return (
        np.asarray(tokens, dtype=np.float32),
        np.asarray(blocks, dtype=np.float32),
        np.asarray(labels, dtype=np.float32),
    )


def block_pairs(samples: Sequence[Sample], rng: random.Random) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(block code, answer code, genuine?) for revealed blocks that are clean (1) or at least half
    injected (0), plus honest blocks against the answer of another trace of the same domain (0)."""
    blocks, answers, labels = [], [], []
    by_domain: dict[str, list[Int8Array]] = {}
    for sample in samples:
        by_domain.setdefault(sample.domain, []).append(sample.revealed.answer_codes)
        for block, fraction in zip(sample.revealed.blocks, sample.block_injected, strict=True):
            if fraction == 0.0 or fraction >= 0.5:
                blocks.append(block.codes)
                answers.append(sample.revealed.answer_codes)
                labels.append(1.0 if fraction == 0.0 else 0.0)
    for sample in samples:
        if sample.attack != "honest":
            continue
        others = by_domain[sample.domain]
        for block in sample.revealed.blocks[:4]:
            blocks.append(block.codes)
            answers.append(rng.choice(others))
            labels.append(0.0)
    return (
        np.asarray(blocks, dtype=np.float32),
        np.asarray(answers, dtype=np.float32),
        np.asarray(labels, dtype=np.float32),
    )


def context_pairs(samples: Sequence[Sample]) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(block code, mean code of the other revealed blocks, genuine?) for clean (1) and at least half
    injected (0) blocks of samples with two or more revealed blocks."""
    blocks, contexts, labels = [], [], []
    for sample in samples:
        if len(sample.revealed.blocks) < 2:
            continue
        codes = np.stack([b.codes for b in sample.revealed.blocks]).astype(np.float32)
        others = context_codes(codes)
        for k, fraction in enumerate(sample.block_injected):
            if fraction == 0.0 or fraction >= 0.5:
                blocks.append(codes[k])
                contexts.append(others[k])
                labels.append(1.0 if fraction == 0.0 else 0.0)
    return (
        np.asarray(blocks, dtype=np.float32),
        np.asarray(contexts, dtype=np.float32),
        np.asarray(labels, dtype=np.float32),
    )


def auc(scores: Sequence[float], labels: Sequence[float]) -> float:
    """Area under the ROC curve (probability a positive outscores a negative; ties count half)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    pos, neg = s[y == 1], s[y == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order), dtype=np.float64)
    joined = np.concatenate([pos, neg])[order]
    ranks[order] = np.arange(1, len(order) + 1)
    for value in np.unique(joined):  # average ranks over ties
        tied = np.concatenate([pos, neg]) == value
        ranks[tied] = ranks[tied].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


# --- the verifier's block model -------------------------------------------------------------------------


def feature_scale(measures: Sequence[FloatArray]) -> FloatArray:
    """Per feature, the robust spread (1.4826 MAD) of honest blocks' gaps to their other blocks: the unit
    the block model reads each gap in."""
    gaps = np.concatenate([gaps_to_others(m) for m in measures if len(m) > 1])
    mad = np.median(np.abs(gaps - np.median(gaps, axis=0)), axis=0)
    scale: FloatArray = np.maximum(1.4826 * mad, 1e-3).astype(np.float32)
    return scale


def block_examples(samples: Sequence[Sample], evidence: Sequence[Evidence]) -> tuple[FloatArray, FloatArray]:
    """(features, injected?) for the blocks of honest traces (0) and the blocks of inflated traces that
    are at least half injected (1). The clean blocks of inflated traces are left out: next to injected
    ones they look unusual, and learning that would teach the model to distrust honest outliers."""
    rows, labels = [], []
    for sample, ev in zip(samples, evidence, strict=True):
        if len(ev.revealed.blocks) < 2:
            continue
        for k, fraction in enumerate(sample.block_injected):
            if sample.attack == "honest" or fraction >= INJECTED_BLOCK:
                rows.append(ev.features[k])
                labels.append(0.0 if sample.attack == "honest" else 1.0)
    return np.asarray(rows, dtype=np.float32), np.asarray(labels, dtype=np.float32)


def _fit_block_model(x: FloatArray, y: FloatArray, *, seed: int, epochs: int) -> nn.Linear:
    """Logistic regression, class-balanced, with a little L2: few parameters, so little to overfit to the
    training domains."""
    torch.manual_seed(seed)
    model = nn.Linear(x.shape[1], 1)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05, weight_decay=1e-4)
    positives = float(y.sum())
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(y) - positives) / max(positives, 1.0)))
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for _ in range(epochs):
        optimiser.zero_grad()
        loss_fn(model(tx).squeeze(-1), ty).backward()
        optimiser.step()
    model.eval()
    return model


# --- the whole pipeline -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    block_size: int = DEFAULT_BLOCK_SIZE
    heads_traces: int = 500
    model_traces: int = 300
    attacked_per_trace: int = 2
    max_blocks: int = 12
    head_epochs: int = 20
    model_epochs: int = 300
    alphas: Alphas = field(default_factory=Alphas)
    # The attack families the heads and the block model see; leaving one out measures transfer to it.
    attacks: tuple[str, ...] = HEAD_ATTACKS
    # The verifier's quantile at alpha over the domain shift seen among the training domains
    # (`auditor.semantic.calibration.domain_shift`); off: the plain composite null.
    shift_margin: bool = True


def _subsample(traces: Sequence[Trace], n: int, seed: int, salt: str) -> list[Trace]:
    """n traces spread over as many questions as possible, chosen by a stable hash (reproducible)."""
    ranked = sorted(traces, key=lambda t: stable_fraction(f"{salt}:{t.id}", seed))
    by_question: dict[str, list[Trace]] = {}
    for t in ranked:
        by_question.setdefault(t.question, []).append(t)
    out: list[Trace] = []
    depth = 0
    while len(out) < n and any(len(v) > depth for v in by_question.values()):
        out.extend(v[depth] for v in by_question.values() if len(v) > depth)
        depth += 1
    return out[:n]


def domain_merge_rate(traces: Sequence[Trace], tokenizer: Tokenizer) -> float:
    """The highest per-domain rate of honest adjacent pairs that merge when re-tokenized: the
    retokenization check's null must hold in every domain trained on, not only on average."""
    by_domain: dict[str, list[Trace]] = defaultdict(list)
    for trace in traces:
        by_domain[trace.domain].append(trace)
    return max(
        merge_rate((tokenizer.tokenize(t.reasoning) for t in domain), tokenizer)
        for domain in by_domain.values()
    )


def fitting_split(
    train: Sequence[Trace], config: TrainConfig
) -> tuple[list[Trace], list[Trace], list[Trace], list[Trace], list[Trace]]:
    """The training traces by use, by question: (the pair heads' part, the block model's part, the traces
    each is fit on, and every trace no model is fit on). The verifier's thresholds are per band of trace
    length and per domain: they need many honest traces, so every trace that no model was fit on
    calibrates them (the null scores come from validation)."""
    heads_part = [t for t in train if stable_fraction("stack:" + t.question, config.seed) >= 0.35]
    model_part = [t for t in train if stable_fraction("stack:" + t.question, config.seed) < 0.35]
    heads_traces = _subsample(heads_part, config.heads_traces, config.seed, "heads")
    model_traces = _subsample(model_part, config.model_traces, config.seed, "stack")
    fitted = {t.id for t in heads_traces} | {t.id for t in model_traces}
    held_back = [t for t in train if t.id not in fitted]
    return heads_part, model_part, heads_traces, model_traces, held_back


def collect_calibration(
    traces: Sequence[Trace], tokenizer: Tokenizer, embedder: EmbeddingModel, config: TrainConfig
) -> list[Sample]:
    """Calibration needs the tail of the honest distribution: every calibration trace, honest, through
    its whole exposure plan, as a real audit would reveal it."""
    return collect_samples(
        traces,
        AttackContext(tokenizer, traces, config.block_size),
        embedder,
        ExposurePolicy(),
        seed=config.seed,
        attacked_per_trace=0,
        block_size=config.block_size,
        max_blocks=10**9,
        min_tokens=2,
        desc="calibration data",
    )


def calibrate_bundle(
    bundle: HeadBundle,
    samples: Sequence[Sample],
    validation_ids: Collection[str],
    tokenizer: Tokenizer,
    honest_merge_rate: float,
    config: TrainConfig,
) -> dict[str, int]:
    """Set a fitted bundle's null scores (from the validation traces among `samples`), its verifier bands
    and the statistical checks' thresholds (from all of them); the calibration traces per domain."""
    honest = [(sample, evidence_of(sample.revealed, bundle, tokenizer)) for sample in samples]
    bundle.null_scores, bundle.null_outliers = null_scores(
        [(sample.plan, evidence) for sample, evidence in honest if sample.trace_id in validation_ids],
        bundle,
        tokenizer,
    )
    finals = verifier_finals([(sample.domain, sample.plan, evidence) for sample, evidence in honest], bundle)
    bundle.verifier_bands, margin = verifier_bands(
        finals, config.alphas.verifier, shift_margin=config.shift_margin
    )
    bundle.calibration = calibrate(
        [(sample.plan, evidence) for sample, evidence in honest],
        honest_merge_rate=honest_merge_rate,
        alphas=config.alphas,
    )
    if config.shift_margin:
        bundle.calibration["verifier_shift_margin"] = margin
    return {domain: len(rows) for domain, rows in sorted(finals.items())}


def train_heads(
    train: Sequence[Trace],
    validation: Sequence[Trace],
    tokenizer: Tokenizer,
    embedder: EmbeddingModel,
    config: TrainConfig,
    *,
    out: Path | None = None,
    log: Callable[[str], None] = print,
) -> HeadBundle:
    """Fit the pair heads and the block model, calibrate on the traces no model was fit on, save (see the
    module docstring). `out=None` saves over the shipped checkpoint."""
    policy = ExposurePolicy()
    heads_part, model_part, heads_traces, model_traces, held_back = fitting_split(train, config)
    log(
        f"traces: {len(heads_traces)} heads, {len(model_traces)} block model, {len(validation)} validation, "
        f"{len(held_back)} more held back from fitting"
    )

    def save_cache() -> None:
        # Keep the embeddings paid for so far even if a later stage fails.
        if isinstance(embedder, CachedEmbedder):
            embedder.save()

    def collect(traces: Sequence[Trace], pool: Sequence[Trace], desc: str, attacked: int) -> list[Sample]:
        samples = collect_samples(
            traces,
            AttackContext(tokenizer, pool, config.block_size),
            embedder,
            policy,
            seed=config.seed,
            attacked_per_trace=attacked,
            attacks=config.attacks,
            block_size=config.block_size,
            max_blocks=config.max_blocks,
            desc=desc,
        )
        save_cache()
        return samples

    heads_samples = collect(heads_traces, heads_part, "heads data", config.attacked_per_trace)
    model_samples = collect(model_traces, model_part, "block model data", config.attacked_per_trace)
    calibration_samples = collect_calibration([*validation, *held_back], tokenizer, embedder, config)
    save_cache()

    rng = random.Random(config.seed)
    ta, tb, tl = token_pairs(heads_samples, rng)
    head_a, loss_a = _fit_pair_head(
        ta, tb, tl, seed=config.seed, epochs=config.head_epochs, desc="tokens-to-block"
    )
    ba, bb, bl = block_pairs(heads_samples, rng)
    head_b, loss_b = _fit_pair_head(
        ba, bb, bl, seed=config.seed, epochs=config.head_epochs, desc="block-to-answer"
    )
    ca, cb, cl = context_pairs(heads_samples)
    head_c, loss_c = _fit_pair_head(
        ca, cb, cl, seed=config.seed, epochs=config.head_epochs, desc="block-to-trace"
    )

    bundle = HeadBundle(
        embd_id=embedder.embd_id,
        tokens_to_block=head_a,
        block_to_answer=head_b,
        block_to_trace=head_c,
        block_model=nn.Linear(len(FEATURE_NAMES), 1),
        feature_names=FEATURE_NAMES,
        feature_scale=np.ones(len(FEATURE_NAMES), dtype=np.float32),
        null_scores=np.zeros(0),
        null_outliers=np.zeros(0),
        verifier_bands=(),
        calibration={},
        metrics={},
    )
    honest_measures = [
        block_measures(s.revealed, bundle, tokenizer)[0] for s in model_samples if s.attack == "honest"
    ]
    bundle.feature_scale = feature_scale(honest_measures)
    model_evidence = [evidence_of(s.revealed, bundle, tokenizer) for s in model_samples]
    x, y = block_examples(model_samples, model_evidence)
    bundle.block_model = _fit_block_model(x, y, seed=config.seed, epochs=config.model_epochs)
    bundle.__post_init__()

    calibration_by_domain = calibrate_bundle(
        bundle,
        calibration_samples,
        {t.id for t in validation},
        tokenizer,
        domain_merge_rate(train, tokenizer),
        config,
    )
    bundle.metrics = {
        **validation_metrics(heads_samples, model_samples, model_evidence, bundle),
        "config": {**asdict(config), "alphas": asdict(config.alphas)},
        "domains": sorted({t.domain for t in train}),
        "train_traces": {
            "heads": len(heads_traces),
            "block_model": len(model_traces),
            "calibration": len(calibration_samples),
            "calibration_by_domain": calibration_by_domain,
        },
        "examples": {
            "tokens_to_block": len(tl),
            "block_to_answer": len(bl),
            "block_to_trace": len(cl),
            "block_model": len(y),
            "null_scores": len(bundle.null_scores),
        },
        "final_loss": {
            "tokens_to_block": loss_a[-1],
            "block_to_answer": loss_b[-1],
            "block_to_trace": loss_c[-1],
        },
    }
    target = out or WEIGHTS_DIR / CHECKPOINT_NAME
    bundle.save(target)
    log(f"saved {target} ({target.stat().st_size / 1e6:.2f} MB)")
    return bundle


def validation_metrics(
    heads_samples: Sequence[Sample],
    model_samples: Sequence[Sample],
    model_evidence: Sequence[Evidence],
    bundle: HeadBundle,
) -> dict[str, Any]:
    """In-sample AUCs of the heads and of the block model (how well each fit; the held-out figures are
    the evaluation's), and the block model's weight on each feature."""
    rng = random.Random(1)
    ta, tb, tl = token_pairs(heads_samples, rng)
    ba, bb, bl = block_pairs(heads_samples, rng)
    ca, cb, cl = context_pairs(heads_samples)
    x, y = block_examples(model_samples, model_evidence)
    weights = bundle.block_model.weight.detach().numpy()[0]
    return {
        "auc_tokens_to_block": auc(bundle.pair_logits(bundle.tokens_to_block, ta, tb).tolist(), tl.tolist()),
        "auc_block_to_answer": auc(bundle.pair_logits(bundle.block_to_answer, ba, bb).tolist(), bl.tolist()),
        "auc_block_to_trace": auc(bundle.pair_logits(bundle.block_to_trace, ca, cb).tolist(), cl.tolist()),
        "auc_block_model": auc(bundle.block_scores(x).tolist(), y.tolist()),
        "block_model_weights": dict(zip(FEATURE_NAMES, (float(w) for w in weights), strict=True)),
    }


def write_model_card(bundle: HeadBundle, path: Path) -> None:
    """MODEL_CARD.md: what the shipped heads were trained on, how, and how well they fit."""
    m = bundle.metrics
    config = m.get("config", {})
    lines = [
        "# Model card: CoIn Audit matching heads and verifier",
        "",
        "Generated by `coin train-heads` (auditor/research/training.py); do not edit by hand.",
        "",
        "## What they are",
        "",
        "- **Tokens-to-Block head** (CoIn model A, DESIGN §3 check 4): MLP on [t, e, t·e, |t−e|] of a revealed",
        "  token's and its block's int8 Embd codes → logit(token belongs to block).",
        "- **Block-to-Answer head** (CoIn model B, check 5): the same architecture on (block, answer) codes.",
        "- **Block-to-Trace head** (ours): the same architecture on (block, mean code of the other revealed",
        "  blocks) → logit(block belongs with the rest of the trace).",
        "- **Block model** (check 8): logistic regression on each revealed block's measures minus their median",
        f"  over the other revealed blocks ({', '.join(MEASURES)}), in units of the honest spread →",
        "  logit(block is injected). The verifier's p-value compares a block's score with the",
        f"  {len(bundle.null_scores)} honest calibration block scores kept in the checkpoint; so is an",
        "  unsupervised outlier score (the squared length of the block's scaled gap vector) and its null.",
        f"- Embedding model: `{bundle.embd_id}` (frozen). Loading these heads for another embd_id is refused.",
        "",
        "## Data",
        "",
        "- Source: `../shared/data/traces` (see its README for provenance and licences).",
        f"- Domains trained on: {', '.join(m.get('domains', []))}. The leave-one-domain-out evaluation",
        "  (docs/evaluation.md) trains the same way without each domain in turn; this is its final fit.",
        "- Split by question (20% of questions → calibration), and 15% of models are dropped from training so",
        "  calibration also sees unseen models. Training questions are split again by question: 65% fit the",
        "  pair heads, 35% fit the block model on the heads' out-of-sample outputs.",
        f"- Traces used: {m.get('train_traces')}; seed {config.get('seed')}.",
        f"- Every training trace contributes its honest version and {config.get('attacked_per_trace')} versions"
        f" inflated by a random content attack at IR ∈ {list(TRAIN_IRS)}; only what the exposure plan reveals",
        f"  (≤ {config.get('max_blocks')} blocks, block size {config.get('block_size')}) is embedded.",
        f"- Examples: {m.get('examples')}.",
        "",
        "## Calibration (every calibration trace, honest, all rounds of progressive exposure)",
        "",
        "| threshold | value |",
        "|---|---:|",
        *[f"| {k} | {v:.4g} |" for k, v in sorted(bundle.calibration.items())],
        "",
        "## Verifier thresholds (by blocks the plan reveals; the most cautious domain's quantile at alpha / the"
        " domain-shift margin)",
        "",
        "| planned blocks up to | suspect below | clean-sample pass from |",
        "|---:|---:|---:|",
        *[f"| {b.max_planned} | {b.threshold:.3g} | {b.pass_level:.3g} |" for b in bundle.verifier_bands],
        "",
        f"Calibration traces per domain: {m.get('train_traces', {}).get('calibration_by_domain')}.",
        "",
        "## Fit (in-sample AUCs; the held-out figures are in docs/evaluation.md)",
        "",
        f"- tokens-to-block {m.get('auc_tokens_to_block', float('nan')):.3f}, block-to-answer"
        f" {m.get('auc_block_to_answer', float('nan')):.3f}, block-to-trace {m.get('auc_block_to_trace', float('nan')):.3f},"
        f" block model {m.get('auc_block_model', float('nan')):.3f}",
        "- Block model weights: "
        + ", ".join(f"{k} {v:+.2f}" for k, v in m.get("block_model_weights", {}).items()),
        "",
        "## Limits",
        "",
        "- The heads are trained on this project's attack generators; an attacker with a different generator",
        "  may score differently. Leave-one-domain-out measures transfer to unseen domains, not to unseen",
        "  attack families.",
        "- The medical domain is GPT-4o-written o1-style text, not a native reasoning model.",
        "",
    ]
    path.write_text("\n".join(lines))
