"""Postgres is the source of truth: a killed worker or a flushed Redis delays audits but loses none."""

import re
import time
import uuid
from collections import Counter

import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from service.database import Database
from service.events import verify_chain
from service.models import AuditEvent, ChallengeResponse, Verdict
from tests.integration.support import (
    MakeProvider,
    MakeRequest,
    WorkerProcess,
    delete_broker_keys,
    get_audit,
    open_audit,
    respond,
    submit_report,
    wait_for,
    wait_for_challenge,
    wait_for_verdict,
)


def _counts(database: Database) -> tuple[Counter[uuid.UUID], int | None, Counter[uuid.UUID | None]]:
    with database.unit_of_work() as session:
        verdicts = Counter(session.scalars(select(Verdict.audit_id)).all())
        responses = session.scalar(select(func.count()).select_from(ChallengeResponse))
        issued = Counter(
            session.scalars(select(AuditEvent.audit_id).where(AuditEvent.kind == "verdict.issued")).all()
        )
        assert verify_chain(session).ok
    return verdicts, responses, issued


def test_worker_killed_mid_verification(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    worker: WorkerProcess,
    database: Database,
) -> None:
    provider = make_provider()
    request = make_request(0)
    receipt = submit_report(client, provider, request)
    audit_id = open_audit(client, receipt["report_id"])
    challenge = wait_for_challenge(client, provider, audit_id)

    # A worker whose verification takes long enough to be killed inside it.
    worker.stop()
    worker.start(COIN_VERIFY_DELAY_SECONDS="60")
    body = request.openings.respond(challenge["indices"], challenge["content_indices"]).to_json()
    assert respond(client, provider, challenge, body).status_code == 202
    received = re.compile(r"Task coin\.audit\.verify\[[0-9a-f-]+\] received")
    wait_for(lambda: received.search(worker.log()), 30, "the verification task to reach the worker")
    time.sleep(1)  # inside the (slowed-down) verification now
    worker.kill()
    assert get_audit(client, audit_id)["status"] == "verifying"

    worker.start()  # a normal worker again: the sweeper or the redelivered message finishes the audit
    audit = wait_for_verdict(client, audit_id, timeout=90)
    assert audit["verdict"]["outcome"] == "pass"

    verdicts, responses, issued = _counts(database)
    assert verdicts == {uuid.UUID(audit_id): 1}
    assert issued == {uuid.UUID(audit_id): 1}
    assert responses == 1


def test_redis_flushed_mid_run(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    worker: WorkerProcess,
    database: Database,
    redis_client: redis.Redis,
) -> None:
    provider = make_provider()
    requests = [make_request(i) for i in range(4)]
    receipts = [submit_report(client, provider, r) for r in requests]

    # Audits asked for while no worker runs, then their messages vanish with the broker's data.
    worker.stop()
    audit_ids = [open_audit(client, r["report_id"]) for r in receipts]
    assert delete_broker_keys(redis_client) > 0  # the queued messages are gone
    worker.start()
    challenges = [wait_for_challenge(client, provider, a, timeout=60) for a in audit_ids]

    # Responses stored while no worker runs; their verification messages are flushed too.
    worker.stop()
    for request, challenge in zip(requests, challenges, strict=True):
        body = request.openings.respond(challenge["indices"], challenge["content_indices"]).to_json()
        assert respond(client, provider, challenge, body).status_code == 202
    assert delete_broker_keys(redis_client) > 0  # the queued messages are gone
    worker.start()

    outcomes = [wait_for_verdict(client, a, timeout=120)["verdict"]["outcome"] for a in audit_ids]
    assert outcomes == ["pass"] * len(audit_ids)
    verdicts, responses, issued = _counts(database)
    assert set(verdicts.values()) == {1} and len(verdicts) == len(audit_ids)
    assert set(issued.values()) == {1} and len(issued) == len(audit_ids)
    assert responses == len(audit_ids)
