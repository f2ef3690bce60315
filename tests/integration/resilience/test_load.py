"""Sustained load with audits running beside it (bench/load.py), then the queues drained; and the first
seconds after an API restart, once /readyz says ready (the warm-up)."""

import os
import threading
import time
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import func, select

from bench.load import run
from service.database import Database
from service.jobs import Queue
from service.models import PendingEvent
from tests.integration.resilience.support import (
    ApiServer,
    Figures,
    HonestProvider,
    check_invariants,
    new_provider,
    open_audit,
    submit_copy,
    watch_until_done,
)
from tests.integration.support import BROKER_KEY_PREFIX, REDIS_URL, CommittedRequest, WorkerProcess, wait_for

LOAD_SECONDS = float(os.environ.get("COIN_LOAD_SECONDS", "20"))
LOAD_RATE = float(os.environ.get("COIN_LOAD_RATE", "200"))
AUDIT_EVERY_SECONDS = 10.0
# The targets (p99 <= 100 ms, nothing refused) are asserted by the full form (`make resilience`, 10
# minutes) only: the short form in `make test` records its figures, as a benchmark does, and fails on
# errors alone. A 429 from the in-flight cap is the API shedding load a slower machine cannot carry — a
# figure of the machine, recorded — where anything else (a 5xx, a dropped connection) is an error.
FULL_FORM = LOAD_SECONDS >= 300
SHED = "429"


def _errors(load: dict[str, Any]) -> dict[str, int]:
    """The load run's failures that fail the test: all of them in the full form, all but 429s otherwise."""
    return {k: n for k, n in load["failures"].items() if FULL_FORM or k != SHED}


def _queues_drained(database: Database) -> bool:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        depth = sum(int(client.llen(f"{BROKER_KEY_PREFIX}{queue.value}")) for queue in Queue)
    finally:
        client.close()
    with database.unit_of_work() as session:
        pending = session.scalar(select(func.count()).select_from(PendingEvent))
    return depth == 0 and not pending


# The load itself, then up to 300 s for the audits and 120 s for the queues (below), and the set-up.
@pytest.mark.timeout(LOAD_SECONDS + 600)
def test_sustained_load_with_audits_beside_it(
    api: ApiServer,
    production_worker: WorkerProcess,
    http: httpx.Client,
    database: Database,
    committed: list[CommittedRequest],
    figures: Figures,
) -> None:
    provider = new_provider(http)
    audits: dict[str, CommittedRequest] = {}
    answering = HonestProvider(api, provider, audits)
    answering.start()
    stop = threading.Event()

    def audit_beside() -> None:
        with api.client() as side:
            k = 0
            while not stop.wait(AUDIT_EVERY_SECONDS if audits else 1.0):
                request = committed[k % len(committed)]
                audits[open_audit(side, submit_copy(side, provider, request))] = request
                k += 1

    auditor = threading.Thread(target=audit_beside, daemon=True)
    auditor.start()
    try:
        load = run(api.base_url, new_provider(http).key, LOAD_RATE, LOAD_SECONDS)
    finally:
        stop.set()
        auditor.join(30)
    seen = watch_until_done(database, list(audits), timeout=300)
    answering.stop()
    wait_for(lambda: _queues_drained(database), 120, "the queues to drain")
    figures.load.update(load, audits=len(audits), audits_done=len(seen))
    check_invariants(database, figures, list(audits))
    assert not _errors(load), load
    assert load["p99_ms"] <= 100 or not FULL_FORM, load


def test_the_first_seconds_after_a_restart(
    api: ApiServer, production_worker: WorkerProcess, http: httpx.Client, figures: Figures
) -> None:
    key = new_provider(http).key
    api.kill()
    started = time.monotonic()
    api.start()  # returns once /readyz says ready: warmed up
    ready_s = time.monotonic() - started
    restart = run(api.base_url, key, 100.0, min(20.0, LOAD_SECONDS))
    figures.load["after_restart"] = {**restart, "ready_s": round(ready_s, 1)}
    assert not _errors(restart), restart
    assert restart["p99_ms"] <= 100 or not FULL_FORM, restart
