"""Training and calibration of the matching heads and the verifier (DESIGN §3 checks 4, 5, 8; §6).

Data: the traces split by `auditor.research.traces.split_traces` (whole domains held out for the test; the rest
split by question and model). The training questions are split again by question into a part that fits
the two pair heads and a part that fits the DeepSet on the heads' *out-of-sample* outputs (stacking);
the validation questions calibrate every threshold to the target false-positive rate on honest traces.

Every training example is what a verifier would actually see: each trace (honest, and inflated by a
content attack of `auditor.research.attacks` at a random IR) is put through the exposure plan of
`auditor.semantic.exposure`, and only the planned blocks, token runs and the answer are embedded — through the
content-addressed cache, so the evaluation later reuses them. Labels: a token is genuine or injected;
a block is genuine (no injected token) or inflated (at least half injected); a set of revealed blocks is
honest or comes from an inflated trace.
"""

import random
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from tqdm import tqdm

from auditor.protocol.commitment import DEFAULT_BLOCK_SIZE
from auditor.protocol.errors import ModelError
from auditor.protocol.fingerprint import EmbeddingModel, Int8Array, block_texts, decode_token, quantize
from auditor.protocol.tokenize import Tokenizer
from auditor.research.attacks import CONTENT_ATTACKS, AttackContext, InflatedTrace, inflate
from auditor.research.embedding_cache import CachedEmbedder
from auditor.research.traces import Trace, stable_fraction
from auditor.semantic.calibration import calibrate, prefix_sets
from auditor.semantic.checks import (
    FEATURE_NAMES,
    Evidence,
    Revealed,
    RevealedBlock,
    block_features,
    context_codes,
    deepset_benign_probability,
    rule_benign_probability,
)
from auditor.semantic.exposure import ExposurePlan, ExposurePolicy, plan_exposure
from auditor.semantic.heads import CHECKPOINT_NAME, WEIGHTS_DIR, DeepSet, HeadBundle, PairHead

TRAIN_IRS = (0.1, 0.25, 0.5, 1.0, 3.0)
DEEPSET_MIN_IR = 0.25
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
    attacks: Sequence[str] = CONTENT_ATTACKS,
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
            total += float(loss) * len(idx)
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


# --- the DeepSet verifier -----------------------------------------------------------------------------


def prefix_injected(sample: Sample) -> list[bool]:
    """Whether any block revealed by the end of each round holds injected tokens."""
    rank = {b: k for k, b in enumerate(sample.plan.blocks)}
    hit = [rank[b.index] for b, f in zip(sample.revealed.blocks, sample.block_injected, strict=True) if f > 0]
    first = min(hit, default=len(rank))
    return [first < end for end in sample.plan.round_ends]


def _fit_deepset(
    sets: Sequence[FloatArray],
    labels: Sequence[float],
    mean: FloatArray,
    std: FloatArray,
    *,
    seed: int,
    epochs: int,
) -> DeepSet:
    torch.manual_seed(seed)
    model = DeepSet(len(FEATURE_NAMES))
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-5)
    y = torch.tensor(labels, dtype=torch.float32)
    positives = float(y.sum())
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(y) - positives) / max(positives, 1.0)))
    width = max(len(s) for s in sets)
    x = torch.zeros(len(sets), width, len(FEATURE_NAMES))
    mask = torch.zeros(len(sets), width, dtype=torch.bool)
    for k, rows in enumerate(sets):
        x[k, : len(rows)] = torch.from_numpy((rows - mean) / std)
        mask[k, : len(rows)] = True
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in tqdm(range(epochs), desc="deepset", unit="epoch"):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(order), 128):
            idx = order[start : start + 128]
            optimiser.zero_grad()
            loss_fn(model(x[idx], mask[idx]), y[idx]).backward()
            optimiser.step()
    model.eval()
    return model


# --- calibration --------------------------------------------------------------------------------------


def calibrate_on_reference(
    bundle: HeadBundle,
    reference: Sequence[Trace],
    tokenizer: Tokenizer,
    embedder: EmbeddingModel,
    policy: ExposurePolicy,
    *,
    block_size: int,
    target_fpr: float,
    seed: int,
) -> HeadBundle:
    """The same heads with every threshold re-fit on honest `reference` traces of one kind of traffic.

    Calibration on other domains does not transfer reliably: checkpoints calibrated to the same rate
    on the validation domains landed at 0.8–2.7% on the held-out ones (docs/evaluation.md). A deployment
    calibrates on honest traces of its own kind of task that the auditor produced itself — never on
    the provider's traffic, whose honesty is the question. Unlike training, every trace counts (short
    ones are part of the honest tail) and the whole exposure plan is followed, as in a real audit."""
    if not reference:
        raise ModelError("calibration: no reference traces")
    if not 0 < target_fpr < 1:
        raise ModelError(f"calibration: target false-positive rate {target_fpr} is not in (0, 1)")
    samples = collect_samples(
        reference,
        AttackContext(tokenizer, reference, block_size),
        embedder,
        policy,
        seed=seed,
        attacked_per_trace=0,
        block_size=block_size,
        max_blocks=sys.maxsize,
        min_tokens=2,
        desc="reference traces",
    )
    honest = [(s, block_features(s.revealed, bundle, tokenizer)) for s in samples]
    calibration = calibrate([(s.plan, e) for s, e in honest], bundle, tokenizer, target_fpr=target_fpr)
    source = {"traces": len(samples), "domains": sorted({t.domain for t in reference}), "seed": seed}
    return replace(
        bundle, calibration=calibration, metrics={**bundle.metrics, "reference_calibration": source}
    )


# --- the whole pipeline -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    block_size: int = DEFAULT_BLOCK_SIZE
    heads_traces: int = 500
    stack_traces: int = 300
    validation_traces: int = 350
    attacked_per_trace: int = 2
    max_blocks: int = 12
    head_epochs: int = 20
    deepset_epochs: int = 40
    target_fpr: float = 0.01
    # The attack families the heads and the DeepSet see; leaving one out measures transfer to it.
    attacks: tuple[str, ...] = CONTENT_ATTACKS


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
    """Fit heads A and B, the DeepSet, calibrate, and save the checkpoint (see the module docstring)."""
    policy = ExposurePolicy()
    heads_part = [t for t in train if stable_fraction("stack:" + t.question, config.seed) >= 0.35]
    stack_part = [t for t in train if stable_fraction("stack:" + t.question, config.seed) < 0.35]
    heads_traces = _subsample(heads_part, config.heads_traces, config.seed, "heads")
    stack_traces = _subsample(stack_part, config.stack_traces, config.seed, "stack")
    val_traces = _subsample(validation, config.validation_traces, config.seed, "validation")
    log(f"traces: {len(heads_traces)} heads, {len(stack_traces)} stacking, {len(val_traces)} validation")

    def save_cache() -> None:
        # Keep the embeddings paid for so far even if a later stage fails.
        if isinstance(embedder, CachedEmbedder):
            embedder.save()

    def collect(traces: Sequence[Trace], pool: Sequence[Trace], desc: str) -> list[Sample]:
        ctx = AttackContext(tokenizer, pool, config.block_size)
        return collect_samples(
            traces,
            ctx,
            embedder,
            policy,
            seed=config.seed,
            attacked_per_trace=config.attacked_per_trace,
            attacks=config.attacks,
            block_size=config.block_size,
            max_blocks=config.max_blocks,
            desc=desc,
        )

    heads_samples = collect(heads_traces, heads_part, "heads data")
    save_cache()
    stack_samples = collect(stack_traces, stack_part, "stacking data")
    save_cache()
    val_samples = collect(val_traces, validation, "validation data")
    chosen = {t.id for t in val_traces}
    # Calibration needs the tail of the honest distribution: every validation trace, honest.
    calibration_extra = collect_samples(
        [t for t in validation if t.id not in chosen],
        AttackContext(tokenizer, validation, config.block_size),
        embedder,
        policy,
        seed=config.seed,
        attacked_per_trace=0,
        block_size=config.block_size,
        max_blocks=config.max_blocks,
        desc="calibration data",
    )
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

    ones = np.ones(len(FEATURE_NAMES), dtype=np.float32)
    bundle = HeadBundle(
        embedder.embd_id,
        head_a,
        head_b,
        head_c,
        DeepSet(len(FEATURE_NAMES)),
        FEATURE_NAMES,
        ones * 0,
        ones,
        {},
        {},
    )
    stack_evidence = [block_features(s.revealed, bundle, tokenizer) for s in stack_samples]
    rows = np.concatenate([e.features for e in stack_evidence])
    bundle.feature_mean = rows.mean(0).astype(np.float32)
    bundle.feature_std = np.maximum(rows.std(0), 1e-3).astype(np.float32)
    sets, labels = [], []
    for sample, evidence in zip(stack_samples, stack_evidence, strict=True):
        # An inflated trace whose revealed blocks hold no injected token looks honest by construction, and
        # one at IR 0.1 shows one or two injected blocks at most; training on them as "inflated" would
        # mostly teach the verifier to distrust the odd block of an honest trace.
        for prefix, injected in zip(
            prefix_sets(sample.plan, evidence, bundle, tokenizer), prefix_injected(sample), strict=True
        ):
            if sample.attack == "honest" or (injected and sample.ir >= DEEPSET_MIN_IR):
                sets.append(prefix.features)
                labels.append(1.0 if sample.attack == "honest" else 0.0)
    bundle.deepset = _fit_deepset(
        sets, labels, bundle.feature_mean, bundle.feature_std, seed=config.seed, epochs=config.deepset_epochs
    )
    bundle.__post_init__()

    val_evidence = [block_features(s.revealed, bundle, tokenizer) for s in val_samples]
    honest = [(s, e) for s, e in zip(val_samples, val_evidence, strict=True) if s.attack == "honest"]
    honest += [(s, block_features(s.revealed, bundle, tokenizer)) for s in calibration_extra]
    bundle.calibration = calibrate(
        [(sample.plan, evidence) for sample, evidence in honest],
        bundle,
        tokenizer,
        target_fpr=config.target_fpr,
    )
    bundle.metrics = validation_metrics(val_samples, val_evidence, bundle, tokenizer)
    bundle.metrics.update(
        {
            "config": config.__dict__,
            "train_traces": {
                "heads": len(heads_traces),
                "stacking": len(stack_traces),
                "validation": len(val_traces),
                "calibration_honest": len(honest),
            },
            "examples": {
                "tokens_to_block": len(tl),
                "block_to_answer": len(bl),
                "block_to_trace": len(cl),
                "deepset_sets": len(sets),
            },
            "final_loss": {
                "tokens_to_block": loss_a[-1],
                "block_to_answer": loss_b[-1],
                "block_to_trace": loss_c[-1],
            },
        }
    )
    target = out or WEIGHTS_DIR / CHECKPOINT_NAME
    bundle.save(target)
    log(f"saved {target} ({target.stat().st_size / 1e6:.2f} MB)")
    return bundle


def validation_metrics(
    samples: Sequence[Sample], evidence: Sequence[Evidence], bundle: HeadBundle, tokenizer: Tokenizer
) -> dict[str, Any]:
    """Held-out-question AUCs of each head and verifier, and the per-attack detection at the full plan."""
    rng = random.Random(1)
    ta, tb, tl = token_pairs(samples, rng)
    ba, bb, bl = block_pairs(samples, rng)
    ca, cb, cl = context_pairs(samples)
    metrics: dict[str, Any] = {
        "auc_tokens_to_block": auc(bundle.pair_logits(bundle.tokens_to_block, ta, tb).tolist(), tl.tolist()),
        "auc_block_to_answer": auc(bundle.pair_logits(bundle.block_to_answer, ba, bb).tolist(), bl.tolist()),
        "auc_block_to_trace": auc(bundle.pair_logits(bundle.block_to_trace, ca, cb).tolist(), cl.tolist()),
    }
    labels = [1.0 if s.attack == "honest" else 0.0 for s in samples]
    for kind in ("deepset", "rule"):
        scores = [
            deepset_benign_probability(e, bundle)
            if kind == "deepset"
            else rule_benign_probability(e, bundle.calibration)
            for e in evidence
        ]
        metrics[f"auc_{kind}"] = auc(scores, labels)
        per_attack: dict[str, list[bool]] = {}
        for sample, score in zip(samples, scores, strict=True):
            per_attack.setdefault(sample.attack, []).append(score < bundle.calibration[f"{kind}_fail"])
        metrics[f"flag_rate_{kind}"] = {a: float(np.mean(v)) for a, v in sorted(per_attack.items())}
    return metrics


def write_model_card(bundle: HeadBundle, path: Path, held_out_domains: Sequence[str]) -> None:
    """MODEL_CARD.md: what the shipped heads were trained on, how, and how well they did."""
    m = bundle.metrics
    config = m.get("config", {})
    rates = m.get("flag_rate_deepset", {})
    calibration = bundle.calibration
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
        "- **DeepSet verifier** (check 8): ρ(mean φ, max φ) over per-block evidence vectors"
        f" ({', '.join(bundle.feature_names)}) → P(benign).",
        f"- Embedding model: `{bundle.embd_id}` (frozen). Loading these heads for another embd_id is refused.",
        "",
        "## Data and split",
        "",
        "- Source: `../shared/data/traces` (see its README for provenance and licences).",
        f"- Test: the whole held-out domains {', '.join(held_out_domains)} — never seen in training.",
        "- The rest is split by question (20% of questions → validation), and 15% of models are dropped from",
        "  training so validation also sees unseen models. Training questions are split again by question:",
        "  65% fit the pair heads, 35% fit the DeepSet on the heads' out-of-sample outputs.",
        f"- Traces used (subsampled by question for CPU time): {m.get('train_traces')}; seed {config.get('seed')}.",
        f"- Every trace contributes its honest version and {config.get('attacked_per_trace')} versions inflated by a"
        f" random content attack at IR ∈ {list(TRAIN_IRS)}; only what the exposure plan reveals (≤"
        f" {config.get('max_blocks')} blocks, block size {config.get('block_size')}) is embedded.",
        f"- Examples: {m.get('examples')}.",
        "",
        "## Calibration (validation, honest traces, all rounds of progressive exposure)",
        "",
        f"Target false-positive rate {calibration.get('target_fpr')}: the duplicate and tokenization checks at ≤"
        " target/8 each, the verifier at ≤ 3/4 target.",
        "",
        "| threshold | value |",
        "|---|---:|",
        *[f"| {k} | {v:.4g} |" for k, v in sorted(calibration.items())],
        "",
        "## Validation metrics (held-out questions and models of the training domains)",
        "",
        f"- AUC tokens-to-block: {m.get('auc_tokens_to_block', float('nan')):.3f}",
        f"- AUC block-to-answer: {m.get('auc_block_to_answer', float('nan')):.3f}",
        f"- AUC block-to-trace: {m.get('auc_block_to_trace', float('nan')):.3f}",
        f"- AUC DeepSet (honest vs inflated trace, full plan): {m.get('auc_deepset', float('nan')):.3f}",
        f"- AUC rule verifier: {m.get('auc_rule', float('nan')):.3f}",
        "- Share of validation samples the DeepSet flags at its calibrated threshold, per attack (IR mixed):",
        "",
        "| attack | flagged |",
        "|---|---:|",
        *[f"| {a} | {r:.1%} |" for a, r in rates.items()],
        "",
        "## Limits",
        "",
        "- The heads are trained on this project's attack generators; an attacker with a different generator",
        "  may score differently. The held-out-domain evaluation (docs/evaluation.md) measures transfer to",
        "  unseen domains, not to unseen attack families.",
        "- The medical domain is GPT-4o-written o1-style text, not a native reasoning model.",
        "",
    ]
    path.write_text("\n".join(lines))
