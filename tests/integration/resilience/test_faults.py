"""Faults at random moments, `trials` times each: a worker SIGKILLed, the broker's Redis keys flushed, the
database's connections cut, the API SIGKILLed in the middle of 1,000-report batches. Each trial ends
with every audit done exactly once and the trail and every row it vouches for intact."""

import math
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
import redis
from sqlalchemy import func, select

from service.database import Database
from service.models import Report
from tests.integration.resilience.conftest import PRODUCTION_TIMINGS
from tests.integration.resilience.support import (
    ApiServer,
    Figures,
    HonestProvider,
    check_invariants,
    done_audits,
    new_provider,
    open_audit,
    retrying,
    submit_copy,
    watch_until_done,
)
from tests.integration.support import (
    PG_HOST,
    PG_PORT,
    PG_USER,
    TEST_DATABASE,
    CommittedRequest,
    ProviderAccount,
    WorkerProcess,
    delete_broker_keys,
)

AUDITS_PER_TRIAL = 2


@dataclass
class AuditTrials:
    """Audits struck by one fault at a random moment, the figures of each trial recorded."""

    api: ApiServer
    http: httpx.Client
    database: Database
    committed: list[CommittedRequest]
    figures: Figures
    rng: random.Random

    def run(self, name: str, fault: Callable[[], object]) -> None:
        provider = new_provider(self.http)
        audits = {}
        for request in self.rng.sample(self.committed, AUDITS_PER_TRIAL):
            audits[open_audit(self.http, submit_copy(self.http, provider, request))] = request
        answering = HonestProvider(self.api, provider, audits)
        answering.start()
        try:
            time.sleep(self.rng.uniform(0.0, 8.0))  # drawing, answering or verifying, wherever the audits are
            unfinished = set(audits) - done_audits(self.database, list(audits))
            struck = time.monotonic()
            fault()
            seen = watch_until_done(self.database, list(audits), timeout=180)
        finally:
            answering.stop()
        self.figures.trials[name] += 1
        if unfinished:
            self.figures.recovery_s.append(max(seen.get(a, math.inf) - struck for a in unfinished))
        check_invariants(self.database, self.figures, list(audits))


@pytest.fixture
def audit_trials(
    api: ApiServer,
    http: httpx.Client,
    database: Database,
    committed: list[CommittedRequest],
    figures: Figures,
    rng: random.Random,
) -> AuditTrials:
    return AuditTrials(api, http, database, committed, figures, rng)


def test_worker_killed_at_a_random_moment(
    production_worker: WorkerProcess, audit_trials: AuditTrials, trials: int
) -> None:
    def kill() -> None:
        production_worker.kill()
        production_worker.start(**PRODUCTION_TIMINGS)

    for _ in range(trials):
        audit_trials.run("worker_sigkill", kill)


def test_redis_flushed_at_a_random_moment(
    production_worker: WorkerProcess, audit_trials: AuditTrials, trials: int, redis_client: redis.Redis
) -> None:
    # This session's broker keys only: the Redis is shared, FLUSHDB would take other sessions' too.
    for _ in range(trials):
        audit_trials.run("redis_flush", lambda: delete_broker_keys(redis_client))


def _cut_database_connections() -> None:
    """What a PostgreSQL restart does to the service: every connection to its database is dropped. Done
    with pg_terminate_backend on this session's database, because the server is shared with other
    sessions on this machine, which a real restart would disturb."""
    with psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=TEST_DATABASE, autocommit=True
    ) as c:
        c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


def test_database_connections_cut_at_a_random_moment(
    production_worker: WorkerProcess, audit_trials: AuditTrials, database: Database, trials: int
) -> None:
    def cut() -> None:
        _cut_database_connections()
        database.engine.dispose()  # this test's own pool lost its connections too

    for _ in range(trials):
        audit_trials.run("postgres_restart", cut)


BATCHES, BATCH = 3, 1000


def _stored(database: Database, request_ids: list[str]) -> int:
    with database.unit_of_work() as session:
        stored = session.scalar(
            select(func.count()).select_from(Report).where(Report.request_id.in_(request_ids))
        )
        assert stored is not None
        return int(stored)


def _send_batches(
    api: ApiServer, provider: ProviderAccount, batches: list[list[dict[str, Any]]], sent: list[int | None]
) -> None:
    with api.client() as sender:
        for b, batch in enumerate(batches):
            try:
                answer = sender.post("/v1/reports/batch", json={"reports": batch}, headers=provider.headers)
            except httpx.TransportError:
                return  # the API died under this batch
            sent[b] = answer.status_code


def test_api_killed_mid_batch(
    api: ApiServer,
    production_worker: WorkerProcess,
    http: httpx.Client,
    database: Database,
    committed: list[CommittedRequest],
    figures: Figures,
    rng: random.Random,
    trials: int,
) -> None:
    provider = new_provider(http)
    template = committed[0].report
    for trial in range(trials):
        batches = [
            [
                {**template, "request_id": f"batch-{trial}-{b}-{uuid.uuid4().hex[:8]}-{i}"}
                for i in range(BATCH)
            ]
            for b in range(BATCHES)
        ]
        sent: list[int | None] = [None] * BATCHES  # HTTP status, or None: no answer (the API died)

        sender = threading.Thread(target=_send_batches, args=(api, provider, batches, sent))
        sender.start()
        time.sleep(rng.uniform(0.05, 2.0))  # inside one of the batches, or between two
        api.kill()
        sender.join(60)
        figures.recovery_s.append(api.start())
        figures.trials["api_sigkill"] += 1
        # Each batch is all stored or not at all, whatever moment the API died at.
        for batch in batches:
            stored = _stored(database, [r["request_id"] for r in batch])
            if stored not in (0, BATCH):
                figures.lost += 1
            assert stored in (0, BATCH), f"a batch was partly stored: {stored} of {BATCH}"
        # The client sends again what got no answer; intake is idempotent, so everything is stored once.
        for b, batch in enumerate(batches):

            def resend(batch: list[dict[str, Any]] = batch) -> httpx.Response:
                return http.post("/v1/reports/batch", json={"reports": batch}, headers=provider.headers)

            answer = retrying(resend)
            statuses = {item["status"] for item in answer.json()["results"]}
            assert statuses <= {200, 201}, statuses
            if sent[b] == 200:
                assert statuses == {200}  # answered before the kill: stored then
        all_ids = [r["request_id"] for batch in batches for r in batch]
        stored = _stored(database, all_ids)
        figures.lost += len(all_ids) - stored
        assert stored == len(all_ids)
        check_invariants(database, figures, [])
