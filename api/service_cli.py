"""Service commands (`coin api`, `coin worker`, `coin beat`, `coin migrate`, `coin verify-chain`).

`app` is a plain `typer.Typer()`; the `coin` CLI (`api/cli.py`) copies its registered commands.
"""

import os
from pathlib import Path
from typing import Annotated

import typer

from api.settings import get_settings

DEFAULT_TRACES_DIR = Path("../shared/data/traces")

app = typer.Typer(help="Run the CoIn Audit service.", no_args_is_help=True)


@app.command("migrate")
def migrate() -> None:
    """Bring the database of COIN_DATABASE_URL to the latest schema (alembic upgrade head)."""
    from api.migrate import upgrade_database

    upgrade_database(get_settings().database_url)
    typer.echo("database schema is up to date")


@app.command("api")
def api(
    host: str = typer.Option("127.0.0.1", help="interface to listen on"),
    port: int = typer.Option(8000, help="TCP port"),
    workers: int = typer.Option(1, help="uvicorn worker processes"),
    migrate_first: bool | None = typer.Option(
        None, "--migrate/--no-migrate", help="upgrade the schema first (default: only for SQLite)"
    ),
) -> None:
    """Serve the REST API with uvicorn (tasks run in-process when COIN_BROKER_URL is unset)."""
    import uvicorn

    settings = get_settings()
    if migrate_first if migrate_first is not None else settings.database_url.startswith("sqlite"):
        migrate()
    uvicorn.run("api.main:app", host=host, port=port, workers=workers, log_level="info")


@app.command("worker")
def worker(
    queues: str = typer.Option("cpu,gpu", help="comma-separated queues to consume"),
    concurrency: int = typer.Option(1, help="pool processes (verification loads the model once per process)"),
    loglevel: str = typer.Option("info"),
) -> None:
    """Run a Celery worker (needs COIN_BROKER_URL)."""
    _require_broker()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _celery(["worker", "-Q", queues, "-c", str(concurrency), "-l", loglevel])


@app.command("beat")
def beat(
    schedule_file: str = typer.Option("var/celerybeat-schedule", help="where beat keeps its last-run times"),
    loglevel: str = typer.Option("info"),
) -> None:
    """Run Celery beat: expire overdue challenges and re-enqueue stuck audits on a schedule."""
    _require_broker()
    os.makedirs(os.path.dirname(schedule_file) or ".", exist_ok=True)
    _celery(["beat", "-s", schedule_file, "-l", loglevel])


@app.command("verify-chain")
def verify_chain() -> None:
    """Recompute the hash chain of the audit trail; exit 1 at the first altered or missing event."""
    from api.database import Database
    from api.events import pending_count
    from api.events import verify_chain as check

    database = Database(get_settings().database_url)
    with database.unit_of_work() as session:
        result = check(session)
        pending = pending_count(session)
    database.dispose()
    if result.ok:
        typer.echo(f"audit trail intact: {result.events} events ({pending} committed, not yet linked)")
        return
    typer.echo(f"audit trail BROKEN at event {result.first_bad_seq}: {result.reason}", err=True)
    raise typer.Exit(1)


def _require_broker() -> None:
    if not get_settings().broker_url:
        typer.echo("COIN_BROKER_URL is unset: tasks run inside `coin api`; no worker is needed", err=True)
        raise typer.Exit(2)


def _celery(args: list[str]) -> None:
    from workers.app import app as celery_app

    celery_app.start(argv=args)


@app.command("demo")
def demo(
    traces_dir: Annotated[Path, typer.Option(help="folder of traces *.jsonl")] = DEFAULT_TRACES_DIR,
    per_behaviour: int = typer.Option(2, help="traces per simulated provider behaviour"),
    serve: bool = typer.Option(False, "--serve", help="keep the API up after the demo"),
) -> None:
    """Simulated providers push real traces through the REST API on the embedded default (SQLite,
    in-process tasks); each is audited and the verdicts are printed."""
    from api.demo import run_demo

    run_demo(traces_dir, per_behaviour, serve)  # prints as it goes
