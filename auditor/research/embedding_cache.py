"""An on-disk cache of Embd outputs keyed by content hash, for training and evaluation (DESIGN §6).

Embedding blocks is the dominant cost of the evaluation on a CPU, and the same block and token texts
recur across attacks, inflation ratios and runs. `CachedEmbedder` is the shared `Embedder` (DESIGN §3,
"Embedding model Embd") with every text looked up by BLAKE3(text) first; new embeddings are computed by
the real model and stored as float16. Every value returned — fresh or cached — goes through the same
float16 round trip, so a commitment built now and a verification run later see identical codes.

`PlannedEmbedder` serves one commitment in the evaluation: it computes real embeddings only for the
blocks, tokens and answer an exposure plan will ever reveal and a zero placeholder for the rest. The challenge is
drawn independently of the content, and only revealed leaves reach any check, so every verification
outcome is exactly what the full commitment would give — at a fraction of the cost.
"""

from collections.abc import Collection, Sequence
from pathlib import Path

import blake3
import numpy as np

from auditor.protocol.fingerprint import (
    EMBED_DIM,
    Embedder,
    EmbeddingModel,
    FloatArray,
    block_texts,
    decode_token,
)

KEY_BYTES = 16


def text_key(text: str) -> bytes:
    return blake3.blake3(text.encode("utf-8", errors="surrogatepass")).digest()[:KEY_BYTES]


class CachedEmbedder(Embedder):
    """The real Embd behind a content-addressed float16 cache in `cache_dir`."""

    def __init__(self, cache_dir: str | Path, device: str | None = None, batch_size: int = 128) -> None:
        super().__init__(device=device, batch_size=batch_size)
        self.cache_dir = Path(cache_dir)
        self.path = self.cache_dir / f"embeddings-{self.embd_id.replace('@', '-')}.npz"
        self._store: dict[bytes, np.ndarray] = {}
        self._dirty = False
        if self.path.is_file():
            with np.load(self.path, allow_pickle=False) as data:
                keys = data["keys"]
                vectors = data["vectors"]
            self._store = {bytes(k): v for k, v in zip(keys, vectors, strict=True)}

    def embed_texts(self, texts: Sequence[str]) -> FloatArray:
        if not texts:
            return np.zeros((0, EMBED_DIM), dtype=np.float32)
        keys = [text_key(t) for t in texts]
        missing: dict[bytes, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if key not in self._store and key not in missing:
                missing[key] = text
        if missing:
            fresh = super().embed_texts(list(missing.values())).astype(np.float16)
            self._store.update(zip(missing, fresh, strict=True))
            self._dirty = True
        return np.stack([self._store[k] for k in keys]).astype(np.float32)

    def save(self) -> None:
        """Write the cache atomically (a crashed run never leaves a half-written file behind)."""
        if not self._dirty:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        keys = np.array([np.frombuffer(k, dtype=np.uint8) for k in self._store], dtype=np.uint8)
        vectors = np.stack(list(self._store.values())).astype(np.float16)
        partial = self.path.with_suffix(".partial.npz")
        with partial.open("wb") as fh:
            np.savez(fh, keys=keys.reshape(-1, KEY_BYTES), vectors=vectors)
        partial.replace(self.path)
        self._dirty = False


class PlannedEmbedder:
    """Embd for one commitment whose revealable texts are known in advance (see the module docstring).

    Planning is by *text*: whatever path the commitment takes through the embedder (blocks and answer
    in one batch, tokens one by one), a planned text gets its real embedding and any other text a zero
    placeholder. A text equal to a planned one is embedded for real too, which is what it would be."""

    def __init__(self, base: EmbeddingModel, texts: Collection[str]) -> None:
        self.base = base
        self.wanted = frozenset(texts)

    @property
    def embd_id(self) -> str:
        return self.base.embd_id

    @classmethod
    def for_plan(
        cls,
        base: EmbeddingModel,
        tokens: Sequence[bytes],
        answer: str,
        block_size: int,
        blocks: Collection[int],
        token_positions: Collection[int],
    ) -> "PlannedEmbedder":
        texts = block_texts(tokens, block_size)
        wanted = {texts[j] for j in blocks if j < len(texts)} | {answer}
        wanted |= {decode_token(tokens[i]) for i in token_positions if i < len(tokens)}
        return cls(base, wanted)

    def embed_texts(self, texts: Sequence[str]) -> FloatArray:
        out = np.zeros((len(texts), EMBED_DIM), dtype=np.float32)
        rows = [k for k, text in enumerate(texts) if text in self.wanted]
        if rows:
            out[rows] = self.base.embed_texts([texts[k] for k in rows])
        return out

    def embed_tokens(self, tokens: Sequence[bytes]) -> FloatArray:
        return self.embed_texts([decode_token(t) for t in tokens])
