"""Engine and sessions of the audit store: PostgreSQL in production and tests, a SQLite file by default.

The API and the workers both build a `Database` from the settings; the same models and queries run on
both back ends (row locks become no-ops on SQLite, where a writer holds the whole file anyway).
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

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


@dataclass(frozen=True)
class PoolLimits:
    """Connections per process: `size` kept open, up to `overflow` more under load, and how long a
    request waits for one before it is refused (503) rather than queued without end."""

    size: int = 10
    overflow: int = 30
    timeout_seconds: float = 5.0


def make_engine(database_url: str, pool: PoolLimits = PoolLimits()) -> Engine:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN until the first write; take over so that a
        # transaction starts at its first statement, as on PostgreSQL.
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
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
    """One engine and its session factory (one per process)."""

    def __init__(self, database_url: str, pool: PoolLimits = PoolLimits()) -> None:
        self.engine = make_engine(database_url, pool)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
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

    def dispose(self) -> None:
        self.engine.dispose()
