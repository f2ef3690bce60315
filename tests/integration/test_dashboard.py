"""The dashboard's access control over HTTP: staff sessions (cookie flags, logout, expiry), CSRF on every
form, the sign-in rate limit kept in the store, `coin staff add`; no API credential opens a page. The
migration that adds the staff's tables; a provider's sampling policy and monitor on its page."""

import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Literal

import httpx2
import pytest
import sqlalchemy as sa
from alembic import command
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from typer.testing import CliRunner

import service.staff.service
from auditor.cli import build_app
from service.database import Database, make_engine
from service.listing import Cursor
from service.migrate import alembic_config, upgrade_database
from service.models import (
    AuditEvent,
    AuditStatus,
    AuditTrigger,
    LoginFailure,
    Outcome,
    StaffSession,
    Verdict,
    utcnow,
)
from service.settings import Settings, get_settings
from service.staff.service import SignInOutcome, create_staff, sign_in
from tests.integration.support import (
    ADMIN,
    TEST_ENV,
    MakeProvider,
    MakeRequest,
    bearer,
    decide,
    new_audit,
    service_context,
)

PASSWORD = "correct horse battery staple"
SESSION_COOKIE = "__Host-coin_session"  # COIN_ENV=test: Secure cookies with the __Host- prefix


@pytest.fixture
def staff(clean_db: Database) -> str:
    with clean_db.unit_of_work() as session:
        create_staff(session, "Alice@Example.com", PASSWORD)
    return "alice@example.com"


@pytest.fixture
def browser(app: FastAPI, client: TestClient) -> Iterator[TestClient]:
    """A cookie-keeping client over https (the app's lifespan runs in `client`)."""
    with TestClient(app, base_url="https://testserver", raise_server_exceptions=False) as browser:
        yield browser


def _token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match is not None
    return match.group(1)


def _sign_in(browser: TestClient, email: str, password: str, **extra: str) -> httpx2.Response:
    form = browser.get("/dashboard/login")
    assert form.status_code == 200
    data = {"email": email, "password": password, "csrf_token": _token(form.text), **extra}
    return browser.post("/dashboard/login", data=data, follow_redirects=False)


def test_only_a_staff_session_opens_the_dashboard(
    browser: TestClient,
    staff: str,
    make_provider: MakeProvider,
    make_request: MakeRequest,
) -> None:
    provider = make_provider()
    receipt = browser.post("/v1/reports", json=make_request(0).report, headers=provider.headers).json()
    for headers in ({}, ADMIN, provider.headers, bearer(receipt["receipt_token"])):
        page = browser.get("/dashboard/reports?model=x", headers=headers, follow_redirects=False)
        assert page.status_code == 303, headers
        assert page.headers["location"] == "/dashboard/login?next=/dashboard/reports%3Fmodel%3Dx"

    signed_in = _sign_in(browser, staff.upper(), PASSWORD, next="/dashboard/reports?model=x")
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/dashboard/reports?model=x"
    cookie = next(h for h in signed_in.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE))
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "path=/", "samesite=lax"} <= flags, cookie
    page = browser.get("/dashboard")
    assert page.status_code == 200 and staff in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
    # Only a page of this dashboard is a place to go back to.
    for elsewhere in ("https://evil.example/", "//evil.example/x", "/v1/providers"):
        assert _sign_in(browser, staff, PASSWORD, next=elsewhere).headers["location"] == "/dashboard"


def test_list_filters_at_the_ends_of_the_calendar(browser: TestClient, staff: str) -> None:
    assert _sign_in(browser, staff, PASSWORD).status_code == 303
    assert browser.get("/dashboard/reports?to=9999-12-31").status_code == 200  # no day after it: no bound
    for nul in (
        "/dashboard/reports?model=%00",
        "/dashboard/audits?request_id=a%00b",
    ):  # PostgreSQL text has no NUL
        refused = browser.get(nul)
        assert refused.status_code == 200 and "is not valid" in refused.text, nul
    beyond = Cursor(datetime(9999, 12, 31, 23, tzinfo=timezone(-timedelta(hours=23))), uuid.uuid4()).encode()
    page = browser.get(f"/dashboard/audits?cursor={beyond}")  # its instant in UTC is in the year 10000
    assert page.status_code == 200 and "is not valid" in page.text


def test_an_audit_decided_under_coin_verdict_1_still_shows(
    browser: TestClient,
    staff: str,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    client: TestClient,
) -> None:
    """Its checks carry no kind and no threshold, and its `fail` may rest on a statistical check."""
    provider = make_provider()
    report_id = browser.post("/v1/reports", json=make_request(0).report, headers=provider.headers).json()[
        "report_id"
    ]
    signer = service_context(client).signer
    check = {"name": "verifier", "outcome": "fail", "figure": 1e-4, "detail": "p = 1.00e-04"}
    statement = {
        "version": "coin-verdict/1",
        "outcome": "fail",
        "evidence": {"checks": [check], "count_openings": 94},
    }
    with service_context(client).db.unit_of_work() as session:
        audit = new_audit(session, report_id, AuditTrigger.ADMIN, AuditStatus.DONE)
        session.add(Verdict(audit_id=audit.id, outcome=Outcome.FAIL, statement=statement,
                            signature=signer.sign(statement), signing_key=signer.public_key_hex))  # fmt: skip
        audit_id = audit.id
    assert _sign_in(browser, staff, PASSWORD).status_code == 303
    page = browser.get(f"/dashboard/audits/{audit_id}")
    assert page.status_code == 200, page.text
    assert "not necessarily proof" in page.text and "Failed proof check" not in page.text
    assert 'data-check="verifier"' in page.text and "0.0001" in page.text


def test_sign_in_is_rate_limited_in_the_store(
    browser: TestClient, staff: str, clean_db: Database, settings: Settings
) -> None:
    for _ in range(settings.login_failures_per_account):
        refused = _sign_in(browser, staff, "wrong password")
        assert refused.status_code == 401 and "Wrong email or password." in refused.text
    # The right password no longer helps: the account is refused without its password being checked.
    throttled = _sign_in(browser, staff, PASSWORD)
    assert throttled.status_code == 429 and "Too many failed sign-ins" in throttled.text
    assert int(throttled.headers["retry-after"]) == int(settings.login_window_seconds)
    with clean_db.unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(LoginFailure)) == 5
        # Failures past the window are forgotten.
        old = utcnow() - timedelta(seconds=settings.login_window_seconds + 1)
        session.execute(update(LoginFailure).values(occurred_at=old))
    assert _sign_in(browser, staff, PASSWORD).status_code == 303


def test_an_unknown_email_costs_the_same_password_verification(
    clean_db: Database, settings: Settings, staff: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No account enumeration by timing: whether the email has an account or not, a refused sign-in
    verifies one Argon2 hash (the real hasher, counted)."""
    verified: list[str] = []

    class CountingHasher(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
            verified.append(str(hash))
            return super().verify(hash, password)

    monkeypatch.setattr(service.staff.service, "_hasher", CountingHasher())
    for email in (staff, "nobody@example.com"):
        verified.clear()
        with clean_db.unit_of_work() as session:
            refused = sign_in(session, settings, email, "wrong password", "192.0.2.9")
        assert refused.outcome == SignInOutcome.REFUSED and len(verified) == 1, email


def test_the_address_limit_spans_accounts(clean_db: Database, settings: Settings) -> None:
    tight = settings.model_copy(update={"login_failures_per_address": 3})
    with clean_db.unit_of_work() as session:
        create_staff(session, "bob@example.com", PASSWORD)
    outcomes = []
    for email in ("x@example.com", "y@example.com", "z@example.com", "bob@example.com"):
        with clean_db.unit_of_work() as session:
            outcomes.append(sign_in(session, tight, email, "guess", "192.0.2.7").outcome)
    assert outcomes == [SignInOutcome.REFUSED] * 3 + [SignInOutcome.THROTTLED]
    with clean_db.unit_of_work() as session:
        here = sign_in(session, tight, "bob@example.com", PASSWORD, "192.0.2.7")
        elsewhere = sign_in(session, tight, "bob@example.com", PASSWORD, "198.51.100.1")
    assert here.outcome == SignInOutcome.THROTTLED  # the right password does not help
    assert elsewhere.outcome == SignInOutcome.SIGNED_IN and elsewhere.token


def test_every_form_needs_the_csrf_token(
    browser: TestClient, staff: str, make_provider: MakeProvider, clean_db: Database
) -> None:
    provider = make_provider()
    keys = f"/dashboard/providers/{provider.id}/keys"
    # The sign-in form's own token: without it (or without its cookie) nobody is signed in.
    form = browser.get("/dashboard/login")
    missing = browser.post(
        "/dashboard/login", data={"email": staff, "password": PASSWORD}, follow_redirects=False
    )
    assert missing.status_code == 403
    browser.cookies.clear()
    no_cookie = {"email": staff, "password": PASSWORD, "csrf_token": _token(form.text)}
    assert browser.post("/dashboard/login", data=no_cookie, follow_redirects=False).status_code == 403

    assert _sign_in(browser, staff, PASSWORD).status_code == 303
    token = _token(browser.get(f"/dashboard/providers/{provider.id}").text)
    assert browser.post(keys, data={}).status_code == 403
    assert browser.post(keys, data={"csrf_token": "forged"}).status_code == 403
    assert browser.post("/dashboard/logout", data={}, follow_redirects=False).status_code == 403
    assert browser.get("/dashboard").status_code == 200  # still signed in
    issued = browser.post(keys, data={"csrf_token": token})
    assert issued.status_code == 200 and "New API key issued." in issued.text
    [new_key] = re.findall(r'<code class="key">(coin_[^<]+)</code>', issued.text)
    assert new_key not in browser.get(f"/dashboard/providers/{provider.id}").text  # shown once
    assert browser.get("/v1/providers/me", headers=bearer(new_key)).status_code == 200

    # htmx sends the token as a header; the revocation goes through the REST endpoints' service function.
    prefix = provider.key.split("_")[1]
    revoked = browser.post(f"{keys}/{prefix}/revoke", headers={"X-CSRF-Token": token, "HX-Request": "true"})
    assert revoked.status_code == 200 and "revoked" in revoked.text
    assert browser.get("/v1/providers/me", headers=provider.headers).status_code == 401
    with clean_db.unit_of_work() as session:
        staff_id = session.scalars(select(StaffSession.staff_id)).one()
        trail = session.execute(
            select(AuditEvent.kind, AuditEvent.payload["by"].as_string())
            .where(AuditEvent.provider_id == uuid.UUID(provider.id), AuditEvent.kind.like("api_key.%"))
            .order_by(AuditEvent.seq)
        ).all()
    assert [tuple(row) for row in trail] == [
        ("api_key.issued", "admin"), ("api_key.issued", f"staff:{staff_id}"), ("api_key.revoked", f"staff:{staff_id}"),
    ]  # fmt: skip


def test_sessions_end_on_logout_and_on_expiry(
    browser: TestClient, staff: str, clean_db: Database, settings: Settings
) -> None:
    assert _sign_in(browser, staff, PASSWORD).status_code == 303
    cookie = browser.cookies[SESSION_COOKIE]
    token = _token(browser.get("/dashboard").text)
    out = browser.post("/dashboard/logout", data={"csrf_token": token}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/dashboard/login"
    replayed = browser.get(
        "/dashboard", headers={"Cookie": f"{SESSION_COOKIE}={cookie}"}, follow_redirects=False
    )
    assert replayed.status_code == 303  # a copy of the cookie kept by an attacker
    with clean_db.unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(StaffSession)) == 0

    for expired in (
        {"expires_at": utcnow()},
        {"last_seen_at": utcnow() - timedelta(seconds=settings.staff_idle_seconds)},
    ):
        browser.cookies.clear()
        assert _sign_in(browser, staff, PASSWORD).status_code == 303
        with clean_db.unit_of_work() as session:
            session.execute(update(StaffSession).values(**expired))
        assert browser.get("/dashboard", follow_redirects=False).status_code == 303, expired
        with clean_db.unit_of_work() as session:
            assert session.scalar(select(func.count()).select_from(StaffSession)) == 0  # deleted when seen


def test_a_page_polling_on_its_own_does_not_keep_the_session_from_idling(
    browser: TestClient, staff: str, clean_db: Database, settings: Settings
) -> None:
    assert _sign_in(browser, staff, PASSWORD).status_code == 303
    idle_for = timedelta(seconds=settings.staff_idle_seconds - 30)

    def last_seen() -> datetime:
        with clean_db.unit_of_work() as session:
            return session.scalars(select(StaffSession.last_seen_at)).one()

    with clean_db.unit_of_work() as session:
        session.execute(update(StaffSession).values(last_seen_at=utcnow() - idle_for))
    before = last_seen()
    poll = {"HX-Request": "true", "X-Coin-Poll": "1", "HX-Current-URL": "https://testserver/dashboard?x=1"}
    assert browser.get("/dashboard/partials/open-challenges", headers=poll).status_code == 200
    assert last_seen() == before  # the tab polled; nobody was there
    assert browser.get("/dashboard").status_code == 200
    assert last_seen() > before

    # Once idle, the poll sends the browser to sign in, and back to the page it polled from.
    with clean_db.unit_of_work() as session:
        session.execute(
            update(StaffSession).values(
                last_seen_at=utcnow() - timedelta(seconds=settings.staff_idle_seconds)
            )
        )
    expired = browser.get("/dashboard/partials/open-challenges", headers=poll, follow_redirects=False)
    assert (expired.status_code, expired.headers["HX-Redirect"]) == (
        204,
        "/dashboard/login?next=/dashboard%3Fx%3D1",
    )


def test_coin_staff_add(clean_db: Database, monkeypatch: pytest.MonkeyPatch, browser: TestClient) -> None:
    for name, value in TEST_ENV.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        add = ["staff", "add", "--email", "Carol@example.com", "--password-stdin"]
        created = CliRunner().invoke(build_app(), add, input=f"{PASSWORD}\n")
        assert created.exit_code == 0, created.output
        assert "carol@example.com created" in created.stdout
        again = CliRunner().invoke(build_app(), add, input=f"{PASSWORD}\n")
        assert again.exit_code == 1 and "already exists" in again.stderr
        short = CliRunner().invoke(build_app(), ["staff", "add", "--email", "d@example.com", "--password-stdin"],
                                   input="short\n")  # fmt: skip
        assert short.exit_code == 1 and "at least 12 characters" in short.stderr
    finally:
        get_settings.cache_clear()
    assert _sign_in(browser, "carol@example.com", PASSWORD).status_code == 303


def test_migration_0006_adds_and_drops_the_staff_tables(migration_url: str) -> None:
    url = migration_url
    staff_tables = {"staff_accounts", "staff_sessions", "login_failures"}
    list_indexes = {("reports", "ix_reports_received_at_id"), ("reports", "ix_reports_request_id"),
                    ("audits", "ix_audits_created_at_id")}  # fmt: skip

    def schema() -> tuple[set[str], set[tuple[str, str | None]]]:
        engine = make_engine(url)
        try:
            inspector = sa.inspect(engine)
            indexes = {(t, ix["name"]) for t in ("reports", "audits") for ix in inspector.get_indexes(t)}
            return set(inspector.get_table_names()), indexes
        finally:
            engine.dispose()

    upgrade_database(url)
    tables, indexes = schema()
    assert staff_tables <= tables and list_indexes <= indexes
    command.downgrade(alembic_config(url), "0005")
    tables, indexes = schema()
    assert not staff_tables & tables and not list_indexes & indexes
    upgrade_database(url)
    assert staff_tables <= schema()[0]


def test_a_provider_page_shows_its_sampling_policy_and_monitor_and_the_overview_ranks_by_it(
    browser: TestClient,
    staff: str,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    client: TestClient,
) -> None:
    """A provider escalated by a failed audit (its verdict written directly) next to one without a policy."""
    quiet, failing = make_provider("Quiet Co"), make_provider("Failing Co")
    terms = {"domain": "math", "share": 0.02, "min_per_day": 1}
    assert browser.put(f"/v1/providers/{failing.id}/policy", json=terms, headers=ADMIN).status_code == 200
    for owner, outcome in ((quiet, Outcome.PASS), (failing, Outcome.FAIL)):
        report_id = browser.post("/v1/reports", json=make_request(0).report, headers=owner.headers).json()["report_id"]  # fmt: skip
        broken = [{"name": "proof", "kind": "proof", "outcome": "fail", "figure": 1.0, "threshold": None,
                   "detail": "1 of 90 paths fail"}] if outcome == Outcome.FAIL else []  # fmt: skip
        decide(service_context(client), report_id, AuditTrigger.ADMIN, outcome, broken)
    assert _sign_in(browser, staff, PASSWORD).status_code == 303
    page = browser.get(f"/dashboard/providers/{failing.id}").text
    assert "escalated</strong> since" in page and "after a failed audit" in page
    assert "8.0% (escalated" not in page and "2.0% (escalated: 8.0%)" in page  # 4 x the base share
    assert "proof alarm</strong> at audit 1 of the month" in page
    quiet_page = browser.get(f"/dashboard/providers/{quiet.id}").text
    assert "not audited on a schedule" in quiet_page and "Alarm</dt><dd>none" in quiet_page
    assert "fails above 24.0% copied or 60.0% repeated (the shipped rule)" in quiet_page
    overview = browser.get("/dashboard").text
    ranked = overview[overview.index("Providers by risk") :]
    assert ranked.index("Failing Co") < ranked.index("Quiet Co")
    assert "proof alarm" in ranked and "escalated</strong>, 8.0%" in ranked
