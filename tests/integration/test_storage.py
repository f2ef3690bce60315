"""The audit store: migrations match the models, and the audit trail detects tampering."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from service.events import NewEvent, append_event, defer_events, event_hash, link_pending_events, verify_chain
from service.models import AuditEvent, Base, PendingEvent
from tests.integration.support import wait_for


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


def _kinds(database):
    with database.unit_of_work() as session:
        return list(session.scalars(select(AuditEvent.kind).order_by(AuditEvent.seq)))


def test_deferred_events_are_linked_before_any_later_event(clean_db):
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


def test_deferred_events_roll_back_with_their_transaction(clean_db):
    with pytest.raises(RuntimeError), clean_db.unit_of_work() as session:
        defer_events(session, [NewEvent("test.deferred")])
        raise RuntimeError("the request failed")
    link_pending_events(clean_db)
    assert _kinds(clean_db) == []


def test_the_worker_links_events_a_crashed_api_left_pending(clean_db, worker):
    # An API process that committed reports and died before its chain writer ran leaves this behind.
    with clean_db.unit_of_work() as session:
        defer_events(session, [NewEvent("test.orphaned", payload={"i": i}) for i in range(5)])
    wait_for(
        lambda: _kinds(clean_db) == ["test.orphaned"] * 5, timeout=30, what="the periodic chain-events job"
    )
    with clean_db.unit_of_work() as session:
        assert verify_chain(session).ok
