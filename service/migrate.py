"""Schema migrations from code: `coin migrate`, the embedded default's first start, and the tests.

The Alembic scripts ship inside the installed package `migrations`, so an installed service (the Docker
image, `pip install coin-audit[service]`) migrates without a checkout; `alembic.ini` beside the
checkout is only for writing new revisions with the `alembic` command.
"""

from importlib.resources import files

from alembic import command
from alembic.config import Config


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("migrations")))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_database(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)
