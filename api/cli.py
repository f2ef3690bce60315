"""The service's commands (`coin api`, `worker`, `beat`, `migrate`, `verify-chain`, `demo`, `staff`,
`policy`, `calibrate`, `schedule-key`, `verify-verdict`, `verify-receipt`).

`app` is a plain `typer.Typer()` that the `coin` CLI (`auditor.cli`) loads as a plugin (entry point
group `coin.commands`). Every command reads the settings first: a wrong configuration is one line on
stderr and exit status 2, never a traceback. The worker and beat are started by name (`workers.app`),
so the API never imports the workers.
"""

import dataclasses
import enum
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from api.demo import DEMO_TRACE_FILES
from service.settings import Settings, SettingsError, get_settings

if TYPE_CHECKING:
    from service.database import Database
    from service.models import SamplingPolicy
    from service.monitoring.service import Standing

app = typer.Typer(help="Run the CoIn Audit service.", no_args_is_help=True)


def settings() -> Settings:
    """The service's settings, or one line on stderr and exit status 2."""
    try:
        return get_settings()
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _migrated(database: "Database") -> "Database":
    """`database` if its schema is this version's latest, or one line on stderr and exit status 2: on
    an older or empty schema a command fails half-way on a missing table (`calibrate` after its whole
    audit)."""
    from sqlalchemy.exc import OperationalError

    from service.database import display_url
    from service.migrate import is_migrated

    where = display_url(database.engine.url)
    try:
        ready = is_migrated(database.engine)
    except OperationalError as exc:
        database.dispose()
        reason = str(exc.orig).strip().partition("\n")[0]  # the driver's reason, without SQLAlchemy's notes
        typer.echo(f"error: cannot open the database at {where}: {reason}", err=True)
        raise typer.Exit(2) from None
    if not ready:
        database.dispose()
        typer.echo(f"error: the database at {where} is not migrated: run coin migrate", err=True)
        raise typer.Exit(2)
    return database


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
    """Run Celery beat: every job declared with a period (`@job(..., every=...)`: expire challenges,
    sweep audits, link events, draw scheduled audits, check integrity, deliver webhooks)."""
    _require_broker()
    os.makedirs(os.path.dirname(schedule_file) or ".", exist_ok=True)
    _celery(["beat", "-s", schedule_file, "-l", loglevel])


@app.command("verify-chain")
def verify_chain() -> None:
    """Check the audit trail (every link and hash, and the seal of its head) and every report, verdict
    and audit row against the events that vouch for them; exit 1 naming each row that disagrees."""
    from service.context import database_of
    from service.integrity import check_integrity

    database = _migrated(database_of(settings()))
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
        Path | None,
        typer.Option(
            help=f"folder holding the traces {' and '.join(DEMO_TRACE_FILES)} (default: ../shared/data/traces)"
        ),
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
    # Checked before the demo migrates, starts the API and loads the model, which take a while.
    missing = [name for name in DEMO_TRACE_FILES if not (found / name).is_file()]
    if missing:
        typer.echo(f"error: --traces-dir {found} lacks the demo's traces {', '.join(missing)}", err=True)
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

    database = _migrated(Database(settings().database_url))  # before the password is typed for nothing
    try:
        password = _password(password_stdin)
        with database.unit_of_work() as session:
            account = create_staff(session, email, password)
    except ServiceError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    finally:
        database.dispose()
    typer.echo(f"staff account {account.email} created; sign in at /dashboard")


def _password(from_stdin: bool) -> str:
    """The new account's password, from one line of stdin or a prompt; exit status 2 if it is not text."""
    try:
        if from_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        # Bytes that are not UTF-8 arrive as a decoding error, or (with the surrogateescape error handler
        # of a C or UTF-8 locale) as lone surrogates, which cannot be hashed.
        password.encode("utf-8")
    except UnicodeError:
        typer.echo("error: the password is not UTF-8 text", err=True)
        raise typer.Exit(2) from None
    return password


class PolicyAction(enum.StrEnum):
    SHOW = "show"
    SET = "set"


def _percent(value: float) -> str:
    return f"{value:.2%}"


def _describe_policy(policy: "SamplingPolicy | None", retention_days: int) -> list[str]:
    if policy is None:
        return ["sampling policy: none (not audited on a schedule; `coin policy set` gives it one)"]
    lines = [
        f"sampling policy: domain {policy.domain}; {_percent(policy.share)} of reports and at least "
        f"{policy.min_per_day} a day (escalated: {_percent(policy.escalated_share)}, "
        f"{policy.escalated_min_per_day} a day); drawn within {retention_days} days of receipt",
        f"  escalates after a failed audit, an alarm, or an e-value >= {policy.warning_e_value:g}; back to "
        f"base after {policy.clean_audits} consecutive passing audits",
    ]
    if policy.escalated:
        assert policy.escalation_reason is not None and policy.escalated_at is not None
        lines.append(
            f"  ESCALATED since {policy.escalated_at:%Y-%m-%d %H:%M:%S} UTC ({policy.escalation_reason.value}); "
            f"{policy.clean_streak} of {policy.clean_audits} clean audits so far"
        )
    else:
        lines.append("  at base")
    return lines


def _describe_standing(standing: "Standing") -> list[str]:
    alarm = "no alarm"
    if standing.alarm is not None:
        alarm = f"ALARM ({standing.alarm.value}) at audit {standing.alarm_at}"
    low, high = standing.token_share_interval
    return [
        f"monitor {standing.period} (calibration {standing.calibration}): {standing.audits} audits, "
        f"{standing.proof_failures} proof failures; e-value {standing.e_value:.3g} (largest "
        f"{standing.max_e_value:.3g}, alarm at {1 / standing.alpha:g}); {alarm}",
        f"  inflated reports >= {_percent(standing.inflated_reports_lower)}; inflated share of billed "
        f"tokens in [{_percent(low)}, {_percent(high)}] ({standing.confidence:.0%}, anytime)",
    ]


@app.command("policy")
def policy(
    action: Annotated[
        PolicyAction, typer.Argument(help="show: the policy and the monitor's standing; set: set the policy")
    ],
    provider: Annotated[str, typer.Option(help="the provider's id or name")],
    domain: Annotated[
        str | None, typer.Option(help="set: the provider's domain (default: the current policy's)")
    ] = None,
    share: Annotated[
        float | None, typer.Option(help="set: the share of reports drawn for audit, 0..1")
    ] = None,
    min_per_day: Annotated[int | None, typer.Option(help="set: audits drawn per UTC day at least")] = None,
    escalated_share: Annotated[
        float | None, typer.Option(help="set: the share while escalated (default: 4 x share)")
    ] = None,
    escalated_min_per_day: Annotated[
        int | None, typer.Option(help="set: the minimum per day while escalated (default: 4 x min-per-day)")
    ] = None,
    clean_audits: Annotated[
        int | None, typer.Option(help="set: consecutive passing audits that end an escalation (default 5)")
    ] = None,
    warning_e_value: Annotated[
        float | None, typer.Option(help="set: the e-value that escalates the policy (default 10)")
    ] = None,
) -> None:
    """Show or set a provider's sampling policy: `coin policy show --provider NAME` (with its monitor's
    standing), `coin policy set --provider NAME --share 0.02 --min-per-day 5 [--domain math]`. Like
    PUT /v1/providers/{id}/policy, a term left out takes its default; recorded in the audit trail."""
    from service.context import database_of
    from service.errors import ServiceError
    from service.monitoring.service import standing
    from service.providers.service import find_provider
    from service.scheduling.service import PolicyTerms, get_policy, set_policy

    configured = settings()
    database = _migrated(database_of(configured))
    try:
        with database.unit_of_work() as session:
            found = find_provider(session, provider)
            current = get_policy(session, found)
            if action == PolicyAction.SET:
                if share is None or min_per_day is None:
                    typer.echo("error: `coin policy set` needs --share and --min-per-day", err=True)
                    raise typer.Exit(2)
                chosen_domain = domain or (current.domain if current is not None else None)
                if chosen_domain is None:
                    typer.echo("error: a new policy needs --domain", err=True)
                    raise typer.Exit(2)
                given = PolicyTerms(chosen_domain, share, min_per_day, escalated_share, escalated_min_per_day)
                terms = dataclasses.replace(
                    given,
                    clean_audits=given.clean_audits if clean_audits is None else clean_audits,
                    warning_e_value=given.warning_e_value if warning_e_value is None else warning_e_value,
                )
                current = set_policy(session, found, terms, actor="cli")
            lines = [f"provider {found.name} ({found.id})"]
            lines += _describe_policy(current, configured.retention_days)
            lines += _describe_standing(standing(session, found.id))
    except ServiceError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    finally:
        database.dispose()
    for line in lines:
        typer.echo(line)


@app.command("schedule-key")
def schedule_key(
    day: Annotated[str, typer.Option(help="the UTC day whose draws to justify, YYYY-MM-DD")],
) -> None:
    """Print the key that scored a past day's scheduled draws (hex), to publish: with it anyone
    recomputes each draw's score, HMAC-SHA256(key, report id), and checks it against the draw's share
    or rank (the `schedule.drawn` events), without learning any other day's key. Refused while the day's
    key could still decide a draw."""
    from datetime import date

    from service.context import ServiceContext
    from service.errors import ServiceError
    from service.models import utcnow
    from service.scheduling.draws import disclosable_day_key

    try:
        chosen = date.fromisoformat(day)
    except ValueError:
        typer.echo(f"error: --day: a date, YYYY-MM-DD (not {day!r})", err=True)
        raise typer.Exit(2) from None
    context = ServiceContext.from_settings(settings())
    _migrated(context.db)
    try:
        with context.db.unit_of_work() as session:
            key = disclosable_day_key(session, context, chosen, utcnow())
    except ServiceError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    finally:
        context.close()
    typer.echo(f"{chosen.isoformat()} key {key.hex()} (schedule key {context.schedule_key.key_id})")


@app.command("calibrate")
def calibrate(
    domain: Annotated[str, typer.Option(help="the domain the traces are references of (e.g. math)")],
    traces: Annotated[
        Path,
        typer.Option(
            help="JSON lines, one honest trace the auditor produced itself per line: reasoning, answer "
            "(and optionally id, domain)"
        ),
    ],
) -> None:
    """Calibrate a domain on honest reference traces: their repetition profiles set the domain's copy
    rule (the shipped thresholds, raised where 50 references or more copy more), then each is
    committed with the SDK and audited in this process under that rule with the shipped heads; their
    scores give the domain's null bound. Both are stored as the next version of the domain's
    calibration: providers of the domain get the copy rule from their next audit, the null bound from
    their next period."""
    from auditor.protocol.copies import COPY_RULE
    from service.context import database_of
    from service.monitoring.calibration import register_calibration, shipped_calibration
    from service.monitoring.references import (
        audit_references,
        checkpoint_in_use,
        read_reference_traces,
        reference_copy_rule,
    )
    from service.scheduling.service import DOMAIN_PATTERN

    configured = settings()
    if not DOMAIN_PATTERN.match(domain):
        typer.echo("error: --domain: lower-case letters, digits, '_', '.' and '-', at most 64", err=True)
        raise typer.Exit(2)
    try:
        references = read_reference_traces(traces, domain)
        copy_rule = reference_copy_rule(references, domain)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    database = _migrated(database_of(configured))  # before the audit, which takes minutes
    try:
        typer.echo(
            f"copy rule of {domain}: fail above copied {copy_rule.copied:.0%} or repeated "
            f"{copy_rule.repeated:.0%} (shipped: {COPY_RULE.copied:.0%}, {COPY_RULE.repeated:.0%})"
        )
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        heads, embd_id = checkpoint_in_use(configured)
        typer.echo(f"auditing {len(references)} reference traces of {domain} with {heads}")
        audits = audit_references(
            configured,
            references,
            copy_rule,
            lambda audit: typer.echo(
                f"  {audit.trace_id}: {audit.outcome}, score {audit.evidence.score():.3g}"
            ),
        )
        with database.unit_of_work() as session:
            calibration = register_calibration(
                session,
                domain,
                [a.evidence.score() for a in audits],
                copy_rule=copy_rule,
                heads=heads,
                embd_id=embd_id,
                actor="cli",
            )
            label, bound = calibration.label, calibration.policy["bound"]
    finally:
        database.dispose()
    shipped = shipped_calibration().policy.bound
    typer.echo(
        f"calibration {label}: {len(audits)} traces; null bound {', '.join(f'{r:.3g}' for r in bound['rates'])} "
        f"below {', '.join(f'{t:g}' for t in bound['thresholds'])} (shipped: "
        f"{', '.join(f'{r:.3g}' for r in shipped.rates)}); providers of {domain} use it from their next period, "
        "its copy rule from their next audit"
    )
    if heads != shipped_calibration().heads:
        typer.echo(
            f"warning: {heads} is not the shipped checkpoint: no monitor will use this calibration's null "
            "bound (its copy rule applies)",
            err=True,
        )


@dataclasses.dataclass(frozen=True)
class _SignedKind:
    """Where a signed statement of one kind keeps its parts, as the API returns it."""

    noun: str
    version_prefix: str  # a receipt is no verdict: both are signed with the same key
    statement_field: str
    key_field: str  # the signer's key as the document states it (compared with --key, never trusted)
    key_in_statement: bool
    wrapper: str | None  # a whole API answer holding the signed document under this field
    subject: Callable[[dict[str, Any]], str]  # what a valid one says, in the line that names it valid


_VERDICT = _SignedKind(
    "verdict", "coin-verdict/", "statement", "signing_key", False, "verdict",
    lambda s: f"outcome {s.get('outcome')} for audit {s.get('audit_id')}",
)  # fmt: skip
_RECEIPT = _SignedKind(
    "receipt", "coin-receipt/", "receipt", "auditor_key", True, None,
    lambda s: f"report {s.get('report_id')} received at {s.get('received_at')}",
)  # fmt: skip
_KEY_HELP = "the auditor's public key (64 hex digits, from GET /v1/auditor) that must have signed it"


def _unique_members(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A JSON object whose every name appears once: with a name twice, readers disagree on its value."""
    members = dict(pairs)
    if len(members) != len(pairs):
        names = [name for name, _ in pairs]
        raise ValueError(f"the name {next(n for n in names if names.count(n) > 1)!r} appears twice")
    return members


def _check_signed(path: Path, key: str, kind: _SignedKind) -> None:
    """Check a signed statement offline against the auditor's key given by the user: Ed25519 over the
    RFC 8785 canonical JSON of the statement. Exit 0 if valid, 1 if the signature or the signer does not
    hold, 2 if the file is not such a statement."""
    from auditor.protocol.encoding import canonical_json
    from auditor.protocol.errors import EncodingError
    from service.security import verify_signature

    if not re.fullmatch(r"[0-9a-fA-F]{64}", key):
        typer.echo(f"error: --key: expected the auditor's public key as 64 hex digits, got {key!r}", err=True)
        raise typer.Exit(2)
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        typer.echo(f"error: {path}: cannot read ({reason})", err=True)
        raise typer.Exit(2) from None
    expected = (
        f"{kind.statement_field} (an object), signature (128 hex digits), {kind.key_field} (64 hex digits)"
    )
    try:
        document = json.loads(text, object_pairs_hook=_unique_members)
        if kind.wrapper and isinstance(document, dict) and kind.wrapper in document:
            document = document[kind.wrapper]
        if not isinstance(document, dict):
            raise TypeError
        statement, signature = document[kind.statement_field], document["signature"]
        if not isinstance(statement, dict):
            raise TypeError
        signer = (statement if kind.key_in_statement else document)[kind.key_field]
        if not (isinstance(signature, str) and isinstance(signer, str)):
            raise TypeError
        if not (re.fullmatch(r"[0-9a-fA-F]{64}", signer) and re.fullmatch(r"[0-9a-fA-F]{128}", signature)):
            raise TypeError
        version = statement.get("version")
        if not (isinstance(version, str) and version.startswith(kind.version_prefix)):
            typer.echo(
                f"error: not a {kind.noun}: its statement's version is {version!r}, not {kind.version_prefix}…",
                err=True,
            )
            raise typer.Exit(2)
        canonical_json(statement)  # what the signature covers; a NaN or a huge integer has none
    except EncodingError as exc:
        typer.echo(f"error: not a {kind.noun}: its statement {exc}", err=True)
        raise typer.Exit(2) from None
    except ValueError as exc:  # JSON that does not parse, or a name twice
        typer.echo(f"error: not a {kind.noun}: {exc}", err=True)
        raise typer.Exit(2) from None
    except (TypeError, KeyError):
        typer.echo(f"error: not a {kind.noun}: expected {expected}", err=True)
        raise typer.Exit(2) from None
    if key.lower() != signer.lower():
        typer.echo(f"INVALID: signed by {signer}, not by the expected auditor key {key}", err=True)
        raise typer.Exit(1)
    if not verify_signature(key, statement, signature):
        typer.echo("INVALID: the signature does not match the statement", err=True)
        raise typer.Exit(1)
    typer.echo(
        f"valid {version} {kind.noun}: {kind.subject(statement)} (request {statement.get('request_id')}), signed by {key.lower()}"
    )


@app.command("verify-verdict")
def verify_verdict(
    path: Annotated[
        Path,
        typer.Argument(
            help="the verdict as JSON, {statement, signature, signing_key} (`verdict` of GET /v1/audits/{id}, "
            "or the dashboard's verdict.json); - for stdin"
        ),
    ],
    key: Annotated[str, typer.Option(help=_KEY_HELP)],
) -> None:
    """Check a signed verdict offline: Ed25519 over the RFC 8785 canonical JSON of its statement.
    Exit 0 if valid, 1 if the signature or the key does not hold, 2 if the file is not a verdict."""
    _check_signed(path, key, _VERDICT)


@app.command("verify-receipt")
def verify_receipt(
    path: Annotated[
        Path,
        typer.Argument(
            help="the receipt as JSON, {receipt, signature} (the answer of POST /v1/reports); - for stdin"
        ),
    ],
    key: Annotated[str, typer.Option(help=_KEY_HELP)],
) -> None:
    """Check a signed receipt offline: Ed25519 over the RFC 8785 canonical JSON of the receipt.
    Exit 0 if valid, 1 if the signature or the key does not hold, 2 if the file is not a receipt."""
    _check_signed(path, key, _RECEIPT)
