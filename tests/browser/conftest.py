"""Browser tests: Playwright for Python driving Debian's Chromium (/usr/bin/chromium, never a download)
against the whole app served by uvicorn on a free loopback port.

The app runs on the embedded dispatcher (audits verified in the server's process) over a PostgreSQL
database of its own, created for the session beside the integration tests' one and dropped at the end.
It is seeded the way `coin demo` does it: simulated providers commit real traces with the SDK and push
them through the REST API; the audits are real, except one `suspect` verdict written directly (which
statistical evidence a real trace triggers is the science side's business, not the dashboard's).

Every page a test opens is watched: a console error, an uncaught script error, a failed request or a
response >= 400 fails the test, unless the test declared it (`Tab.expect`). Each page's screenshot is
kept under var/screenshots/. With CI set, a missing Chromium or Playwright fails the tests.
"""

import copy
import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import psycopg
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Request
from playwright.sync_api import Response as PageResponse

from api.demo.providers import SimulatedReport, demo_traces, simulate
from api.demo.run import answer_until_verdict, free_port, report_body, start_server
from auditor.protocol.challenge import Challenge
from auditor.protocol.commitment import Response
from auditor.protocol.fingerprint import Embedder
from service.database import Database
from service.migrate import upgrade_database
from service.models import AuditTrigger, Outcome
from service.settings import Settings
from service.staff.service import create_staff
from tests.conftest import TRACES_DIR
from tests.integration.conftest import _admin_connection, _service_missing
from tests.integration.support import (
    ADMIN_TOKEN,
    PG_HOST,
    PG_PORT,
    PG_USER,
    REPO_ROOT,
    TEST_DATABASE,
    TEST_ENV,
    decide,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]  # fmt: skip
SCREENSHOTS = REPO_ROOT / "var" / "screenshots"
STAFF_EMAIL, STAFF_PASSWORD = "auditor@example.com", "a long staff password, for tests"


def _missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what}; CI is set, so the browser tests must not be skipped")
    pytest.skip(what)


@pytest.fixture(scope="session")
def dashboard_database() -> Iterator[str]:
    """A migrated database of the browser tests' own, dropped at the end of the session."""
    name = f"{TEST_DATABASE}_browser"
    try:
        admin = _admin_connection()
    except psycopg.OperationalError as exc:
        _service_missing("PostgreSQL at 127.0.0.1:5432", exc)
    with admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    try:
        upgrade_database(url)
        yield url
    finally:
        with _admin_connection() as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def dashboard_settings(dashboard_database: str) -> Settings:
    values: dict[str, Any] = {key.removeprefix("COIN_").lower(): value for key, value in TEST_ENV.items()}
    # No broker: the server verifies audits itself, so the browser tests need no worker.
    return Settings(**{**values, "database_url": dashboard_database, "broker_url": None})


@pytest.fixture(scope="session")
def server(dashboard_settings: Settings) -> Iterator[str]:
    """The app, served by uvicorn from a thread; yields its base URL."""
    from api.app import create_app

    port = free_port()
    running = start_server(create_app(dashboard_settings), port)
    yield f"http://127.0.0.1:{port}"
    running.stop()


@dataclass
class Provider:
    name: str
    id: str
    key: str
    http: httpx.Client


@dataclass
class World:
    """What the seeding stored, by name."""

    base_url: str
    admin: httpx.Client
    providers: dict[str, Provider] = field(default_factory=dict)
    reports: dict[str, str] = field(default_factory=dict)  # request id -> report id
    audits: dict[str, str] = field(default_factory=dict)  # request id -> audit id
    honest: SimulatedReport | None = None  # answers challenges of the honest provider's reports


def _swapping_tokens(report: SimulatedReport) -> SimulatedReport:
    """A provider that reveals other tokens than it committed (its fingerprints and proofs are genuine):
    token re-embedding, a proof check, fails."""

    def respond(challenge: Challenge) -> Response:
        honest = report.openings.respond(challenge.indices, challenge.content_indices)
        swap = {b" banana": b" apple"}
        openings = tuple(
            dataclasses.replace(o, token=swap.get(o.token, b" banana")) if o.token is not None else o
            for o in honest.openings
        )
        return dataclasses.replace(honest, openings=openings)

    return dataclasses.replace(report, behaviour="token swap", answer_challenge=respond)


def _submit(provider: Provider, body: dict[str, Any]) -> str:
    return str(provider.http.post("/v1/reports", json=body).raise_for_status().json()["report_id"])


def _suspect_verdict(settings: Settings, report_id: str) -> str:
    """An audit of `report_id` closed with a `suspect` verdict, as a statistical check would write it."""
    from service.context import ServiceContext

    context = ServiceContext.from_settings(settings)
    flagged = {"name": "verifier", "kind": "statistical", "outcome": "suspect", "figure": 2.1e-4,
               "threshold": 1e-3, "detail": "p = 2.10e-04 (most unusual block 3, Bonferroni over 4 blocks)"}  # fmt: skip
    try:
        return str(decide(context, report_id, AuditTrigger.ADMIN, Outcome.SUSPECT, [flagged]).audit_id)
    finally:
        context.close()


@pytest.fixture(scope="session")
def world(server: str, dashboard_settings: Settings, embedder: Embedder) -> Iterator[World]:
    """Three simulated providers (honest, forged fingerprints, swapped tokens) with real traces and
    audits, a few more reports, one `suspect` verdict, and a staff account."""
    admin = httpx.Client(base_url=server, timeout=180, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    world = World(server, admin)
    behaviours = {
        "Honest Reasoning Co": "honest",
        "Forgery Inc": "forged opening",
        "Token Swap Ltd": "token swap",
    }
    for (name, behaviour), trace in zip(behaviours.items(), demo_traces(TRACES_DIR, 3), strict=True):
        created = admin.post("/v1/providers", json={"name": name}).raise_for_status().json()
        http = httpx.Client(
            base_url=server, timeout=180, headers={"Authorization": f"Bearer {created['api_key']}"}
        )
        provider = world.providers[behaviour] = Provider(name, created["id"], created["api_key"], http)
        if behaviour == "token swap":
            report = _swapping_tokens(simulate(trace, "honest", embedder))
        else:
            report = simulate(trace, behaviour, embedder)
        body = report_body(report, answer_tokens=len(trace["answer"].split()))
        body["request_id"] = f"{behaviour.replace(' ', '-')}-001"
        report_id = world.reports[body["request_id"]] = _submit(provider, body)
        audit = admin.post("/v1/audits", json={"report_id": report_id}).raise_for_status().json()["audit_id"]
        answer_until_verdict(admin, http, report, audit)
        world.audits[body["request_id"]] = audit
        if behaviour == "honest":
            world.honest = report
            # The same commitment under other request ids (and another model): reports to filter and
            # one to audit from the browser, which the honest provider can answer.
            for request_id, model in (("honest-002", "demo-reasoner"), *((f"mini-{k}", "demo-reasoner-mini") for k in range(3)),
                                      ("honest-suspect", "demo-reasoner")):  # fmt: skip
                world.reports[request_id] = _submit(
                    provider, {**copy.deepcopy(body), "request_id": request_id, "model": model}
                )
    world.audits["honest-suspect"] = _suspect_verdict(dashboard_settings, world.reports["honest-suspect"])
    database = Database(dashboard_settings.database_url)
    with database.unit_of_work() as session:
        create_staff(session, STAFF_EMAIL, STAFF_PASSWORD)
    database.dispose()
    yield world
    for client in (admin, *(p.http for p in world.providers.values())):
        client.close()


# Module scope: Playwright's sync API keeps an event loop running in this thread while it is open, and
# tests collected after the browser tests (asyncio.run in tests/unit) need the thread's loop free.
@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is missing (apt-get install chromium; `make test` installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Tab:
    """A browser page that records what went wrong on it: console errors, script errors, failed
    requests and responses >= 400, except those a test `expect`s."""

    def __init__(self, page: Page, name: str) -> None:
        self.page = page
        self.name = name
        self.problems: list[str] = []
        self._expected: set[tuple[int, str]] = set()
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))
        page.on("requestfailed", self._failed)
        page.on("response", self._response)

    def expect(self, status: int, path: str) -> None:
        """A deliberate refusal: `status` from `path` is what the test wants."""
        self._expected.add((status, path))

    def _is_expected(self, status: int, url: str) -> bool:
        return (status, urlparse(url).path) in self._expected

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        # Chromium logs every response >= 400 as a console error as well; an expected one is no error.
        status = next((code for code, _ in self._expected if f"status of {code}" in message.text), None)
        if status is not None and self._is_expected(status, message.location.get("url", "")):
            return
        self.problems.append(f"console error: {message.text} at {message.location.get('url')}")

    def _failed(self, request: Request) -> None:
        # A poll cut short by the navigation that replaces its page is no failure.
        if request.failure != "net::ERR_ABORTED":
            self.problems.append(f"request failed: {request.method} {request.url}: {request.failure}")

    def _response(self, response: PageResponse) -> None:
        if response.status >= 400 and not self._is_expected(response.status, response.url):
            self.problems.append(f"HTTP {response.status}: {response.request.method} {response.url}")

    def shot(self, name: str) -> Path:
        """A full-page screenshot, kept as an artifact."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def sign_in(self, email: str = STAFF_EMAIL, password: str = STAFF_PASSWORD) -> None:
        """Through the sign-in form (the one on screen, which knows where to go back to)."""
        if urlparse(self.page.url).path != "/dashboard/login":
            self.page.goto("/dashboard/login")
        self.page.get_by_label("Email").fill(email)
        self.page.get_by_label("Password").fill(password)
        self.page.get_by_role("button", name="Sign in").click()


@pytest.fixture
def tab(chromium: Browser, world: World, request: pytest.FixtureRequest) -> Iterator[Tab]:
    """A fresh browser context (no cookies) on the seeded app; fails the test on any unexpected error."""
    context = chromium.new_context(base_url=world.base_url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    tab = Tab(context.new_page(), request.node.name)
    try:
        yield tab
        assert not tab.problems, "\n".join(tab.problems)
    finally:
        context.close()


@pytest.fixture
def signed_in(tab: Tab) -> Tab:
    tab.sign_in()
    tab.page.wait_for_url("**/dashboard")
    return tab
