"""Schema migrations from code: `coin migrate`, the embedded default's first start, and the tests.

The Alembic scripts ship inside the installed package `migrations`, so an installed service (the Docker
image, `pip install coin-audit[service]`) migrates without a checkout; `alembic.ini` beside the
checkout is only for writing new revisions with the `alembic` command.
"""

from importlib.resources import files
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine


def _scripts() -> str:
    return str(files("migrations"))


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", _scripts())
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_database(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def is_migrated(engine: Engine) -> bool:
    """Whether the database of `engine` is at the latest schema (alembic head) of this version."""
    database = engine.url.database
    if engine.url.get_backend_name() == "sqlite" and database and not Path(database).is_file():
        return False  # not opened: SQLite would leave an empty file behind
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_heads()
    return set(current) == set(ScriptDirectory(_scripts()).get_heads())
