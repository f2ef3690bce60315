"""What the resilience trials share: the API as a uvicorn subprocess, an honest provider answering in the
background, the invariants every trial ends with, and the figures the suite reports."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from service.database import Database
from service.integrity import check_integrity
from service.models import Audit, AuditEvent, AuditStatus, PendingEvent, Verdict
from tests.integration.support import ADMIN, REPO_ROOT, TEST_ENV, CommittedRequest, ProviderAccount, wait_for


@dataclass
class Figures:
    trials: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    duplicated: int = 0
    server_errors: int = 0
    unavailable_answers: int = 0  # 503s: the documented "retry later" of a store or broker that is down
    recovery_s: list[float] = field(default_factory=list)
    load: dict[str, Any] = field(default_factory=dict)
    schemathesis: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count_response(self, response: httpx.Response) -> None:
        with self.lock:
            if response.status_code == 503:
                self.unavailable_answers += 1
            elif response.status_code >= 500:
                self.server_errors += 1

    def summary(self) -> dict[str, Any]:
        return {
            "trials": sum(self.trials.values()),
            "trials_by_fault": dict(self.trials),
            "lost": self.lost,
            "duplicated": self.duplicated,
            "server_errors": self.server_errors + self.schemathesis.get("server_errors", 0),
            "unavailable_answers": self.unavailable_answers,
            "recovery_s_max": round(max(self.recovery_s, default=0.0), 1),
            "recovery_s_median": round(sorted(self.recovery_s)[len(self.recovery_s) // 2], 1)
            if self.recovery_s
            else None,
            "load_p99_ms": self.load.get("p99_ms"),
            "load": self.load,
            "schemathesis": self.schemathesis,
        }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ApiServer:
    """`uvicorn api.main:app` in a session of its own (so that SIGKILL takes it whole), on a free port."""

    def __init__(self, log_dir: Path, figures: Figures, env: dict[str, str]) -> None:
        self.log_dir, self.figures, self.env = log_dir, figures, env
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> float:
        """Start and wait until /readyz says ready; returns the seconds that took."""
        self.starts += 1
        env = {**os.environ, **TEST_ENV, **self.env, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
        log = (self.log_dir / f"api-{self.starts}.log").open("wb")
        command = [
            sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(self.port),
            "--log-level", "warning", "--timeout-keep-alive", "5",
        ]  # fmt: skip
        started = time.monotonic()
        # Its own process group (for kill), in the test's session: see WorkerProcess.start.
        self.process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, process_group=0
        )

        def ready() -> bool:
            assert self.process is not None and self.process.poll() is None, "the API exited at start"
            try:
                return httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 90, "the API to be ready", interval=0.1)
        return time.monotonic() - started

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(30)

    def client(self, timeout: float = 120) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, timeout=timeout, event_hooks={"response": [self.figures.count_response]}
        )


def retrying(call: Callable[[], httpx.Response], attempts: int = 120) -> httpx.Response:
    """A request repeated while the service is down, answers 503, or refuses it with 429 (the side
    clients share the load generator's address and its limits), after the Retry-After it names: what a
    careful client does."""
    for _ in range(attempts):
        try:
            response = call()
        except httpx.TransportError:
            time.sleep(0.5)
            continue
        if response.status_code not in (429, 503):
            return response
        time.sleep(float(response.headers.get("Retry-After", "1")))
    raise AssertionError("the service did not come back")


def new_provider(http: httpx.Client) -> ProviderAccount:
    name = f"resilience-{uuid.uuid4().hex[:8]}"
    response = retrying(lambda: http.post("/v1/providers", json={"name": name}, headers=ADMIN))
    assert response.status_code == 201, response.text
    return ProviderAccount(response.json()["id"], name, response.json()["api_key"])


def submit_copy(http: httpx.Client, provider: ProviderAccount, request: CommittedRequest) -> str:
    """The committed trace under a fresh request id (the commitment does not depend on it); the report id."""
    report = {**request.report, "request_id": f"res-{uuid.uuid4().hex}"}
    response = retrying(lambda: http.post("/v1/reports", json=report, headers=provider.headers))
    assert response.status_code == 201, response.text
    return str(response.json()["report_id"])


def open_audit(http: httpx.Client, report_id: str) -> str:
    response = retrying(lambda: http.post("/v1/audits", json={"report_id": report_id}, headers=ADMIN))
    assert response.status_code == 202, response.text
    return str(response.json()["audit_id"])


class HonestProvider(threading.Thread):
    """Answers every open challenge of `audits` with the openings of its request, until stopped; rides
    out the faults (connection errors, 503s) as a provider's poller would."""

    def __init__(
        self, api: ApiServer, provider: ProviderAccount, audits: dict[str, CommittedRequest]
    ) -> None:
        super().__init__(daemon=True)
        self.api, self.provider, self.audits = api, provider, audits
        self.stopping = threading.Event()

    def run(self) -> None:
        with self.api.client(timeout=30) as http:
            while not self.stopping.wait(0.2):
                try:
                    page = http.get(
                        "/v1/challenges", params={"status": "open"}, headers=self.provider.headers
                    )
                    if page.status_code != 200:
                        continue
                    for challenge in page.json()["items"]:
                        request = self.audits.get(challenge["audit_id"])
                        if request is None:
                            continue
                        body = request.openings.respond(challenge["indices"], challenge["content_indices"])
                        http.post(
                            f"/v1/challenges/{challenge['challenge_id']}/response",
                            json=body.to_json(),
                            headers=self.provider.headers,
                        )
                except httpx.TransportError:
                    continue

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


def done_audits(database: Database, audit_ids: list[str]) -> set[str]:
    with database.unit_of_work() as session:
        rows = session.scalars(
            select(Audit.id).where(
                Audit.id.in_([uuid.UUID(a) for a in audit_ids]), Audit.status == AuditStatus.DONE
            )
        )
        return {str(row) for row in rows}


def watch_until_done(database: Database, audit_ids: list[str], timeout: float) -> dict[str, float]:
    """When (monotonic) each audit was first seen done, polling the store every 0.2 s."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < len(audit_ids) and time.monotonic() < deadline:
        try:
            now = time.monotonic()
            for audit_id in done_audits(database, audit_ids) - seen.keys():
                seen[audit_id] = now
        except Exception:
            database.engine.dispose()  # connections a database restart broke
        time.sleep(0.2)
    return seen


def settle(database: Database) -> None:
    """Wait until every committed event is linked (a killed API leaves them to the worker's link job)."""

    def linked() -> bool:
        with database.unit_of_work() as session:
            return not session.scalar(select(func.count()).select_from(PendingEvent))

    wait_for(linked, 60, "the pending events to be linked")


def check_invariants(database: Database, figures: Figures, audit_ids: list[str]) -> None:
    """Every audit done with exactly one verdict (and one verdict.issued event), and the trail and every
    row it vouches for intact; counted into the figures, then asserted."""
    settle(database)
    with database.unit_of_work() as session:
        ids = [uuid.UUID(a) for a in audit_ids]
        verdicts = Counter(session.scalars(select(Verdict.audit_id).where(Verdict.audit_id.in_(ids))))
        issued = Counter(
            session.scalars(
                select(AuditEvent.audit_id).where(
                    AuditEvent.kind == "verdict.issued", AuditEvent.audit_id.in_(ids)
                )
            )
        )
    lost = [a for a in ids if verdicts[a] == 0]
    duplicated = [a for a in ids if verdicts[a] > 1 or issued[a] > 1]
    report = check_integrity(database)
    with figures.lock:
        figures.lost += len(lost)
        figures.duplicated += len(duplicated)
    assert not lost and not duplicated, (lost, duplicated)
    assert report.ok, [str(p) for p in report.problems]
