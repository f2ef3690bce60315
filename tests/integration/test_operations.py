"""Operations on the real stack (Issue 15): rate limits that hold across API processes, warm-up before
readiness, receipt tokens through a key rotation, and verification leases that recover a dead worker's
audit without ever verifying a live one twice."""

import uuid

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import func, select
from typer.testing import CliRunner, Result

from api.app import create_app
from auditor.cli import build_app
from service.database import Database
from service.migrate import upgrade_database
from service.models import AuditEvent
from service.reports.service import accepted_embd_id
from service.settings import Settings, get_settings
from tests.integration.support import (
    ADMIN,
    BROKER_KEY_PREFIX,
    MakeProvider,
    MakeRequest,
    WorkerProcess,
    bearer,
    get_audit,
    open_audit,
    respond,
    submit_report,
    wait_for,
    wait_for_challenge,
    wait_for_verdict,
)


def test_rate_limits_hold_across_api_processes(settings: Settings, make_provider: MakeProvider) -> None:
    provider = make_provider()
    limited = settings.model_copy(
        update={
            # A prefix of this test's own (still under the session's, which is deleted at the end).
            "broker_key_prefix": f"{BROKER_KEY_PREFIX}limits-{uuid.uuid4().hex[:8]}:",
            "rate_limit_key_per_second": 1.0,
            "rate_limit_burst_seconds": 3.0,
            "auth_failures_per_minute": 2.0,
        }
    )
    # Two apps sharing one Redis are two API processes: the limit is theirs together.
    first, second = (TestClient(create_app(limited), raise_server_exceptions=False) for _ in range(2))
    statuses = [
        (first if i % 2 else second).get("/v1/providers/me", headers=provider.headers).status_code
        for i in range(6)
    ]
    assert statuses[:4] == [200] * 4 and statuses[4:] == [429, 429]
    refused = first.get("/v1/providers/me", headers=provider.headers)
    assert refused.headers["content-type"] == "application/problem+json"
    assert int(refused.headers["Retry-After"]) >= 1

    wrong = bearer("coin_0000000000000000_guessing")
    guesses = [second.get("/v1/providers/me", headers=wrong).status_code for _ in range(5)]
    assert guesses == [401, 401, 401, 429, 429]
    # Failed authentication is counted per address: this address is refused, whatever it sends now.
    assert first.get("/v1/auditor", headers=ADMIN).status_code == 429


def test_readyz_waits_for_the_warm_up(settings: Settings) -> None:
    cold = TestClient(create_app(settings), raise_server_exceptions=False)  # no lifespan: never warmed
    response = cold.get("/readyz")
    assert response.status_code == 503 and "warming up" in response.json()["problems"]

    app = create_app(settings)
    accepted_embd_id.cache_clear()
    with TestClient(app, raise_server_exceptions=False) as warm:
        assert warm.get("/readyz").status_code == 200
        # Done before the first request: the weights hashed, the pool's connections open.
        assert accepted_embd_id.cache_info().currsize == 1
        assert app.state.context.db.engine.pool.checkedin() >= 10


def test_receipt_tokens_keep_working_through_a_rotation(
    settings: Settings,
    make_provider: MakeProvider,
    make_request: MakeRequest,
) -> None:
    provider = make_provider()
    report = make_request(0).report
    before = TestClient(create_app(settings), raise_server_exceptions=False)
    receipt = before.post("/v1/reports", json=report, headers=provider.headers).json()
    token = receipt["receipt_token"]

    rotated_settings = settings.model_copy(
        update={
            "secret_key": SecretStr("the-next-receipt-secret-0123456789abcdef"),
            "secret_key_previous": settings.secret_key,
        }
    )
    rotated = TestClient(create_app(rotated_settings), raise_server_exceptions=False)
    replay = rotated.post("/v1/reports", json=report, headers=provider.headers)
    assert replay.status_code == 200 and replay.json()["receipt_token"] == token
    status = rotated.get(f"/v1/reports/{receipt['report_id']}/status", headers=bearer(token))
    assert status.status_code == 200
    fresh = rotated.post("/v1/reports", json=make_request(1).report, headers=provider.headers).json()
    assert (
        rotated.get(
            f"/v1/reports/{fresh['report_id']}/status", headers=bearer(fresh["receipt_token"])
        ).status_code
        == 200
    )

    # Two rotations later the old key is gone: a replay cannot re-derive the token (null), yet the
    # token the customer holds still opens its report (tokens are checked against their stored hash).
    retired = TestClient(
        create_app(
            rotated_settings.model_copy(
                update={
                    "secret_key": SecretStr("the-receipt-secret-after-that-0123456789ab"),
                    "secret_key_previous": rotated_settings.secret_key,
                }
            )
        ),
        raise_server_exceptions=False,
    )
    again = retired.post("/v1/reports", json=report, headers=provider.headers)
    assert again.status_code == 200 and again.json()["receipt_token"] is None
    assert retired.get(f"/v1/reports/{receipt['report_id']}/status", headers=bearer(token)).status_code == 200


def _events(database: Database, kind: str, audit_id: str) -> int:
    with database.unit_of_work() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.kind == kind, AuditEvent.audit_id == uuid.UUID(audit_id))
            )
            or 0
        )


def test_a_verification_longer_than_the_staleness_is_not_started_twice(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    worker: WorkerProcess,
    database: Database,
) -> None:
    """The lease's heartbeat keeps the sweeper (every 1 s, stale after 4 s here) off an audit whose
    verification takes 8 s."""
    provider = make_provider()
    request = make_request(2)
    audit_id = open_audit(client, submit_report(client, provider, request)["report_id"])
    challenge = wait_for_challenge(client, provider, audit_id)
    worker.stop()
    worker.start(COIN_VERIFY_DELAY_SECONDS="8")
    try:
        body = request.openings.respond(challenge["indices"], challenge["content_indices"]).to_json()
        assert respond(client, provider, challenge, body).status_code == 202
        wait_for_verdict(client, audit_id, timeout=90)
    finally:
        worker.stop()
    assert _events(database, "audit.requeued", audit_id) == 0
    assert _events(database, "verdict.issued", audit_id) == 1
    assert worker.log().count("coin.audit.verify[") <= 2  # received, succeeded: one task, one run


def test_a_dead_workers_lease_is_taken_over(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    worker: WorkerProcess,
    database: Database,
) -> None:
    provider = make_provider()
    request = make_request(3)
    audit_id = open_audit(client, submit_report(client, provider, request)["report_id"])
    challenge = wait_for_challenge(client, provider, audit_id)
    worker.stop()
    worker.start(COIN_VERIFY_DELAY_SECONDS="60")
    body = request.openings.respond(challenge["indices"], challenge["content_indices"]).to_json()
    assert respond(client, provider, challenge, body).status_code == 202
    wait_for(lambda: "coin.audit.verify[" in worker.log(), 30, "the verification to start")
    worker.kill()  # holding the lease
    worker.start()
    audit = wait_for_verdict(client, audit_id, timeout=60)
    assert audit["verdict"]["outcome"] == "pass"
    assert _events(database, "audit.requeued", audit_id) >= 1
    assert _events(database, "verdict.issued", audit_id) == 1
    assert get_audit(client, audit_id)["status"] == "done"


def test_the_lease_of_a_verification(
    client: TestClient,
    settings: Settings,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    worker: WorkerProcess,
    database: Database,
) -> None:
    """Without a worker: a second task finds the lease fresh and leaves; the sweeper leaves a fresh lease
    alone and takes a stale one over (the dead worker's), clearing it for the next task."""
    from datetime import timedelta

    from sqlalchemy import update

    from service.audits.workflow import _claim, sweep_audits
    from service.context import ServiceContext
    from service.models import Audit, AuditStatus, utcnow

    worker.stop()  # its sweeper must not act between the steps (the next test that needs it restarts it)
    provider = make_provider()
    audit_id = uuid.UUID(open_audit(client, submit_report(client, provider, make_request(4))["report_id"]))
    # Its messages go to queues no worker reads (under the session's prefix, deleted at the end).
    quiet = settings.model_copy(
        update={"broker_key_prefix": f"{BROKER_KEY_PREFIX}lease-{uuid.uuid4().hex[:8]}:"}
    )
    context = ServiceContext.from_settings(quiet)
    try:

        def set_audit(**values: object) -> None:
            with database.unit_of_work() as session:
                session.execute(update(Audit).where(Audit.id == audit_id).values(**values))

        set_audit(status=AuditStatus.VERIFYING, heartbeat_at=None, updated_at=utcnow())
        assert _claim(context, audit_id)  # the first task takes the lease
        assert not _claim(context, audit_id)  # a duplicate message: the lease is fresh
        assert sweep_audits(context) == 0
        set_audit(heartbeat_at=utcnow() - timedelta(seconds=quiet.stale_after_seconds + 1))  # it died
        assert sweep_audits(context) == 1
        with database.unit_of_work() as session:
            assert session.get_one(Audit, audit_id).heartbeat_at is None
        assert _claim(context, audit_id)  # the re-enqueued task may take it
    finally:
        context.close()


def test_a_command_names_a_database_not_migrated_or_not_there_without_its_password(
    scratch_postgres: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`coin` refuses a PostgreSQL database it cannot use before touching it, and the URL it names in
    the error masks the password (the scratch database is not migrated)."""
    with_password = scratch_postgres.replace("postgres@", "postgres:hunter2-secret@", 1)
    shown = scratch_postgres.replace("postgres@", "postgres:***@", 1)
    absent = f"{with_password}_absent"

    def show(url: str) -> Result:
        monkeypatch.setenv("COIN_DATABASE_URL", url)
        get_settings.cache_clear()
        try:
            return CliRunner().invoke(build_app(), ["policy", "show", "--provider", "acme"])
        finally:
            get_settings.cache_clear()

    empty = show(with_password)
    assert (empty.exit_code, empty.stderr) == (
        2,
        f"error: the database at {shown} is not migrated: run coin migrate\n",
    )
    unreachable = show(absent)
    assert unreachable.exit_code == 2 and unreachable.stderr.count("\n") == 1
    assert unreachable.stderr.startswith(f"error: cannot open the database at {shown}_absent: ")
    assert "does not exist" in unreachable.stderr and "hunter2" not in unreachable.stderr
    upgrade_database(scratch_postgres)
    migrated = show(with_password)
    assert (migrated.exit_code, migrated.stderr) == (1, "error: no provider has the id or name 'acme'\n")
