"""Integration fixtures: the real PostgreSQL and Redis of this machine, and a real Celery worker process.

A test that needs a service FAILS when the service is down and CI is set, and is skipped otherwise.
The servers are shared, so the session creates what it uses and removes only that: a database named
for this run (migrated once with alembic, dropped at the end) and a Redis key prefix of its own for
the broker (its keys deleted at the end). Each test starts from empty tables (TRUNCATE).
"""

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.app import create_app
from service.context import database_of
from service.database import Database
from service.migrate import upgrade_database
from service.settings import Settings
from tests.integration.support import (
    ADMIN,
    DATABASE_URL,
    PG_HOST,
    PG_PORT,
    PG_USER,
    REDIS_URL,
    TEST_DATABASE,
    TEST_ENV,
    CommittedRequest,
    MakeProvider,
    MakeRequest,
    ProviderAccount,
    WorkerProcess,
    delete_broker_keys,
    shortest_traces,
    truncate_all,
)

# The resilience suite runs from bench/resilience.py (`make resilience`, and its short form in `make
# test`), which sets COIN_RESILIENCE_TRIALS; a plain pytest run does not collect it.
collect_ignore = [] if "COIN_RESILIENCE_TRIALS" in os.environ else ["resilience"]


def _service_missing(what: str, exc: Exception) -> None:
    message = f"{what} is not reachable ({exc})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI is set, so integration tests must not be skipped")
    pytest.skip(message)


def _admin_connection() -> psycopg.Connection:
    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """This session's migrated database, dropped at the end of the session."""
    try:
        admin = _admin_connection()
    except psycopg.OperationalError as exc:
        _service_missing("PostgreSQL at 127.0.0.1:5432", exc)
    with admin:
        admin.execute(f"CREATE DATABASE {TEST_DATABASE}")
    try:
        upgrade_database(DATABASE_URL)
        yield DATABASE_URL
    finally:
        with _admin_connection() as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {TEST_DATABASE} WITH (FORCE)")


@pytest.fixture
def scratch_postgres(postgres: str) -> Iterator[str]:
    """An empty database of its own (not migrated) on the same server, dropped after the test: for
    tests that migrate up and down, which the session's database, shared with the worker, must not."""
    name = f"{TEST_DATABASE}_scratch_{uuid.uuid4().hex[:8]}"
    with _admin_connection() as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with _admin_connection() as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def migration_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database to migrate up and down, once on each backend the service runs on: a SQLite
    file, and a scratch PostgreSQL database (`scratch_postgres`)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'coin.sqlite3'}"
    url: str = request.getfixturevalue("scratch_postgres")
    return url


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    """Redis, for this session's broker keys (deleted at the end of the session)."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        _service_missing("Redis at 127.0.0.1:6379", exc)
    try:
        yield client
    finally:
        delete_broker_keys(client)
        client.close()


@pytest.fixture(scope="session")
def settings(postgres: str, redis_client: redis.Redis) -> Settings:
    values: dict[str, Any] = {key.removeprefix("COIN_").lower(): value for key, value in TEST_ENV.items()}
    return Settings(**values)


@pytest.fixture(scope="session")
def database(settings: Settings) -> Iterator[Database]:
    db = database_of(settings)  # with the chain keys: tests append events and verify the chain
    yield db
    db.dispose()


@pytest.fixture
def clean_db(database: Database) -> Database:
    truncate_all(database)
    return database


@pytest.fixture(scope="session")
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture(scope="session")
def running_app(app: FastAPI) -> Iterator[TestClient]:
    """The app with its lifespan running (its chain writer thread included), for the whole session."""
    # raise_server_exceptions=False: a 500 must show up as a 500, never as a test-side exception.
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def client(running_app: TestClient, clean_db: Database) -> TestClient:
    return running_app


@pytest.fixture
def make_provider(client: TestClient) -> MakeProvider:
    def make(name: str | None = None, **extra: Any) -> ProviderAccount:
        name = name or f"provider-{uuid.uuid4().hex[:8]}"
        response = client.post("/v1/providers", json={"name": name, **extra}, headers=ADMIN)
        assert response.status_code == 201, response.text
        body = response.json()
        return ProviderAccount(body["id"], name, body["api_key"])

    return make


@pytest.fixture(scope="session")
def make_request(embedder: Any) -> MakeRequest:
    """Commit a real short trace with the provider SDK (`auditor.protocol.commitment.commit`) and build its report."""
    from auditor.protocol.commitment import commit, new_secret

    traces = shortest_traces()

    def make(index: int = 0, request_id: str | None = None, joined: int = 1) -> CommittedRequest:
        """Trace `index` (its reasoning followed by that of the next `joined - 1` traces: a longer one
        whose exposure plan has several rounds)."""
        trace = traces[index % len(traces)]
        reasoning = "\n\n".join(traces[(index + k) % len(traces)]["reasoning"] for k in range(joined))
        public, openings = commit(reasoning, trace["answer"], new_secret(), block_size=16, embedder=embedder)
        size = public.commitment.size
        report = {
            "request_id": request_id or f"req-{uuid.uuid4().hex}",
            "model": trace["model"],
            "usage": {
                "input_tokens": 40,
                "output_tokens": size + 25,
                "reasoning_tokens": size,
                "raw": {"prompt_tokens": 40, "completion_tokens": size + 25},
            },
            **public.to_json(),
        }
        return CommittedRequest(report, openings)

    return make


@pytest.fixture(scope="session")
def worker_process(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(tmp_path_factory.mktemp("celery"))
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def worker(worker_process: WorkerProcess) -> WorkerProcess:
    """The session's worker, restarted if an earlier test stopped or killed it."""
    if not worker_process.alive:
        worker_process.start()
    return worker_process
