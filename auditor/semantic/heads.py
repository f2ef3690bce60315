"""The matching heads and the learned verifier, and their checkpoint (DESIGN §3, checks 4, 5, 8).

- Tokens-to-Block head (CoIn's model A): logit that a revealed token belongs to its revealed block,
  from (q(t_i), q(e_j)).
- Block-to-Answer head (CoIn's model B): logit that a revealed block is reasoning for this answer,
  from (q(e_j), q(Embd(answer))).
- Block-to-Trace head (ours): logit that a revealed block belongs with the *other* revealed blocks of
  the same trace, from (q(e_j), mean of the other revealed codes) — injected text stands out from the
  genuine reasoning around it even when it fits the answer.
- DeepSet verifier: P(benign) from the *set* of per-block evidence vectors (permutation invariant, any
  number of revealed blocks): rho(mean phi(x), max phi(x)).

All heads read the frozen Embd embeddings as their int8 codes / 127, exactly what a verifier sees. A
checkpoint records the `embd_id` it was trained for: heads trained on another embedding model are
meaningless, so loading one is a `ModelError`, as is a missing or malformed file.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from auditor.protocol.errors import ModelError
from auditor.protocol.fingerprint import EMBED_DIM

WEIGHTS_DIR = Path(__file__).parent / "weights"
CHECKPOINT_NAME = "heads.pt"
CHECKPOINT_FORMAT = "coin-heads/1"


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


class DeepSet(nn.Module):
    """rho([mean_j phi(x_j), max_j phi(x_j)]) over a padded batch of sets with a validity mask."""

    def __init__(self, features: int, hidden: int = 64) -> None:
        super().__init__()
        self.phi = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.rho = nn.Sequential(nn.Linear(2 * hidden, 32), nn.ReLU(), nn.Linear(32, 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.phi(x)
        weights = mask.unsqueeze(-1).to(h.dtype)
        mean = (h * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        peak = h.masked_fill(weights == 0, float("-inf")).amax(1)
        out: torch.Tensor = self.rho(torch.cat([mean, peak], dim=-1)).squeeze(-1)
        return out


@dataclass
class HeadBundle:
    """Everything the semantic checks load: the three modules, the feature scaling and calibration."""

    embd_id: str
    tokens_to_block: PairHead
    block_to_answer: PairHead
    block_to_trace: PairHead
    deepset: DeepSet
    feature_names: tuple[str, ...]
    feature_mean: npt.NDArray[np.float32]
    feature_std: npt.NDArray[np.float32]
    calibration: dict[str, float]
    metrics: dict[str, Any]

    def __post_init__(self) -> None:
        for module in (self.tokens_to_block, self.block_to_answer, self.block_to_trace, self.deepset):
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

    def deepset_logit(self, features: npt.NDArray[np.float32]) -> float:
        """The DeepSet's logit of P(benign) for one set of per-block feature rows."""
        scaled = (features - self.feature_mean) / self.feature_std
        with torch.no_grad():
            x = torch.from_numpy(scaled.astype(np.float32)).unsqueeze(0)
            mask = torch.ones(1, x.shape[1], dtype=torch.bool)
            return float(self.deepset(x, mask)[0])

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "format": CHECKPOINT_FORMAT,
                "embd_id": self.embd_id,
                "tokens_to_block": self.tokens_to_block.state_dict(),
                "block_to_answer": self.block_to_answer.state_dict(),
                "block_to_trace": self.block_to_trace.state_dict(),
                "deepset": self.deepset.state_dict(),
                "feature_names": list(self.feature_names),
                "feature_mean": self.feature_mean.tolist(),
                "feature_std": self.feature_std.tolist(),
                "calibration": self.calibration,
                "metrics": self.metrics,
            },
            path,
        )


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
        raise ModelError(f"head checkpoint {where} is not a {CHECKPOINT_FORMAT} checkpoint")
    if embd_id is not None and data["embd_id"] != embd_id:
        raise ModelError(
            f"head checkpoint {where} was trained for embd_id {data['embd_id']!r}, not {embd_id!r}; "
            "retrain with `coin train-heads`"
        )
    names = tuple(data["feature_names"])
    try:
        tokens_to_block, block_to_answer, block_to_trace = PairHead(), PairHead(), PairHead()
        deepset = DeepSet(len(names))
        tokens_to_block.load_state_dict(data["tokens_to_block"])
        block_to_answer.load_state_dict(data["block_to_answer"])
        block_to_trace.load_state_dict(data["block_to_trace"])
        deepset.load_state_dict(data["deepset"])
    except (RuntimeError, KeyError) as exc:
        raise ModelError(f"head checkpoint {where} does not fit the head architecture: {exc}") from None
    return HeadBundle(
        embd_id=data["embd_id"],
        tokens_to_block=tokens_to_block,
        block_to_answer=block_to_answer,
        block_to_trace=block_to_trace,
        deepset=deepset,
        feature_names=names,
        feature_mean=np.asarray(data["feature_mean"], dtype=np.float32),
        feature_std=np.asarray(data["feature_std"], dtype=np.float32),
        calibration={k: float(v) for k, v in data["calibration"].items()},
        metrics=dict(data["metrics"]),
    )
