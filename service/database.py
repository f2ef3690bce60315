"""Engine and sessions of the audit store: PostgreSQL in production and tests, a SQLite file by default.

The API and the workers both build a `Database` from the settings; the same models and queries run on
both back ends (row locks become no-ops on SQLite, where a writer holds the whole file anyway).
"""

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import psycopg
from sqlalchemy import Engine, Table, create_engine, event
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from service.jsonio import dumps_text
from service.settings import SERVICE_FOLDER

_BEFORE_COMMIT = "coin_before_commit"
_AFTER_COMMIT = "coin_after_commit"


def before_commit(session: Session, action: Callable[[], None]) -> None:
    """Run `action` inside the transaction of `session`, as the last thing before it commits."""
    session.info.setdefault(_BEFORE_COMMIT, []).append(action)


def _run_before_commit(session: Session) -> None:
    for action in session.info.pop(_BEFORE_COMMIT, []):
        action()


def after_commit(session: Session, action: Callable[[], None]) -> None:
    """Run `action` after the unit of work that owns `session` commits."""
    session.info.setdefault(_AFTER_COMMIT, []).append(action)


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


class RowStream:
    """Rows for one table, sent to the database chunk by chunk as the caller produces them."""

    def __init__(
        self, session: Session, model: type[DeclarativeBase], skip_conflicts_on: Sequence[str]
    ) -> None:
        self._session = session
        self._table = cast(Table, model.__table__)
        self._skip_conflicts_on = skip_conflicts_on
        self._postgres = is_postgres(session)
        self._from_json = self._from_json_statement() if self._postgres else ""
        self._results: list[Any] = []  # per sent chunk: a cursor (PostgreSQL) or the row count
        self.inserted = 0  # rows inserted, once the stream is closed

    def send(self, rows: list[dict[str, Any]]) -> None:
        """Insert `rows` (every column given), skipping those that would break the unique index on
        `skip_conflicts_on`; on PostgreSQL without waiting for the server to finish."""
        if not rows:
            return
        if self._postgres:
            self._results.append(_driver(self._session).execute(self._from_json, [dumps_text(rows)]))
            return
        statement = sqlite.insert(self._table)
        if self._skip_conflicts_on:
            statement = statement.on_conflict_do_nothing(
                index_elements=[self._table.c[name] for name in self._skip_conflicts_on]
            )
        # preserve_rowcount: else -1 for a multi-row execution
        self._results.append(
            self._session.connection()
            .execute(statement.execution_options(preserve_rowcount=True), rows)
            .rowcount
        )

    def _from_json_statement(self) -> str:
        # One parameter whatever the number of rows: the rows travel as one JSON document (written by
        # orjson, in C) that the server turns back into records. An executemany would send a statement
        # per row, and turning rows of a dozen values into parameters costs the driver (in Python) more
        # than the server's insert.
        names = ", ".join(column.name for column in self._table.columns)
        conflict = ""
        if self._skip_conflicts_on:
            conflict = f" ON CONFLICT ({', '.join(self._skip_conflicts_on)}) DO NOTHING"
        return (
            f"INSERT INTO {self._table.name} ({names}) SELECT {names} "
            f"FROM jsonb_populate_recordset(NULL::{self._table.name}, %s::jsonb){conflict}"
        )

    def close(self) -> None:
        """Count what was inserted (on PostgreSQL, once the pipeline has synced)."""
        self.inserted = sum(
            result if isinstance(result, int) else result.rowcount for result in self._results
        )


def _driver(session: Session) -> psycopg.Connection[Any]:
    driver = session.connection().connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    return driver


@contextmanager
def streamed_insert(
    session: Session, model: type[DeclarativeBase], *, skip_conflicts_on: Sequence[str] = ()
) -> Iterator[RowStream]:
    """Insert rows into the table of `model`, in the caller's transaction, as the block sends them.

    On PostgreSQL the chunks go through the driver's pipeline mode: the server inserts one chunk while
    the caller prepares the next, and the block's exit waits for them all (raising the first error).
    `RowStream.inserted` is the number of rows inserted, after the block."""
    stream = RowStream(session, model, skip_conflicts_on)
    if is_postgres(session):
        with _driver(session).pipeline():
            yield stream
    else:
        yield stream
    stream.close()


def insert_rows(
    session: Session,
    model: type[DeclarativeBase],
    rows: list[dict[str, Any]],
    *,
    skip_conflicts_on: Sequence[str] = (),
) -> int:
    """Insert `rows` at once (see `streamed_insert`); returns the number inserted."""
    with streamed_insert(session, model, skip_conflicts_on=skip_conflicts_on) as stream:
        stream.send(rows)
    return stream.inserted


@dataclass(frozen=True)
class PoolLimits:
    """Connections per process: `size` kept open, up to `overflow` more under load, and how long a
    request waits for one before it is refused (503) rather than queued without end."""

    size: int = 10
    overflow: int = 30
    timeout_seconds: float = 5.0


def display_url(url: URL) -> str:
    """`url` to show: its password masked and its query, which may carry one too, left out."""
    return url.set(query={}).render_as_string(hide_password=True)


def make_engine(database_url: str, pool: PoolLimits = PoolLimits()) -> Engine:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and Path(url.database).parent == SERVICE_FOLDER:
            SERVICE_FOLDER.mkdir(exist_ok=True)  # the service's own folder; any other must exist
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN until the first write; take over so that a
        # transaction starts at its first statement, as on PostgreSQL.
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    # No pre-ping: it would cost every request a round trip. A connection that a database restart broke
    # fails its request with 503 (OperationalError) and is discarded by the pool; the client retries.
    return create_engine(
        url,
        json_serializer=dumps_text,
        pool_size=pool.size,
        max_overflow=pool.overflow,
        pool_timeout=pool.timeout_seconds,
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


class Database:
    """One engine and its session factory (one per process). `session_info` is put in every session's
    `Session.info` (the chain keys: `service.events.chain_session_info`)."""

    def __init__(
        self,
        database_url: str,
        pool: PoolLimits = PoolLimits(),
        *,
        session_info: Mapping[str, Any] | None = None,
    ) -> None:
        self.engine = make_engine(database_url, pool)
        self.session_info = dict(session_info or {})
        self.sessions = sessionmaker(self.engine, expire_on_commit=False, info=dict(self.session_info))
        # On the session event rather than in `unit_of_work`, so that no commit path can skip them.
        event.listen(self.sessions, "before_commit", _run_before_commit)

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def unit_of_work(self) -> Iterator[Session]:
        """One transaction: commits at the end of the block, or rolls back on any exception.

        Actions registered with `after_commit` run once the commit has succeeded and the session is
        closed (never after a rollback): a task is only announced for state that really exists."""
        session = self.sessions()
        try:
            with session.begin():
                yield session
            actions: list[Callable[[], None]] = session.info.pop(_AFTER_COMMIT, [])
        finally:
            session.close()
        for action in actions:
            action()

    @contextmanager
    def snapshot(self) -> Iterator[Session]:
        """A read-only transaction that sees one consistent state of the whole store, however long it
        reads (REPEATABLE READ on PostgreSQL; a SQLite transaction is serialisable anyway); rolled back."""
        session = self.sessions()
        try:
            if self.is_postgres:
                session.connection(
                    execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
                )
            yield session
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()
