"""Helpers of the integration tests: service addresses, the test environment, the worker process."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from auditor.protocol.commitment import Openings
from service.audits.verdicts import proof_failures, statistical_flags, write_verdict
from service.context import ServiceContext
from service.database import Database
from service.models import Audit, AuditStatus, AuditTrigger, Base, Outcome, Report, Verdict, utcnow

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]
TRACES_DIR = REPO_ROOT / ".." / "shared" / "data" / "traces"
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
# PostgreSQL and Redis are shared with whatever else runs on the machine: each test session creates a
# database and a Redis key prefix of its own, and removes only those.
RUN_ID = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
TEST_DATABASE = f"coin_test_{RUN_ID}"
DATABASE_URL = f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{TEST_DATABASE}"
REDIS_URL = "redis://127.0.0.1:6379/0"
BROKER_KEY_PREFIX = f"coin-test-{RUN_ID}:"
ADMIN_TOKEN = "test-admin-token-0123456789"

# What the API in the test process and the worker subprocess share (the worker reads it from its env).
TEST_ENV = {
    "COIN_ENV": "test",
    "COIN_DATABASE_URL": DATABASE_URL,
    "COIN_BROKER_URL": REDIS_URL,
    "COIN_BROKER_KEY_PREFIX": BROKER_KEY_PREFIX,
    "COIN_SECRET_KEY": "test-secret-key-for-receipt-tokens",
    "COIN_SIGNING_KEY": "5e" * 32,
    "COIN_ADMIN_TOKEN": ADMIN_TOKEN,
    "COIN_CHAIN_KEY": "test-chain-key-that-the-database-never-holds",
    "COIN_CHALLENGE_DEADLINE_SECONDS": "120",
    "COIN_CHALLENGE_SEED": "integration-tests",  # reproducible draws: the semantic verdicts are stable
    "COIN_SWEEP_INTERVAL_SECONDS": "1",
    "COIN_EXPIRE_INTERVAL_SECONDS": "1",
    "COIN_STALE_AFTER_SECONDS": "4",
    "COIN_HEARTBEAT_INTERVAL_SECONDS": "1",
    # The suites fail authentication on purpose, all from one client address; tests of the limit build
    # an app of their own.
    "COIN_AUTH_FAILURES_PER_MINUTE": "100000",
    "COIN_BROKER_VISIBILITY_TIMEOUT_SECONDS": "60",
    "COIN_MAX_BODY_BYTES": str(4 * 1024 * 1024),
    # The worker's beat draws scheduled audits every 2 s, of reports received at least 1 s before.
    "COIN_SCHEDULE_INTERVAL_SECONDS": "2",
    "COIN_SCHEDULE_SETTLE_SECONDS": "1",
    # Webhooks are signed with this; a test that wants them gives its worker a COIN_WEBHOOK_URL.
    "COIN_WEBHOOK_SECRET": "test-webhook-secret-0123456789abcdef",
    "COIN_WEBHOOK_BACKOFF_SECONDS": "1",
    "COIN_WEBHOOK_MAX_ATTEMPTS": "3",
}


def delete_broker_keys(client: redis.Redis) -> int:
    """Delete every Redis key of this session's broker (what a flushed Redis would lose), and nothing
    else; returns how many there were."""
    keys = list(client.scan_iter(match=f"{BROKER_KEY_PREFIX}*", count=1000))
    return int(client.delete(*keys)) if keys else 0


def truncate_all(database: Database) -> None:
    """Empty every table. The running worker's periodic jobs may hold row locks that deadlock with
    TRUNCATE's table locks; PostgreSQL then aborts one side, and we simply try again."""
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    for attempt in range(10):
        try:
            with database.engine.begin() as connection:
                connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            return
        except OperationalError:
            if attempt == 9:
                raise
            time.sleep(0.2)


ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class ProviderAccount:
    id: str
    name: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.key)


# --- traces and the provider SDK -------------------------------------------------------------------


def shortest_traces(count: int = 8) -> list[dict[str, Any]]:
    """Real traces with short reasoning (fast to commit and verify), from ../shared/data/traces."""
    path = TRACES_DIR / "thinkingllms_math_r1distill_qwq.jsonl"
    records = [json.loads(line) for line in path.open(encoding="utf-8")]
    records.sort(key=lambda r: len(r["reasoning"]))
    return records[:count]


@dataclass
class CommittedRequest:
    """What an honest provider SDK holds for one billed request: the report and its openings."""

    report: dict[str, Any]
    openings: Openings

    @property
    def request_id(self) -> str:
        return str(self.report["request_id"])


# The conftest fixtures that build a provider account and a committed request, as tests name them.
MakeProvider = Callable[..., ProviderAccount]
MakeRequest = Callable[..., CommittedRequest]


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


# --- the Celery worker ------------------------------------------------------------------------------


class WorkerProcess:
    """A real `celery -A workers.app worker` subprocess (with embedded beat), consuming cpu and gpu."""

    def __init__(self, log_dir: Path, nice: int = 0) -> None:
        self.log_dir = log_dir
        # Verification is batch work: on a machine it shares with the API, a lower priority keeps the
        # API's latency from paying for it.
        self.nice = nice
        self.process: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.log_path = log_dir / "worker-0.log"

    def start(self, **env_overrides: str) -> None:
        assert self.process is None or self.process.poll() is not None, "worker already running"
        self.runs += 1
        self.log_path = self.log_dir / f"worker-{self.runs}.log"
        env = {
            **os.environ,
            **TEST_ENV,
            **env_overrides,
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "COIN_EMBED_DEVICE": "cpu",
            "PYTHONPATH": str(REPO_ROOT),
        }
        command = [
            "nice", "-n", str(self.nice), sys.executable, "-m", "celery", "-A", "workers.app", "worker",
            "-Q", "cpu,gpu", "-c", "1", "-l", "info", "-n", f"coin-test-{self.runs}@%h",
            "-B", "-s", str(self.log_dir / f"beat-{self.runs}"),
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip
        log = self.log_path.open("wb")
        # A process group of its own, so that kill() can take the main process and its pool child at
        # once. Not a session of its own: with the kernel's autogroup scheduling, a new session is a new
        # scheduling group that gets its fair share whatever its nice value, and the worker's verification
        # would take a core from the API.
        process = self.process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, process_group=0
        )
        wait_for(lambda: b" ready." in self.log_path.read_bytes() or process.poll() is not None, 90, "worker")
        if process.poll() is not None:
            raise AssertionError(f"worker exited at start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool child): no cleanup, no acknowledgement."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if not self.alive:
            return
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


# --- API steps shared by the tests -------------------------------------------------------------------


def submit_report(client: TestClient, provider: ProviderAccount, request: CommittedRequest) -> dict[str, Any]:
    response = client.post("/v1/reports", json=request.report, headers=provider.headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def open_audit(client: TestClient, report_id: str, headers: dict[str, str] = ADMIN) -> str:
    response = client.post("/v1/audits", json={"report_id": report_id}, headers=headers)
    assert response.status_code == 202, response.text
    return str(response.json()["audit_id"])


def get_audit(client: TestClient, audit_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/audits/{audit_id}", headers=ADMIN)
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_for_challenge(
    client: TestClient, provider: ProviderAccount, audit_id: str, timeout: float = 60
) -> dict[str, Any]:
    """The open challenge of `audit_id`, as the provider sees it, once a worker has drawn it."""

    def find() -> dict[str, Any] | None:
        response = client.get("/v1/challenges", params={"status": "open"}, headers=provider.headers)
        assert response.status_code == 200, response.text
        return next((c for c in response.json()["items"] if c["audit_id"] == audit_id), None)

    return dict(wait_for(find, timeout, f"the challenge of audit {audit_id}"))


def wait_for_verdict(client: TestClient, audit_id: str, timeout: float = 90) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        audit = get_audit(client, audit_id)
        return audit if audit["status"] == "done" else None

    return dict(wait_for(done, timeout, f"the verdict of audit {audit_id}"))


def answer_until_verdict(
    client: TestClient, provider: ProviderAccount, audit_id: str, openings: Openings
) -> dict[str, Any]:
    """Answer every round the audit opens (progressive exposure) honestly, until its verdict."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        audit = get_audit(client, audit_id)
        if audit["status"] == "done":
            return audit
        response = client.get("/v1/challenges", params={"status": "open"}, headers=provider.headers)
        for challenge in (c for c in response.json()["items"] if c["audit_id"] == audit_id):
            body = openings.respond(challenge["indices"], challenge["content_indices"]).to_json()
            assert respond(client, provider, challenge, body).status_code == 202
        time.sleep(0.1)
    raise AssertionError(f"audit {audit_id} has no verdict after 120 s")


def respond(
    client: TestClient, provider: ProviderAccount, challenge: dict[str, Any], body: dict[str, Any]
) -> httpx2.Response:
    return client.post(
        f"/v1/challenges/{challenge['challenge_id']}/response", json=body, headers=provider.headers
    )


def service_context(client: TestClient) -> ServiceContext:
    """The ServiceContext of the app `client` drives (create_app keeps it in `app.state`)."""
    app = client.app
    assert isinstance(app, FastAPI)
    context: ServiceContext = app.state.context
    return context


def new_audit(
    session: Session, report_id: str, trigger: AuditTrigger, status: AuditStatus = AuditStatus.VERIFYING
) -> Audit:
    """An audit of the report opened by `trigger`, already at `status`: for a test that writes its
    verdict itself rather than running the protocol."""
    report = session.get_one(Report, uuid.UUID(report_id))
    now = utcnow()
    audit = Audit(report_id=report.id, provider_id=report.provider_id, status=status, trigger=trigger,
                  created_at=now, updated_at=now)  # fmt: skip
    session.add(audit)
    session.flush()
    return audit


def decide(
    context: ServiceContext,
    report_id: str,
    trigger: AuditTrigger,
    outcome: Outcome,
    checks: Sequence[dict[str, Any]] = (),
) -> Verdict:
    """A verdict written as the verifying worker writes it (`write_verdict`), on a new audit of the
    report; `checks` as `CheckResult.to_json()` gives them."""
    with context.db.unit_of_work() as session:
        audit = new_audit(session, report_id, trigger)
        report = session.get_one(Report, audit.report_id)
        evidence = {"checks": list(checks), "proof_failures": proof_failures(list(checks)),
                    "statistical_flags": statistical_flags(list(checks))}  # fmt: skip
        decided_by = {"embd_id": report.body["commitment"]["embd_id"], "heads": None}
        return write_verdict(session, context, audit, outcome, evidence, decided_by, planned_blocks=4)
