"""`coin demo` end to end: real traces through the REST API on the embedded default (SQLite, tasks
in-process); honest providers pass and every cheating behaviour fails."""

from pathlib import Path

import pytest

from api.demo.run import run_demo
from auditor.protocol.fingerprint import Embedder
from tests.conftest import TRACES_DIR


def test_demo_audits_every_behaviour_through_the_api(
    tmp_path: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.settings import get_settings

    # the demo configures the process through the environment; restore it for the tests after this one
    monkeypatch.delenv("COIN_BROKER_URL", raising=False)
    monkeypatch.setenv("COIN_DATABASE_URL", "unset-by-the-demo")
    try:
        outcomes = run_demo(TRACES_DIR, per_behaviour=1, serve=False, database=tmp_path / "demo.sqlite3")
    finally:
        get_settings.cache_clear()
    assert outcomes == {
        "honest": ["pass"],
        "over-claim 1.5x": ["fail"],
        "coin padding": ["fail"],
        "forged opening": ["fail"],
        "copied 2x": ["fail"],
    }
