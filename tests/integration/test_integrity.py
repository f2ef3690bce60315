"""The audit trail vouches for what the API serves: reports and verdicts are append-only, every row is
checked against the event that recorded it, and the chain's head is sealed with a key the database does
not hold (Issue 15, "Integrity"). Tampering is done as someone with full database rights would: with
the append-only triggers switched off."""

import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Table, func, select, text, update
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from auditor.cli import build_app
from service.context import ServiceContext, database_of
from service.database import Database
from service.events import ChainCheck, append_event, event_hash, link_pending_events, verify_chain
from service.integrity import check_integrity, integrity_check
from service.models import AuditEvent, Challenge, PendingEvent, utcnow
from service.settings import Settings, get_settings
from tests.integration.support import (
    ADMIN,
    TEST_ENV,
    CommittedRequest,
    MakeProvider,
    MakeRequest,
    ProviderAccount,
    WorkerProcess,
    bearer,
    open_audit,
    submit_report,
    wait_for,
    wait_for_challenge,
    wait_for_verdict,
)


def _tamper(database: Database, *statements: str, **params: Any) -> None:
    """Change the store as someone with full database rights would: with the triggers switched off."""
    with database.engine.begin() as connection:
        connection.execute(text("SET LOCAL session_replication_role = replica"))
        for statement in statements:
            connection.execute(text(statement), params)


def _problems(database: Database) -> list[str]:
    return [str(problem) for problem in check_integrity(database).problems]


def _failed_audit(
    client: TestClient, provider: ProviderAccount, request: CommittedRequest, database: Database
) -> dict[str, Any]:
    """A real audit that fails: the provider stays silent and its challenge's deadline is moved past."""
    receipt = submit_report(client, provider, request)
    audit_id = open_audit(client, receipt["report_id"])
    challenge = wait_for_challenge(client, provider, audit_id)
    with database.unit_of_work() as session:
        session.execute(
            update(Challenge)
            .where(Challenge.id == uuid.UUID(challenge["challenge_id"]))
            .values(deadline=utcnow() - timedelta(seconds=1))
        )
    audit = wait_for_verdict(client, audit_id, timeout=30)
    assert audit["verdict"]["outcome"] == "fail"
    return {"receipt": receipt, "audit": audit}


def _settled(database: Database) -> None:
    wait_for(lambda: not _pending(database), timeout=10, what="the chain writer")


def _pending(database: Database) -> int:
    with database.unit_of_work() as session:
        return int(session.scalar(select(func.count()).select_from(PendingEvent)) or 0)


def test_reports_and_verdicts_are_append_only(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    worker: WorkerProcess,
    database: Database,
) -> None:
    provider = make_provider()
    failed = _failed_audit(client, provider, make_request(0), database)
    report_id = failed["receipt"]["report_id"]
    for statement in (
        f"UPDATE reports SET reasoning_tokens = reasoning_tokens + 500 WHERE id = '{report_id}'",
        f"DELETE FROM reports WHERE id = '{report_id}'",
        "UPDATE verdicts SET outcome = 'pass'",
        "DELETE FROM verdicts",
    ):
        with pytest.raises(DBAPIError, match="append-only"), database.engine.begin() as connection:
            connection.execute(text(statement))
    _settled(database)
    assert _problems(database) == []


def test_a_rewritten_verdict_is_served_from_its_statement_and_reported(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    worker: WorkerProcess,
    database: Database,
) -> None:
    provider = make_provider()
    failed = _failed_audit(client, provider, make_request(1), database)
    audit_id, report_id = failed["audit"]["audit_id"], failed["receipt"]["report_id"]
    _tamper(database, "UPDATE verdicts SET outcome = 'pass'")

    # What the API serves comes from the signed statement, not from the rewritten column.
    assert client.get(f"/v1/audits/{audit_id}", headers=ADMIN).json()["verdict"]["outcome"] == "fail"
    token = bearer(failed["receipt"]["receipt_token"])
    status = client.get(f"/v1/reports/{report_id}/status", headers=token).json()
    assert [audit["outcome"] for audit in status["audits"]] == ["fail"]

    verdict_id = _verdict_id(database)
    _settled(database)
    assert _problems(database) == [
        f"verdicts {verdict_id}: the row differs from what its event recorded (row digest)",
        f"verdicts {verdict_id}: outcome differs from the signed statement's",
    ]


def _verdict_id(database: Database) -> str:
    with database.unit_of_work() as session:
        return str(session.scalar(text("SELECT id FROM verdicts")))


def test_an_inflated_report_row_is_reported(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    database: Database,
) -> None:
    provider = make_provider()
    receipt = submit_report(client, provider, make_request(2))
    report_id = receipt["report_id"]
    _tamper(
        database, f"UPDATE reports SET reasoning_tokens = reasoning_tokens + 500 WHERE id = '{report_id}'"
    )
    _settled(database)
    assert _problems(database) == [
        f"reports {report_id}: the row differs from what its event recorded (row digest)",
        f"reports {report_id}: reasoning_tokens differ from the report's body",
    ]


def test_a_report_whose_body_was_rewritten_is_reported(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    database: Database,
) -> None:
    provider = make_provider()
    report_id = submit_report(client, provider, make_request(3))["report_id"]
    _tamper(
        database,
        f"""UPDATE reports SET body = jsonb_set(body, '{{model}}', '"other"') WHERE id = '{report_id}'""",
    )
    _settled(database)
    assert _problems(database) == [
        f"reports {report_id}: the body does not match its digest (the receipt's)",
        f"reports {report_id}: model differ from the report's body",
    ]


def test_a_body_canonical_json_cannot_write_is_reported_and_the_check_goes_on(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    database: Database,
) -> None:
    """A number past 2**53 in a stored body (intake refuses one now; a row stored before stays, reports
    are append-only): the check names the row and goes on to the next instead of raising."""
    provider = make_provider()
    report_id = submit_report(client, provider, make_request(3))["report_id"]
    _tamper(
        database,
        f"""UPDATE reports SET body = jsonb_set(body, '{{usage,raw}}', '{{"x": 1e21}}') WHERE id = '{report_id}'""",
    )
    _settled(database)
    [problem] = _problems(database)
    assert problem.startswith(f"reports {report_id}: the body has no canonical JSON (canonical JSON: integer")


def test_an_audit_moved_without_its_events_is_reported(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    worker: WorkerProcess,
    database: Database,
) -> None:
    provider = make_provider()
    receipt = submit_report(client, provider, make_request(4))
    audit_id = open_audit(client, receipt["report_id"])
    wait_for_challenge(client, provider, audit_id)
    _tamper(database, f"UPDATE audits SET status = 'done' WHERE id = '{audit_id}'")
    _settled(database)
    assert _problems(database) == [f"audits {audit_id}: status is done but its events say challenged"]


def test_a_deleted_report_is_reported(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    database: Database,
) -> None:
    provider = make_provider()
    report_id = submit_report(client, provider, make_request(5))["report_id"]
    _settled(database)
    _tamper(database, f"DELETE FROM reports WHERE id = '{report_id}'")
    [problem] = _problems(database)
    assert problem.startswith(f"reports {report_id}: recorded by event ") and "missing" in problem


def _forge_after_head(database: Database, kind: str, payload: dict[str, Any]) -> int:
    """INSERT an event correctly linked after the head, as someone without the chain key can."""
    with database.unit_of_work() as session:
        head = session.scalars(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1)).one()
        forged = AuditEvent(
            seq=head.seq + 1, occurred_at=utcnow(), kind=kind, provider_id=None, report_id=None,
            audit_id=None, payload=payload, prev_hash=head.hash,
        )  # fmt: skip
        forged.hash = event_hash(forged)
        session.add(forged)
    return forged.seq


def _chain(database: Database) -> ChainCheck:
    with database.snapshot() as session:
        return verify_chain(session)


def _some_events(database: Database, n: int = 4) -> None:
    with database.unit_of_work() as session:
        for i in range(n):
            append_event(session, "test.event", payload={"i": i})


def test_a_forged_event_inserted_without_the_key_is_detected(clean_db: Database) -> None:
    _some_events(clean_db)
    seq = _forge_after_head(clean_db, "verdict.issued", {"outcome": "pass", "verdict_id": str(uuid.uuid4())})
    check = _chain(clean_db)
    assert not check.ok and check.first_bad_seq is None
    assert check.reason is not None
    assert f"events {seq}..{seq} were added without the chain key" in check.reason

    # The next legitimate append records the break before anything else, and seals after it: the
    # forged event is never vouched for, however many events follow.
    _some_events(clean_db, 3)
    check = _chain(clean_db)
    assert [(p.seq, p.reason.split(":")[0]) for p in check.problems] == [
        (seq + 1, "the head did not match its seal when this event was appended")
    ]
    with clean_db.unit_of_work() as session:
        recorded = session.scalars(select(AuditEvent).where(AuditEvent.seq == seq + 1)).one()
    assert recorded.kind == "chain.seal_mismatch"
    assert recorded.payload["head"]["seq"] == seq and recorded.payload["sealed"]["seq"] == seq - 1


def test_deleting_the_last_event_is_detected(clean_db: Database) -> None:
    _some_events(clean_db, 5)
    _tamper(clean_db, "DELETE FROM audit_events WHERE seq = 5")
    check = _chain(clean_db)
    assert not check.ok and "events 5..5 were removed" in (check.reason or "")


def test_rehashing_everything_after_an_altered_event_is_detected(clean_db: Database) -> None:
    _some_events(clean_db, 5)
    with clean_db.unit_of_work() as session:
        events = list(session.scalars(select(AuditEvent).order_by(AuditEvent.seq)))
        session.expunge_all()
    events[2].payload = {"i": 99}
    prev = events[1].hash
    for event in events[2:]:
        event.prev_hash = prev
        event.hash = event_hash(event)
        prev = event.hash
    for event in events[2:]:
        _tamper(
            clean_db,
            "UPDATE audit_events SET payload = CAST(:payload AS jsonb), prev_hash = :prev, hash = :hash "
            "WHERE seq = :seq",
            payload='{"i": 99}' if event.seq == 3 else f'{{"i": {event.seq - 1}}}',
            prev=event.prev_hash,
            hash=event.hash,
            seq=event.seq,
        )
    check = _chain(clean_db)
    assert [p.reason for p in check.problems] == [
        "seal of the head: event 5 is not the event that was sealed (the chain was re-hashed)"
    ]


def test_a_pending_event_without_the_key_vouches_for_nothing(clean_db: Database) -> None:
    assert isinstance(PendingEvent.__table__, Table)
    with clean_db.engine.begin() as connection:
        connection.execute(
            PendingEvent.__table__.insert().values(
                id=uuid.uuid4(), occurred_at=utcnow(), kind="verdict.issued", provider_id=None,
                report_id=None, audit_id=uuid.uuid4(), payload={"outcome": "pass"}, mac="00" * 32,
            )
        )  # fmt: skip
    link_pending_events(clean_db)
    with clean_db.unit_of_work() as session:
        [event] = session.scalars(select(AuditEvent)).all()
    assert event.kind == "chain.unvouched_pending" and event.audit_id is None
    assert event.payload["kind"] == "verdict.issued"
    assert [p.seq for p in _chain(clean_db).problems] == [event.seq]


def test_seals_made_with_the_previous_chain_key_verify_through_a_rotation(
    settings: Settings, clean_db: Database
) -> None:
    _some_events(clean_db, 2)
    old_key = settings.chain_key.get_secret_value()
    rotated = settings.model_copy(
        update={
            "chain_key": type(settings.chain_key)("a-new-chain-key-after-the-rotation-0123"),
            "chain_key_previous": settings.chain_key,
        }
    )
    database = database_of(rotated)
    try:
        assert _chain(database).ok  # sealed with the previous key, which is still configured
        _some_events(database, 1)  # sealed again, with the new key
        assert _chain(database).ok
        retired = database_of(rotated.model_copy(update={"chain_key_previous": None}))
        assert _chain(retired).ok
        forgotten = database_of(settings)  # only the old key: the new seal cannot be checked
        try:
            [problem] = _chain(forgotten).problems
            assert "not configured" in problem.reason
        finally:
            forgotten.dispose()
            retired.dispose()
    finally:
        database.dispose()
    assert old_key != rotated.chain_key.get_secret_value()


def test_coin_verify_chain_names_the_rows_that_disagree(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider = make_provider()
    report_id = submit_report(client, provider, make_request(6))["report_id"]
    _settled(database)
    for name, value in TEST_ENV.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        intact = CliRunner().invoke(build_app(), ["verify-chain"])
        assert intact.exit_code == 0, intact.output
        assert "audit trail intact" in intact.output and "1 reports" in intact.output
        _tamper(database, f"UPDATE reports SET model = 'cheaper' WHERE id = '{report_id}'")
        broken = CliRunner().invoke(build_app(), ["verify-chain"])
    finally:
        get_settings.cache_clear()
    assert broken.exit_code == 1
    assert f"reports {report_id}: the row differs from what its event recorded" in broken.output
    assert f"reports {report_id}: model differ from the report's body" in broken.output


def test_the_integrity_job_records_its_finding_for_the_metrics(
    client: TestClient,
    settings: Settings,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    database: Database,
) -> None:
    provider = make_provider()
    report_id = submit_report(client, provider, make_request(7))["report_id"]
    _settled(database)
    context = ServiceContext.from_settings(settings)
    try:
        assert integrity_check(context) == 0
        _tamper(database, f"UPDATE reports SET input_tokens = 1 WHERE id = '{report_id}'")
        assert integrity_check(context) == 2
    finally:
        context.close()
    metrics = client.get("/metrics", headers=ADMIN).text
    assert "coin_integrity_problems 2.0" in metrics
    assert "coin_integrity_checked_timestamp_seconds" in metrics
