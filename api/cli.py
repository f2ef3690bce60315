"""The service's commands (`coin api`, `worker`, `beat`, `migrate`, `verify-chain`, `demo`).

`app` is a plain `typer.Typer()` that the `coin` CLI (`auditor.cli`) loads as a plugin (entry point
group `coin.commands`). Every command reads the settings first: a wrong configuration is one line on
stderr and exit status 2, never a traceback. The worker and beat are started by name (`workers.app`),
so the API never imports the workers.
"""

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from service.settings import Settings, SettingsError, get_settings

app = typer.Typer(help="Run the CoIn Audit service.", no_args_is_help=True)


def settings() -> Settings:
    """The service's settings, or one line on stderr and exit status 2."""
    try:
        return get_settings()
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command("migrate")
def migrate() -> None:
    """Bring the database of COIN_DATABASE_URL to the latest schema (alembic upgrade head)."""
    from service.migrate import upgrade_database

    upgrade_database(settings().database_url)
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

    configured = settings()
    if migrate_first if migrate_first is not None else configured.database_url.startswith("sqlite"):
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
    """Run Celery beat: the jobs that have a period (expire challenges, sweep audits, link events)."""
    _require_broker()
    os.makedirs(os.path.dirname(schedule_file) or ".", exist_ok=True)
    _celery(["beat", "-s", schedule_file, "-l", loglevel])


@app.command("verify-chain")
def verify_chain() -> None:
    """Recompute the hash chain of the audit trail; exit 1 at the first altered or missing event."""
    from service.database import Database
    from service.events import pending_count
    from service.events import verify_chain as check

    database = Database(settings().database_url)
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
    if not settings().broker_url:
        typer.echo("COIN_BROKER_URL is unset: tasks run inside `coin api`; no worker is needed", err=True)
        raise typer.Exit(2)


def _celery(args: list[str]) -> None:
    """Become the Celery command for `workers.app` (named, not imported: the API never imports workers)."""
    command = [sys.executable, "-m", "celery", "-A", "workers.app", *args]
    os.execv(command[0], command)


@app.command("demo")
def demo(
    traces_dir: Annotated[
        Path | None, typer.Option(help="folder of traces *.jsonl (default: ../shared/data/traces)")
    ] = None,
    per_behaviour: int = typer.Option(2, help="traces per simulated provider behaviour"),
    serve: bool = typer.Option(False, "--serve", help="keep the API up after the demo"),
) -> None:
    """Simulated providers push real traces through the REST API on the embedded default (SQLite,
    in-process tasks); each is audited and the verdicts are printed."""
    from api.demo.run import DEMO_DATABASE, find_traces_dir, run_demo

    found = traces_dir or find_traces_dir()
    if found is None or not found.is_dir():
        typer.echo("error: no traces folder; pass --traces-dir (the demo reads *.jsonl traces)", err=True)
        raise typer.Exit(2)
    run_demo(found, per_behaviour, serve, DEMO_DATABASE.resolve())  # prints as it goes
