"""The matching heads and the verifier's block model, and their checkpoint (DESIGN §3, checks 4, 5, 8).

- Tokens-to-Block head (CoIn's model A): logit that a revealed token belongs to its revealed block,
  from (q(t_i), q(e_j)).
- Block-to-Answer head (CoIn's model B): logit that a revealed block is reasoning for this answer,
  from (q(e_j), q(Embd(answer))).
- Block-to-Trace head (ours): logit that a revealed block belongs with the *other* revealed blocks of
  the same trace, from (q(e_j), mean of the other revealed codes) — injected text stands out from the
  genuine reasoning around it even when it fits the answer.
- Block model (check 8): a logistic regression from a block's evidence, measured against the other
  revealed blocks of the same trace (`auditor.semantic.checks`), to the logit that the block is
  injected; the checkpoint keeps the scores of honest calibration blocks (the block model's, and the
  unsupervised outlier score's), the null distributions the verifier's p-values come from.

All heads read the frozen Embd embeddings as their int8 codes / 127, exactly what a verifier sees. A
checkpoint records the `embd_id` it was trained for: heads trained on another embedding model are
meaningless, so loading one is a `ModelError`, as is a missing or malformed file. `checkpoint_id`
(BLAKE3 of the file) names the checkpoint, and with it the calibration, that decided a verdict.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from auditor.protocol.errors import ModelError
from auditor.protocol.fingerprint import EMBED_DIM

WEIGHTS_DIR = Path(__file__).parent / "weights"
CHECKPOINT_NAME = "heads.pt"
CHECKPOINT_FORMAT = "coin-heads/2"


class PairHead(nn.Module):
    """An MLP on [x, y, x*y, |x-y|] of two embeddings: the usual matching-head interaction features."""

    def __init__(self, dim: int = EMBED_DIM, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(4 * dim, hidden),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(hidden, hidden // 2),
            nn.ReLU(),
            nn.Linear(hidden // 2, 1),
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(torch.cat([x, y, x * y, (x - y).abs()], dim=-1)).squeeze(-1)
        return out


@dataclass(frozen=True)
class VerifierBand:
    """The verifier's decision for audits whose exposure plan reveals at most `max_planned` blocks: the
    audit is `suspect` when its most unusual block's p-value is below `threshold`, and a clean sample may
    stop early when it is at least `pass_level`."""

    max_planned: int
    threshold: float
    pass_level: float


def band_for(bands: Sequence[VerifierBand], planned: int) -> VerifierBand:
    """The band of an audit whose plan reveals `planned` blocks (the last band has no upper end)."""
    return next((band for band in bands if planned <= band.max_planned), bands[-1])


@dataclass
class HeadBundle:
    """Everything the semantic checks load: the three pair heads, the verifier's block model, its
    feature scale and null scores, the calibration and the training metrics."""

    embd_id: str
    tokens_to_block: PairHead
    block_to_answer: PairHead
    block_to_trace: PairHead
    block_model: nn.Linear
    feature_names: tuple[str, ...]
    feature_scale: npt.NDArray[np.float32]
    null_scores: npt.NDArray[np.float64]  # honest calibration blocks' block-model scores, ascending
    null_outliers: npt.NDArray[np.float64]  # and their outlier scores, ascending
    verifier_bands: tuple["VerifierBand", ...]  # by the number of blocks an audit's plan reveals
    calibration: dict[str, float]
    metrics: dict[str, Any]
    checkpoint_id: str = "unsaved"

    def __post_init__(self) -> None:
        for module in (self.tokens_to_block, self.block_to_answer, self.block_to_trace, self.block_model):
            module.eval()

    def pair_logits(
        self, head: PairHead, x: npt.NDArray[Any], y: npt.NDArray[Any]
    ) -> npt.NDArray[np.float32]:
        """Logits of a pair head on int8 codes (or floats in code units), row by row."""
        if len(x) == 0:
            return np.zeros(0, dtype=np.float32)
        with torch.no_grad():
            tx = torch.from_numpy(np.asarray(x, dtype=np.float32) / 127.0)
            ty = torch.from_numpy(np.asarray(y, dtype=np.float32) / 127.0)
            logits: npt.NDArray[np.float32] = head(tx, ty).numpy().astype(np.float32)
            return logits

    def verifier_band(self, planned: int) -> VerifierBand:
        return band_for(self.verifier_bands, planned)

    def block_scores(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """The block model's logit that each block (a row of scaled features) is injected."""
        with torch.no_grad():
            x = torch.from_numpy(np.asarray(features, dtype=np.float32))
            scores: npt.NDArray[np.float64] = self.block_model(x).squeeze(-1).numpy().astype(np.float64)
            return scores

    def to_state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "embd_id": self.embd_id,
            "tokens_to_block": self.tokens_to_block.state_dict(),
            "block_to_answer": self.block_to_answer.state_dict(),
            "block_to_trace": self.block_to_trace.state_dict(),
            "block_model": self.block_model.state_dict(),
            "feature_names": list(self.feature_names),
            "feature_scale": self.feature_scale.tolist(),
            "null_scores": self.null_scores.tolist(),
            "null_outliers": self.null_outliers.tolist(),
            "verifier_bands": [[b.max_planned, b.threshold, b.pass_level] for b in self.verifier_bands],
            "calibration": self.calibration,
            "metrics": self.metrics,
        }

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.to_state(), path)
        self.checkpoint_id = checkpoint_id_of(path)


def checkpoint_id_of(path: Path) -> str:
    """`heads@` + the first 16 hex of the BLAKE3 of the checkpoint file."""
    return f"heads@{blake3.blake3(path.read_bytes()).hexdigest()[:16]}"


def load_heads(path: Path | None = None, *, embd_id: str | None = None) -> HeadBundle:
    """Load a checkpoint; `embd_id` (when given) must be the one the heads were trained for."""
    where = path or WEIGHTS_DIR / CHECKPOINT_NAME
    if not where.is_file():
        raise ModelError(f"head checkpoint {where} is missing; train it with `coin train-heads`")
    try:
        data = torch.load(where, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise ModelError(f"head checkpoint {where} is unreadable: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"head checkpoint {where} is not a {CHECKPOINT_FORMAT} checkpoint; retrain it")
    if embd_id is not None and data["embd_id"] != embd_id:
        raise ModelError(
            f"head checkpoint {where} was trained for embd_id {data['embd_id']!r}, not {embd_id!r}; "
            "retrain with `coin train-heads`"
        )
    names = tuple(data["feature_names"])
    try:
        tokens_to_block, block_to_answer, block_to_trace = PairHead(), PairHead(), PairHead()
        block_model = nn.Linear(len(names), 1)
        tokens_to_block.load_state_dict(data["tokens_to_block"])
        block_to_answer.load_state_dict(data["block_to_answer"])
        block_to_trace.load_state_dict(data["block_to_trace"])
        block_model.load_state_dict(data["block_model"])
    except (RuntimeError, KeyError) as exc:
        raise ModelError(f"head checkpoint {where} does not fit the head architecture: {exc}") from None
    return HeadBundle(
        embd_id=data["embd_id"],
        tokens_to_block=tokens_to_block,
        block_to_answer=block_to_answer,
        block_to_trace=block_to_trace,
        block_model=block_model,
        feature_names=names,
        feature_scale=np.asarray(data["feature_scale"], dtype=np.float32),
        null_scores=np.sort(np.asarray(data["null_scores"], dtype=np.float64)),
        null_outliers=np.sort(np.asarray(data["null_outliers"], dtype=np.float64)),
        verifier_bands=tuple(VerifierBand(int(m), float(t), float(p)) for m, t, p in data["verifier_bands"]),
        calibration={k: float(v) for k, v in data["calibration"].items()},
        metrics=dict(data["metrics"]),
        checkpoint_id=checkpoint_id_of(where),
    )
