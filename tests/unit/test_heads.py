"""Heads, checkpoints, calibration helpers and the exposure plan (no embedding model needed)."""

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from auditor.protocol.errors import ChallengeError, ModelError
from auditor.research.training import auc
from auditor.semantic.calibration import PLANNED_BANDS, threshold_below
from auditor.semantic.checks import FEATURE_NAMES
from auditor.semantic.exposure import ExposurePolicy, plan_exposure
from auditor.semantic.heads import (
    CHECKPOINT_NAME,
    WEIGHTS_DIR,
    HeadBundle,
    PairHead,
    VerifierBand,
    checkpoint_id_of,
    load_heads,
)


def small_bundle(embd_id: str = "all-MiniLM-L6-v2@0000000000000000") -> HeadBundle:
    torch.manual_seed(0)
    n = len(FEATURE_NAMES)
    return HeadBundle(
        embd_id=embd_id,
        tokens_to_block=PairHead(),
        block_to_answer=PairHead(),
        block_to_trace=PairHead(),
        block_model=torch.nn.Linear(n, 1),
        feature_names=FEATURE_NAMES,
        feature_scale=np.ones(n, dtype=np.float32),
        null_scores=np.sort(np.random.default_rng(0).normal(size=100)),
        null_outliers=np.sort(np.random.default_rng(1).exponential(size=100)),
        verifier_bands=(VerifierBand(10, 1e-3, 0.2), VerifierBand(2**31, 1e-4, 0.1)),
        calibration={"tokens_to_block": -1.0, "block_to_answer": -1.0},
        metrics={"note": "test"},
    )


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    bundle = small_bundle()
    path = tmp_path / "heads.pt"
    bundle.save(path)
    loaded = load_heads(path, embd_id=bundle.embd_id)
    x = np.random.default_rng(0).integers(-127, 128, size=(5, 384))
    y = np.random.default_rng(1).integers(-127, 128, size=(5, 384))
    assert np.allclose(
        loaded.pair_logits(loaded.tokens_to_block, x, y), bundle.pair_logits(bundle.tokens_to_block, x, y)
    )
    assert loaded.calibration == bundle.calibration and loaded.feature_names == FEATURE_NAMES
    features = np.random.default_rng(2).normal(size=(4, len(FEATURE_NAMES))).astype(np.float32)
    assert np.allclose(loaded.block_scores(features), bundle.block_scores(features))
    assert np.array_equal(loaded.null_scores, bundle.null_scores)
    assert np.array_equal(loaded.null_outliers, bundle.null_outliers)
    assert loaded.verifier_bands == bundle.verifier_bands
    assert loaded.verifier_band(10).threshold == 1e-3 and loaded.verifier_band(11).threshold == 1e-4
    # The id names the file's bytes: what a verdict records as the checkpoint that decided it.
    assert loaded.checkpoint_id == bundle.checkpoint_id == checkpoint_id_of(path)
    assert loaded.checkpoint_id.startswith("heads@") and len(loaded.checkpoint_id) == len("heads@") + 16


def test_missing_checkpoint_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="missing"):
        load_heads(tmp_path / "nothing.pt")


def test_checkpoint_for_another_embedding_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "heads.pt"
    small_bundle("all-MiniLM-L6-v2@ffffffffffffffff").save(path)
    with pytest.raises(ModelError, match="trained for embd_id"):
        load_heads(path, embd_id="all-MiniLM-L6-v2@0000000000000000")


def test_corrupt_or_foreign_checkpoint_is_a_model_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="unreadable"):
        load_heads(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"format": "something-else"}, foreign)
    with pytest.raises(ModelError, match="not a coin-heads"):
        load_heads(foreign)


def test_checkpoint_with_wrong_shapes_is_a_model_error(tmp_path: Path) -> None:
    bundle = small_bundle()
    bundle.block_model = torch.nn.Linear(len(FEATURE_NAMES) + 3, 1)
    path = tmp_path / "heads.pt"
    bundle.save(path)
    with pytest.raises(ModelError, match="does not fit"):
        load_heads(path)


def test_packaged_checkpoint_loads_and_is_small() -> None:
    path = WEIGHTS_DIR / CHECKPOINT_NAME
    assert path.stat().st_size < 5_000_000
    bundle = load_heads()
    for key in (
        "tokens_to_block_alarm",
        "block_to_answer_alarm",
        "duplicate_cosine",
        "merge_rate",
        "verifier_alpha",
        "duplicates_alpha",
        "retokenization_alpha",
    ):
        assert key in bundle.calibration
    # The statistical checks together spend at most the promised honest suspect rate.
    spent = sum(bundle.calibration[f"{name}_alpha"] for name in ("verifier", "duplicates", "retokenization"))
    assert spent <= bundle.calibration["target_suspect_rate"]
    # Enough honest blocks that a Bonferroni test over a long trace's plan can reach its alpha.
    assert len(bundle.null_scores) >= 10_000 and np.all(np.diff(bundle.null_scores) >= 0)
    assert bundle.metrics["domains"] == ["general_reasoning", "math", "medical", "process_mining"]
    # The shipped fit is calibrated with the domain-shift margin the leave-one-domain-out run evaluated.
    assert bundle.calibration["verifier_shift_margin"] >= 1.0
    assert [b.max_planned for b in bundle.verifier_bands] == list(PLANNED_BANDS)
    assert all(0 < b.threshold <= b.pass_level <= 1 for b in bundle.verifier_bands)


def test_auc_and_thresholds() -> None:
    assert auc([0.9, 0.8, 0.1], [1, 1, 0]) == 1.0
    assert auc([0.5, 0.5], [1, 0]) == 0.5
    values = list(np.linspace(0, 1, 1001))
    assert threshold_below(values, 0.01) == pytest.approx(0.01)
    # Too few values to resolve the rate: just under the minimum, so no value fails ...
    assert threshold_below([0.4, 0.3], 0.01) == pytest.approx(0.285)
    # ... and a threshold on tiny probabilities stays positive, so the check can still fire.
    assert 0 < threshold_below([1e-12, 0.5], 0.01) < 1e-12


@pytest.mark.parametrize("size", [20, 200, 1000, 5000])
def test_exposure_plan_respects_the_budget(size: int) -> None:
    policy = ExposurePolicy()
    plan = plan_exposure(size, 16, policy, random.Random(size))
    blocks = -(-size // 16)
    assert len(plan.blocks) == policy.block_budget(blocks) <= max(1, blocks // 4)
    assert len(set(plan.blocks)) == len(plan.blocks)
    assert plan.round_ends[-1] == len(plan.blocks) and list(plan.round_ends) == sorted(set(plan.round_ends))
    last = plan.challenge(plan.rounds - 1)
    assert len(last.block_token_indices) == max(len(plan.blocks), math.floor(0.02 * size))
    assert 0 in last.count_indices and size - 1 in last.count_indices
    for run, block in zip(plan.runs, plan.blocks, strict=True):
        assert all(i // 16 == block for i in run) and list(run) == list(range(run[0], run[0] + len(run)))
    # Cumulative rounds: each round re-asks every block of the earlier ones.
    for r in range(1, plan.rounds):
        assert set(plan.challenge(r - 1).block_indices) < set(plan.challenge(r).block_indices)


def test_long_traces_reach_a_conclusive_sample_in_the_first_round() -> None:
    policy = ExposurePolicy()
    plan = plan_exposure(5000, 16, policy, random.Random(0))
    assert plan.round_ends[0] == policy.confident_blocks == 11


def test_exposure_policy_rejects_nonsense() -> None:
    with pytest.raises(ChallengeError):
        ExposurePolicy(max_block_fraction=0)
    with pytest.raises(ChallengeError):
        ExposurePolicy(rounds=0)
    with pytest.raises(ChallengeError):
        plan_exposure(100, 16, ExposurePolicy(), random.Random(0)).challenge(7)
