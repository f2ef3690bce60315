"""The service's commands (`coin api`, `worker`, `beat`, `migrate`, `verify-chain`, `demo`, `staff`,
`verify-verdict`).

`app` is a plain `typer.Typer()` that the `coin` CLI (`auditor.cli`) loads as a plugin (entry point
group `coin.commands`). Every command reads the settings first: a wrong configuration is one line on
stderr and exit status 2, never a traceback. The worker and beat are started by name (`workers.app`),
so the API never imports the workers.
"""

import enum
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
    timeout_keep_alive: int = typer.Option(5, help="seconds an idle keep-alive connection is kept open"),
    limit_concurrency: int = typer.Option(
        1000, help="connections and requests at once per worker process; beyond, new ones get 503"
    ),
) -> None:
    """Serve the REST API with uvicorn (tasks run in-process when COIN_BROKER_URL is unset).

    With several workers, /metrics sums every process through PROMETHEUS_MULTIPROC_DIR: a fresh
    directory is made for this run when the variable is unset (share it with the Celery workers on
    this host to include theirs)."""
    import tempfile

    import uvicorn

    configured = settings()
    if migrate_first if migrate_first is not None else configured.database_url.startswith("sqlite"):
        migrate()
    if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="coin-metrics-")
    uvicorn.run(
        "api.main:app",
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        timeout_keep_alive=timeout_keep_alive,
        limit_concurrency=limit_concurrency,
    )


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
    """Check the audit trail (every link and hash, and the seal of its head) and every report, verdict
    and audit row against the events that vouch for them; exit 1 naming each row that disagrees."""
    from service.context import database_of
    from service.integrity import check_integrity

    database = database_of(settings())
    try:
        result = check_integrity(database)
    finally:
        database.dispose()
    rows = ", ".join(f"{count} {table}" for table, count in result.rows.items())
    if result.ok:
        typer.echo(
            f"audit trail intact: {result.events} events ({result.pending} committed, not yet linked); "
            f"{rows} agree with it"
        )
        return
    typer.echo(
        f"audit trail BROKEN: {result.problem_count} problems ({result.events} events, {rows})", err=True
    )
    for problem in result.problems:
        typer.echo(f"  {problem}", err=True)
    if result.problem_count > len(result.problems):
        typer.echo(f"  … and {result.problem_count - len(result.problems)} more", err=True)
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


class StaffAction(enum.StrEnum):
    ADD = "add"


@app.command("staff")
def staff(
    action: Annotated[StaffAction, typer.Argument(help="add: create a staff account")],
    email: Annotated[str, typer.Option(help="the account's email address (its sign-in name)")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from stdin, not a prompt")
    ] = False,
) -> None:
    """Create a staff account for the dashboard (/dashboard): `coin staff add --email …` asks for the
    password twice, or reads one line from stdin with --password-stdin."""
    from service.database import Database
    from service.errors import ServiceError
    from service.staff.service import create_staff

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    database = Database(settings().database_url)
    try:
        with database.unit_of_work() as session:
            account = create_staff(session, email, password)
    except ServiceError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    finally:
        database.dispose()
    typer.echo(f"staff account {account.email} created; sign in at /dashboard")


@app.command("verify-verdict")
def verify_verdict(
    path: Annotated[
        Path,
        typer.Argument(
            help="the verdict as JSON, {statement, signature, signing_key} (`verdict` of GET /v1/audits/{id}, "
            "or the dashboard's verdict.json); - for stdin"
        ),
    ],
    key: Annotated[
        str | None,
        typer.Option(help="the auditor's public key (hex, from GET /v1/auditor) that must have signed it"),
    ] = None,
) -> None:
    """Check a signed verdict offline: Ed25519 over the RFC 8785 canonical JSON of its statement.
    Exit 0 if valid, 1 if the signature or the key does not hold, 2 if the file is not a verdict."""
    import json

    from service.security import verify_signature

    try:
        document = json.loads(sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8"))
        verdict = document.get("verdict", document) if isinstance(document, dict) else {}
        statement, signature, signing_key = (verdict[k] for k in ("statement", "signature", "signing_key"))
        if not (isinstance(statement, dict) and isinstance(signature, str) and isinstance(signing_key, str)):
            raise TypeError
    except (OSError, ValueError, TypeError, KeyError) as exc:
        expected = "expected statement, signature, signing_key"
        typer.echo(f"error: not a verdict ({type(exc).__name__}): {expected}", err=True)
        raise typer.Exit(2) from None
    if key is not None and key.lower() != signing_key.lower():
        typer.echo(f"INVALID: signed by {signing_key}, not by the expected auditor key {key}", err=True)
        raise typer.Exit(1)
    if not verify_signature(signing_key, statement, signature):
        typer.echo("INVALID: the signature does not match the statement", err=True)
        raise typer.Exit(1)
    typer.echo(
        f"valid {statement.get('version')} verdict: outcome {statement.get('outcome')} for audit "
        f"{statement.get('audit_id')} (request {statement.get('request_id')}), signed by {signing_key}"
    )
    if key is None:
        typer.echo("note: pass --key <the auditor's public key> to check who signed it", err=True)
