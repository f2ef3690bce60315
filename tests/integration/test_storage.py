"""The audit store: migrations match the models, and the audit trail detects tampering."""

import uuid

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from service.database import Database, make_engine
from service.events import NewEvent, append_event, defer_events, event_hash, link_pending_events, verify_chain
from service.migrate import alembic_config, upgrade_database
from service.models import Audit, AuditEvent, Base, PendingEvent, Provider, Report, utcnow
from tests.integration.support import WorkerProcess, wait_for


def test_migrations_match_the_models(database: Database) -> None:
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


# The verdicts table with a plain string outcome, so that the database's CHECK constraint, not the
# model's enum, judges the value.
_VERDICTS = sa.table(
    "verdicts",
    sa.column("id", sa.Uuid()),
    sa.column("audit_id", sa.Uuid()),
    sa.column("outcome", sa.String()),
    sa.column("statement", sa.JSON()),
    sa.column("signature", sa.String()),
    sa.column("signing_key", sa.String()),
    sa.column("decided_at", sa.DateTime(timezone=True)),
)


def _insert_verdict(engine: sa.Engine, outcome: str, **provider_columns: str) -> None:
    """A provider (with `provider_columns` beyond the first schema's), a report, a done audit and its
    verdict saying `outcome`, in one transaction."""
    now = utcnow()
    provider_id, report_id, audit_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with engine.begin() as connection:
        connection.execute(
            sa.insert(Provider).values(
                id=provider_id, name=f"p-{provider_id}", created_at=now, **provider_columns
            )
        )
        connection.execute(
            sa.insert(Report).values(
                id=report_id, provider_id=provider_id, request_id="r", model="m", input_tokens=1,
                output_tokens=2, reasoning_tokens=1, body={}, digest="0" * 64, receipt={},
                receipt_token_hash="0" * 64, received_at=now,
            )
        )  # fmt: skip
        connection.execute(
            sa.insert(Audit).values(
                id=audit_id, report_id=report_id, provider_id=provider_id, status="done", trigger="admin",
                created_at=now, updated_at=now, enqueue_count=1,
            )
        )  # fmt: skip
        connection.execute(
            sa.insert(_VERDICTS).values(
                id=uuid.uuid4(), audit_id=audit_id, outcome=outcome, statement={"outcome": outcome},
                signature="0" * 128, signing_key="0" * 64, decided_at=now,
            )
        )  # fmt: skip


def _outcomes(engine: sa.Engine) -> list[str]:
    with engine.connect() as connection:
        return sorted(connection.scalars(select(_VERDICTS.c.outcome)))


def test_migration_0004_lets_verdicts_say_suspect(migration_url: str) -> None:
    """0004 replaces the CHECK on verdicts.outcome (a table rebuild on SQLite, ALTER on PostgreSQL):
    `suspect` is accepted, anything else still refused; its downgrade refuses to drop a signed
    `suspect` verdict, and without one puts the old constraint back."""
    url = migration_url
    # At 0004 itself: from 0005 on, verdicts are append-only and this test deletes one.
    upgrade_database(url, "0004")
    engine = make_engine(url)
    try:
        _insert_verdict(engine, "suspect")
        for outcome in ("pass", "fail", "inconclusive"):
            _insert_verdict(engine, outcome)
        with pytest.raises(IntegrityError, match="ck_verdicts_outcome_valid"):
            _insert_verdict(engine, "bogus")
        assert _outcomes(engine) == ["fail", "inconclusive", "pass", "suspect"]

        with pytest.raises(RuntimeError, match="1 verdicts say 'suspect'"):
            command.downgrade(alembic_config(url), "0003")
        with engine.begin() as connection:
            connection.execute(sa.delete(_VERDICTS).where(_VERDICTS.c.outcome == "suspect"))
        command.downgrade(alembic_config(url), "0003")
        with pytest.raises(IntegrityError, match="ck_verdicts_outcome_valid"):
            _insert_verdict(engine, "suspect")
        assert _outcomes(engine) == ["fail", "inconclusive", "pass"]  # the rebuild kept the rows

        upgrade_database(url, "0004")
        _insert_verdict(engine, "suspect")
        with pytest.raises(IntegrityError, match="ck_verdicts_outcome_valid"):
            _insert_verdict(engine, "bogus")
    finally:
        engine.dispose()


def _chain_of(database: Database, n: int) -> None:
    with database.unit_of_work() as session:
        for i in range(n):
            append_event(session, "test.event", payload={"i": i, "text": "é ☃"})
    with database.unit_of_work() as session:
        check = verify_chain(session)
    assert check.ok and check.events == n


def test_audit_events_refuse_update_and_delete(clean_db: Database) -> None:
    _chain_of(clean_db, 3)
    for statement in (
        "UPDATE audit_events SET kind = 'x' WHERE seq = 2",
        "DELETE FROM audit_events WHERE seq = 2",
    ):
        with pytest.raises(DBAPIError, match="append-only"), clean_db.engine.begin() as connection:
            connection.execute(text(statement))


def _tamper(database: Database, statement: str) -> None:
    """Change the table as someone with full database rights would: with triggers switched off."""
    with database.engine.begin() as connection:
        connection.execute(text("SET LOCAL session_replication_role = replica"))
        connection.execute(text(statement))


def test_chain_detects_an_update(clean_db: Database) -> None:
    _chain_of(clean_db, 5)
    _tamper(clean_db, """UPDATE audit_events SET payload = '{"i": 99, "text": "é ☃"}' WHERE seq = 3""")
    with clean_db.unit_of_work() as session:
        check = verify_chain(session)
    assert not check.ok and check.first_bad_seq == 3 and "hash" in (check.reason or "")


def test_chain_detects_an_update_that_recomputes_the_hash(clean_db: Database) -> None:
    _chain_of(clean_db, 5)
    with clean_db.unit_of_work() as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.seq == 2)).one()
        event.payload = {"i": 42, "text": "rewritten"}
        forged_hash = event_hash(event)
        session.expunge(event)
    _tamper(
        clean_db,
        f"""UPDATE audit_events SET payload = '{{"i": 42, "text": "rewritten"}}', hash = '{forged_hash}' WHERE seq = 2""",
    )
    with clean_db.unit_of_work() as session:
        check = verify_chain(session)
    assert not check.ok and check.first_bad_seq == 3 and "prev_hash" in (check.reason or "")


def test_chain_detects_a_delete(clean_db: Database) -> None:
    _chain_of(clean_db, 5)
    _tamper(clean_db, "DELETE FROM audit_events WHERE seq = 4")
    with clean_db.unit_of_work() as session:
        check = verify_chain(session)
    assert not check.ok and check.first_bad_seq == 4 and "missing" in (check.reason or "")


def _kinds(database: Database) -> list[str]:
    with database.unit_of_work() as session:
        return list(session.scalars(select(AuditEvent.kind).order_by(AuditEvent.seq)))


def test_deferred_events_are_linked_before_any_later_event(clean_db: Database) -> None:
    with clean_db.unit_of_work() as session:
        defer_events(session, [NewEvent("test.deferred", payload={"i": i}) for i in range(3)])
    with clean_db.unit_of_work() as session:
        defer_events(session, [NewEvent("test.deferred", payload={"i": 3})])
    with clean_db.unit_of_work() as session:
        append_event(session, "test.later")
    # Whoever links them (this append, or a chain writer before it), they precede the later event.
    assert _kinds(clean_db) == ["test.deferred"] * 4 + ["test.later"]
    with clean_db.unit_of_work() as session:
        assert verify_chain(session).ok
        assert session.scalar(select(func.count()).select_from(PendingEvent)) == 0
    assert link_pending_events(clean_db) == 0


def test_deferred_events_roll_back_with_their_transaction(clean_db: Database) -> None:
    with pytest.raises(RuntimeError), clean_db.unit_of_work() as session:
        defer_events(session, [NewEvent("test.deferred")])
        raise RuntimeError("the request failed")
    link_pending_events(clean_db)
    assert _kinds(clean_db) == []


def test_the_worker_links_events_a_crashed_api_left_pending(
    clean_db: Database, worker: WorkerProcess
) -> None:
    # An API process that committed reports and died before its chain writer ran leaves this behind.
    with clean_db.unit_of_work() as session:
        defer_events(session, [NewEvent("test.orphaned", payload={"i": i}) for i in range(5)])
    wait_for(
        lambda: _kinds(clean_db) == ["test.orphaned"] * 5, timeout=30, what="the periodic chain-events job"
    )
    with clean_db.unit_of_work() as session:
        assert verify_chain(session).ok


def test_migration_0009_keeps_earlier_audits_on_the_generator_they_began_with(migration_url: str) -> None:
    """Audits started before 0009 drew their plans with Mersenne Twister: they keep it, so that their
    later rounds follow the plan their first began; every other value of the column is refused."""
    url = migration_url
    upgrade_database(url, "0008")
    engine = make_engine(url)
    try:
        _insert_verdict(engine, "pass", name_key="p")
        upgrade_database(url)
        with engine.connect() as connection:
            row = connection.execute(sa.text("SELECT plan_generator, verification_errors FROM audits")).one()
        assert tuple(row) == ("mt19937", 0)
        with (
            pytest.raises(IntegrityError, match="ck_audits_plan_generator_valid"),
            engine.begin() as connection,
        ):
            connection.execute(sa.text("UPDATE audits SET plan_generator = 'bogus'"))
        command.downgrade(alembic_config(url), "0008")
        columns = {c["name"] for c in sa.inspect(engine).get_columns("audits")}
        assert not {"plan_generator", "verification_errors"} & columns and "exposure_seed" in columns
    finally:
        engine.dispose()
