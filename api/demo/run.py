"""`coin demo`: simulated providers push real traces through the REST API on the embedded default.

One process: a fresh SQLite file, tasks run in-process after each commit, uvicorn on a loopback port.
The auditor admin registers one provider per behaviour; each provider reports its requests, the admin
orders an audit of each, the provider fetches its open challenge and answers it (honestly or not), and
the verdict comes back signed: `fail` names the proof check that caught the provider, `suspect` the
statistical checks that flagged it with their figures and thresholds. With `--serve` the API and the
staff dashboard stay up afterwards, with a demo staff account whose random password is printed.
"""

import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import typer
import uvicorn

from api.demo.providers import BEHAVIOURS, SimulatedReport, demo_traces, simulate
from auditor.protocol.challenge import Challenge
from auditor.protocol.fingerprint import get_embedder

DEMO_DATABASE = Path("var/demo.sqlite3")
# Where the traces lie beside a checkout: ../shared/data/traces, seen from the working directory or from
# the source tree this module was loaded from.
_TRACES = Path("..") / "shared" / "data" / "traces"


def find_traces_dir() -> Path | None:
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (base / _TRACES).is_dir():
            return (base / _TRACES).resolve()
    return None


def report_body(report: SimulatedReport, answer_tokens: int) -> dict[str, Any]:
    """The REST report for one billed request: reasoning_tokens is what the provider bills."""
    billed = report.public.commitment.size
    usage = {"input_tokens": 50, "output_tokens": billed + answer_tokens, "reasoning_tokens": billed}
    return {
        "request_id": f"demo-{report.behaviour.replace(' ', '-')}-{report.trace_id}",
        "model": "demo-reasoner",
        "usage": {**usage, "raw": {"completion_tokens_details": {"reasoning_tokens": billed}}},
        **report.public.to_json(),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class RunningServer:
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self, timeout: float = 30) -> None:
        """Shut down (the app's lifespan included) and wait for it."""
        self.server.should_exit = True
        self.thread.join(timeout)


def start_server(app: Any, port: int) -> RunningServer:
    """Serve `app` on 127.0.0.1:`port` from a thread; returns once it accepts requests."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:  # a failed startup ends the thread
            raise RuntimeError("the API did not start (its log says why)")
        time.sleep(0.05)
    return RunningServer(server, thread)


def answer_until_verdict(
    admin: httpx.Client, provider: httpx.Client, report: SimulatedReport, audit_id: str, timeout: float = 120
) -> dict[str, Any]:
    """The provider answers each round the audit opens (progressive exposure) until the verdict."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        audit = admin.get(f"/v1/audits/{audit_id}").raise_for_status().json()
        if audit["verdict"] is not None:
            return dict(audit["verdict"])
        page = provider.get("/v1/challenges", params={"status": "open"}).raise_for_status().json()
        for challenge in page["items"]:
            response = report.answer_challenge(Challenge.from_json(challenge["challenge"]))
            provider.post(f"/v1/challenges/{challenge['challenge_id']}/response", json=response.to_json())
        time.sleep(0.1)
    raise RuntimeError(f"audit {audit_id} has no verdict after {timeout:.0f}s")


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _reason(verdict: dict[str, Any]) -> str:
    """Why the verdict is what it is: for fail, the proof check that caught it; for suspect, each
    statistical check that flagged, its figure against its threshold."""
    checks = {c["name"]: c for c in verdict["statement"].get("evidence", {}).get("checks", [])}
    if verdict["outcome"] == "fail":
        return "; ".join(f"caught by {name}: {checks[name]['detail']}" for name in verdict["proof_failures"])
    if verdict["outcome"] == "suspect":
        return "; ".join(
            f"flagged by {name}: {_figure(checks[name]['figure'])} vs threshold "
            f"{_figure(checks[name]['threshold'])}"
            for name in verdict["statistical_flags"]
        )
    undecided = [f"{c['name']}: {c['detail']}" for c in checks.values() if c["outcome"] == "inconclusive"]
    return "; ".join(undecided) or "all checks hold"


def _demo_staff(database_url: str) -> tuple[str, str]:
    """A staff account for the dashboard of this demo's throwaway database, with a random password."""
    from service.database import Database
    from service.staff.service import create_staff

    email, password = "staff@demo.local", secrets.token_urlsafe(12)
    database = Database(database_url)
    try:
        with database.unit_of_work() as session:
            create_staff(session, email, password)
    finally:
        database.dispose()
    return email, password


def run_demo(
    traces_dir: Path, per_behaviour: int, serve: bool, database: Path = DEMO_DATABASE
) -> dict[str, list[str]]:
    """Run the demo and return each behaviour's verdicts."""
    database = database.resolve()
    database.parent.mkdir(parents=True, exist_ok=True)
    database.unlink(missing_ok=True)
    os.environ["COIN_DATABASE_URL"] = f"sqlite:///{database}"
    os.environ.pop("COIN_BROKER_URL", None)
    from service.migrate import upgrade_database
    from service.settings import get_settings

    get_settings.cache_clear()
    settings = get_settings()
    upgrade_database(settings.database_url)
    from api.main import app

    port = free_port()
    server = start_server(app, port)
    base = f"http://127.0.0.1:{port}"
    embedder = get_embedder()
    typer.echo(f"API on {base} (SQLite {database}, tasks in-process); Embd {embedder.embd_id}")

    admin = httpx.Client(base_url=base, timeout=120)
    admin.headers["Authorization"] = f"Bearer {settings.admin_token.get_secret_value()}"
    keys = {
        behaviour: admin.post("/v1/providers", json={"name": f"{behaviour} provider"})
        .raise_for_status()
        .json()
        for behaviour in BEHAVIOURS
    }
    typer.echo(f"{'provider':<16} {'trace':<26} {'billed':>6} {'verdict':<12} evidence")
    traces = demo_traces(traces_dir, per_behaviour * len(BEHAVIOURS))
    outcomes: dict[str, list[str]] = {b: [] for b in BEHAVIOURS}
    for k, trace in enumerate(traces):
        report = simulate(trace, BEHAVIOURS[k % len(BEHAVIOURS)], embedder)
        provider = httpx.Client(base_url=base, timeout=120)
        provider.headers["Authorization"] = f"Bearer {keys[report.behaviour]['api_key']}"
        answer_tokens = len(trace["answer"].split())
        receipt = (
            provider.post("/v1/reports", json=report_body(report, answer_tokens)).raise_for_status().json()
        )
        audit = admin.post("/v1/audits", json={"report_id": receipt["report_id"]}).raise_for_status().json()
        verdict = answer_until_verdict(admin, provider, report, audit["audit_id"])
        outcomes[report.behaviour].append(verdict["outcome"])
        billed = report.public.commitment.size
        typer.echo(
            f"{report.behaviour:<16} {report.trace_id[:26]:<26} {billed:>6} {verdict['outcome']:<12} "
            f"{_reason(verdict)[:110]}"
        )
        status = httpx.get(
            f"{base}/v1/reports/{receipt['report_id']}/status",
            headers={"Authorization": f"Bearer {receipt['receipt_token']}"},
        ).raise_for_status()
        assert status.json()["audits"], "the customer sees the audit of its request"

    typer.echo("\nsummary (what each simulated provider got):")
    for behaviour, verdicts in outcomes.items():
        typer.echo(f"  {behaviour:<16} {', '.join(verdicts)}")
    typer.echo(
        "fail = proof: a check that cannot fire on honest text caught the provider; suspect = statistical\n"
        "evidence: it raises the provider's monitoring and accuses nobody (figure vs calibrated threshold)."
    )
    typer.echo(
        "Every step is in the hash-chained audit trail; check it with\n"
        f"  COIN_DATABASE_URL={settings.database_url} coin verify-chain"
    )
    if serve:
        email, password = _demo_staff(settings.database_url)
        typer.echo(f"API still serving on {base}/docs — Ctrl-C to stop")
        typer.echo(f"Dashboard: {base}/dashboard — sign in as {email} with the password {password}")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    server.stop()
    return outcomes
