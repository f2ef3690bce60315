"""The resilience suite (`make resilience`; `make test` runs its short form): faults injected into the
real stack at random moments — a uvicorn API and a Celery worker as subprocesses, PostgreSQL and Redis —
each trial ending with the integrity check. Collected only when COIN_RESILIENCE_TRIALS is set (by bench/resilience.py;
see tests/integration/conftest.py), so that a plain `pytest tests/integration` stays short. Figures go to COIN_RESILIENCE_FIGURES (JSON).

The worker and the API run with the production timings of recovery (stale after 15 s, sweep every 5 s,
heartbeat every 5 s): the recovery times measured are the ones an operator gets.
"""

import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.database import Database
from service.settings import Settings
from tests.integration.resilience.support import ApiServer, Figures
from tests.integration.support import CommittedRequest, MakeRequest, WorkerProcess

# The defaults of service/settings.py for recovery, instead of the integration suite's shortened ones.
PRODUCTION_TIMINGS = {
    "COIN_STALE_AFTER_SECONDS": "15",
    "COIN_SWEEP_INTERVAL_SECONDS": "5",
    "COIN_HEARTBEAT_INTERVAL_SECONDS": "5",
}


@pytest.fixture(scope="session")
def trials() -> int:
    return int(os.environ["COIN_RESILIENCE_TRIALS"])


@pytest.fixture(scope="session")
def rng() -> random.Random:
    seed = int(os.environ.get("COIN_RESILIENCE_SEED", time.time_ns() % 2**32))
    print(f"resilience seed: {seed}")
    return random.Random(seed)


@pytest.fixture(scope="session")
def figures() -> Iterator[Figures]:
    collected = Figures()
    yield collected
    path = os.environ.get("COIN_RESILIENCE_FIGURES")
    if path:
        Path(path).write_text(json.dumps(collected.summary()))


@pytest.fixture(scope="session")
def api(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory, figures: Figures
) -> Iterator[ApiServer]:
    server = ApiServer(tmp_path_factory.mktemp("api"), figures, PRODUCTION_TIMINGS)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def production_worker(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(tmp_path_factory.mktemp("celery"), nice=10)
    worker.start(**PRODUCTION_TIMINGS)
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def committed(make_request: MakeRequest) -> list[CommittedRequest]:
    """Traces committed once; each audit submits one under a fresh request id."""
    return [make_request(i) for i in range(4)]


@pytest.fixture
def http(api: ApiServer, clean_db: Database) -> Iterator[httpx.Client]:
    with api.client() as client:
        yield client
