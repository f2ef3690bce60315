"""Fixtures shared by every test: the real traces beside the checkout and the embedding model."""

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parent.parent
TRACES_DIR = REPO_ROOT.parent / "shared" / "data" / "traces"


def read_traces(name: str, limit: int) -> list[dict[str, Any]]:
    """The first `limit` traces of one file of ../shared/data/traces."""
    path = TRACES_DIR / name
    if not path.is_file():
        pytest.fail(f"traces not found at {path}: the tests read ../shared/data/traces beside the checkout")
    out = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            out.append(json.loads(line))
            if len(out) == limit:
                break
    return out


@pytest.fixture(scope="session")
def short_traces() -> list[dict[str, Any]]:
    """Short real GSM8K traces (a few hundred tokens): fast to commit and verify."""
    return read_traces("thinkingllms_math_r1distill_qwq.jsonl", 6)


@pytest.fixture(scope="session")
def embedder() -> Iterator[Any]:
    import torch

    from auditor.protocol.fingerprint import get_embedder

    torch.set_num_threads(1)
    yield get_embedder("cpu")
