"""The audit store: migrations match the models, and the audit trail detects tampering."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from api.events import append_event, event_hash, verify_chain
from api.models import AuditEvent, Base


def test_migrations_match_the_models(database):
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def _chain_of(database, n):
    with database.unit_of_work() as session:
        for i in range(n):
            append_event(session, "test.event", payload={"i": i, "text": "é ☃"})
    with database.unit_of_work() as session:
        check = verify_chain(session)
    assert check.ok and check.events == n


def test_audit_events_refuse_update_and_delete(clean_db):
    _chain_of(clean_db, 3)
    for statement in (
        "UPDATE audit_events SET kind = 'x' WHERE seq = 2",
        "DELETE FROM audit_events WHERE seq = 2",
    ):
        with pytest.raises(DBAPIError, match="append-only"), clean_db.engine.begin() as connection:
            connection.execute(text(statement))


def _tamper(database, statement):
    """Change the table as someone with full database rights would: with triggers switched off."""
    with database.engine.begin() as connection:
        connection.execute(text("SET LOCAL session_replication_role = replica"))
        connection.execute(text(statement))


def test_chain_detects_an_update(clean_db):
    _chain_of(clean_db, 5)
    _tamper(clean_db, """UPDATE audit_events SET payload = '{"i": 99, "text": "é ☃"}' WHERE seq = 3""")
    with clean_db.unit_of_work() as session:
        check = verify_chain(session)
    assert not check.ok and check.first_bad_seq == 3 and "hash" in (check.reason or "")


def test_chain_detects_an_update_that_recomputes_the_hash(clean_db):
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


def test_chain_detects_a_delete(clean_db):
    _chain_of(clean_db, 5)
    _tamper(clean_db, "DELETE FROM audit_events WHERE seq = 4")
    with clean_db.unit_of_work() as session:
        check = verify_chain(session)
    assert not check.ok and check.first_bad_seq == 4 and "missing" in (check.reason or "")
