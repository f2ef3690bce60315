"""Operations without services (Issue 15): settings that never echo a secret and refuse test knobs
outside tests, receipt tokens through a key rotation, report normalisation, readable identifiers,
bounded exposure plans, the rate and body limits of the API, and metrics summed across processes."""

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi import HTTPException
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from typer.testing import CliRunner, Result

from api.demo import DEMO_TRACE_FILES
from api.limits import Bucket, LocalLimiter, RequestLimits
from api.middleware import BodySizeLimit
from auditor.cli import build_app
from auditor.protocol.challenge import KeyedRandom
from service.audits.workflow import MAX_PLAN_BLOCKS, MAX_PLAN_TOKENS, exposure_policy
from service.context import database_of
from service.migrate import upgrade_database
from service.models import AuditEvent, SamplingPolicy, StaffAccount
from service.providers.service import register_provider
from service.reports.service import normalised_report
from service.security import Signer
from service.settings import Settings, SettingsError, get_settings, load_settings
from service.text import check_identifier, display_name, name_key

REPO = Path(__file__).resolve().parents[2]

Reply = tuple[int, dict[bytes, bytes], bytes]  # status, headers and body of a response

SECRETS = (
    "COIN_SECRET_KEY",
    "COIN_SECRET_KEY_PREVIOUS",
    "COIN_SIGNING_KEY",
    "COIN_ADMIN_TOKEN",
    "COIN_CHAIN_KEY",
    "COIN_CHAIN_KEY_PREVIOUS",
    "COIN_METRICS_TOKEN",
)
GOOD = {
    "COIN_SECRET_KEY": "s" * 40,
    "COIN_SIGNING_KEY": "ab" * 32,
    "COIN_ADMIN_TOKEN": "t" * 24,
    "COIN_CHAIN_KEY": "c" * 40,
}
MALFORMED = (
    "0123456789abcdef" * 3 + "0123456789abcde",  # 63 hex characters
    "short-Secret-9",
    "not hex at all, but long enough to pass a length check: zzzz",
    "ünïcødé-sécret-☃-0123456789",
    "line\nbreak-secret-0123456789abcdef",
    "",
)


@pytest.mark.parametrize("name", SECRETS)
@pytest.mark.parametrize("value", MALFORMED)
def test_no_secret_setting_is_ever_echoed(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    for key in SECRETS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("COIN_ENV", "production")
    for key, good in GOOD.items():
        monkeypatch.setenv(key, good)
    monkeypatch.setenv(name, value)
    try:
        load_settings()
    except SettingsError as refused:
        message = str(refused)
        assert "\n" not in message
        for fragment in (value, value[:12], value[-12:]):
            if len(fragment) >= 6:
                assert fragment not in message, (name, message)
    # Settings() itself never puts the input in its error either (pydantic's hide_input_in_errors).
    try:
        Settings()
    except ValueError as refused:
        for fragment in (value[:12], value[-12:]):
            if len(fragment) >= 6:
                assert fragment not in str(refused), (name, str(refused))


@pytest.mark.parametrize("env", ["production", "PRODUCTION", " Production "])
@pytest.mark.parametrize("knob", [{"verify_delay_seconds": 1.0}, {"challenge_seed": "fixed"}])
def test_test_knobs_are_refused_outside_development_and_test(env: str, knob: dict[str, Any]) -> None:
    secrets: dict[str, Any] = {key.removeprefix("COIN_").lower(): value for key, value in GOOD.items()}
    with pytest.raises(ValueError, match="test knob"):
        Settings(env=env, **secrets, **knob)
    assert Settings(env="test", **secrets, **knob).env == "test"
    for unknown in ("prod", "staging", "dev"):
        with pytest.raises(ValueError):
            Settings(env=unknown, **secrets)


def test_a_heartbeat_must_outpace_staleness() -> None:
    with pytest.raises(ValueError, match="twice COIN_HEARTBEAT_INTERVAL_SECONDS"):
        Settings(stale_after_seconds=8, heartbeat_interval_seconds=5)


def test_receipt_tokens_survive_a_rotation_of_the_secret_key() -> None:
    report = uuid.uuid4()
    before = Signer("ab" * 32, "k1" * 20)
    token = before.receipt_token(report)
    rotated = Signer("ab" * 32, "k2" * 20, "k1" * 20)
    assert rotated.receipt_token(report) != token  # new reports get tokens of the new key
    assert rotated.rederived_receipt_token(report, before.secret_key_id) == token
    assert rotated.rederived_receipt_token(report, None) == rotated.receipt_token(report)
    retired = Signer("ab" * 32, "k3" * 20, "k2" * 20)
    assert retired.rederived_receipt_token(report, before.secret_key_id) is None


def test_null_optional_fields_are_dropped_without_copying_otherwise() -> None:
    body: dict[str, Any] = {"request_id": "r", "usage": {"raw": {"x": None}}, "answer": {"digest": "d"}}
    assert normalised_report(body) is body  # a null inside the verbatim raw usage is content
    spelled = {**body, "signature": None, "usage": {"raw": None}, "answer": {"digest": "d", "text": None}}
    assert normalised_report(spelled) == {"request_id": "r", "usage": {}, "answer": {"digest": "d"}}
    assert spelled["signature"] is None and spelled["answer"]["text"] is None  # the input is left alone


def test_identifiers() -> None:
    for bad in ("a\nb", "a\u202eb", "a\u2066b", "a\u200bb", "\ufeffa", "a\ue000", "a\u2028b"):
        with pytest.raises(ValueError, match="U\\+"):
            check_identifier(bad)
    with pytest.raises(ValueError, match="NFC"):
        check_identifier("e\u0301")
    assert display_name("  e\u0301 ") == "\u00e9"
    assert name_key("Ａｃｍｅ") == name_key("ACME") == name_key("acme") == "acme"
    assert name_key("Straße") == name_key("STRASSE")


@pytest.mark.parametrize("size", [100, 5000, 2**20, 2**24])
def test_an_exposure_plan_is_bounded_whatever_the_claim(size: int) -> None:
    from auditor.semantic.exposure import plan_exposure

    policy = exposure_policy(size, 16)
    seed = bytes.fromhex("ab" * 32)
    plan = plan_exposure(size, 16, policy, KeyedRandom(seed))
    assert len(plan.blocks) <= MAX_PLAN_BLOCKS
    assert len(plan.token_positions) <= max(MAX_PLAN_TOKENS, MAX_PLAN_BLOCKS)
    again = plan_exposure(size, 16, policy, KeyedRandom(seed))
    assert again == plan  # re-derived from the seed, the same plan every round


def _request(headers: Sequence[tuple[bytes, bytes]] = (), client: str = "10.0.0.1") -> Scope:
    return {
        "type": "http",
        "method": "POST",
        "path": "/v1/reports",
        "headers": [(b"content-length", b"10"), *headers],
        "client": (client, 1234),
    }


async def _call(app: ASGIApp, scope: Scope, body_messages: Iterable[Message]) -> Reply:
    sent: list[Message] = []
    queue = list(body_messages)

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        await asyncio.sleep(3600)  # a client that never sends the rest
        raise AssertionError("the read timeout should have given up on this body long ago")

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _a_provider(scope: Scope) -> HTTPException | None:
    return None


async def _a_stranger(scope: Scope) -> HTTPException | None:
    return HTTPException(401, "invalid API key", headers={"WWW-Authenticate": "Bearer"})


async def _store_down(scope: Scope) -> HTTPException | None:
    raise OperationalError("SELECT", {}, Exception("connection refused"))


def _limit(refusal: Callable[[Scope], Awaitable[HTTPException | None]], **sizes: float) -> BodySizeLimit:
    limits = {"max_bytes": 1000, "max_response_bytes": 4000, "read_timeout": 0.3, **sizes}
    return BodySizeLimit(_ok, provider_refusal=refusal, **limits)  # type: ignore[arg-type]


def test_a_body_that_never_arrives_is_408_within_the_read_timeout() -> None:
    app = _limit(_a_stranger, max_response_bytes=2000, read_timeout=0.2)
    started = time.monotonic()
    status, headers, _ = asyncio.run(
        _call(app, _request(), [{"type": "http.request", "body": b"{", "more_body": True}])
    )
    assert status == 408 and time.monotonic() - started < 2
    assert headers[b"content-type"] == b"application/problem+json"


RESPONSE_PATH = "/v1/challenges/0b5e6d1e-3f0c-4d8a-9a57-1c1f8b0e2a44/response"


def test_only_a_provider_may_send_a_challenge_response_beyond_the_body_limit() -> None:
    """FastAPI parses a body before the endpoint checks the key: a challenge's response gets its larger
    limit, and a read timeout grown with it, only for a valid provider key, checked before the body is
    read. A refused key is answered then, as the endpoint would (a 401 the failed-authentication limit
    counts, and no 413 whose size tells a valid key from another); a store that cannot check is a 503."""
    asked: list[str] = []

    async def provider(scope: Scope) -> HTTPException | None:
        asked.append(f"{scope['method']} {scope['path']}")
        return None

    def call(
        refusal: Callable[[Scope], Awaitable[HTTPException | None]],
        chunks: list[bytes],
        path: str = RESPONSE_PATH,
        **scope: str,
    ) -> tuple[int, dict[bytes, bytes], bytes]:
        request = {**_request(), "path": path, "headers": [], **scope}
        messages = [
            {"type": "http.request", "body": c, "more_body": k < len(chunks) - 1}
            for k, c in enumerate(chunks)
        ]
        return asyncio.run(_call(_limit(refusal), request, messages))

    status, headers, body = call(_a_stranger, [b"x" * 10])
    assert (status, headers[b"www-authenticate"]) == (401, b"Bearer") and b"invalid API key" in body
    status, headers, _ = call(_store_down, [b"x" * 10])
    assert (status, headers[b"retry-after"]) == (503, b"1")
    assert call(provider, [b"x" * 600, b"x" * 600])[0] == 200
    assert call(provider, [b"x" * 3000, b"x" * 1001])[0] == 413
    assert call(provider, [b"x" * 1200], path="/v1/reports")[0] == 413
    assert call(provider, [b"x" * 1200], method="PUT")[0] == 413  # only a POST is a response
    # behind `--root-path` the server puts the prefix in `path` too
    assert call(provider, [b"x" * 1200], path="/api" + RESPONSE_PATH, root_path="/api")[0] == 200
    assert asked == [f"POST {RESPONSE_PATH}"] * 2 + [f"POST /api{RESPONSE_PATH}"]

    async def slow_chunks(app: ASGIApp) -> int:
        """A provider's 3,000 bytes over 0.6 s: beyond the 0.3 s any body gets, within the 1.2 s (0.3 s
        x 4000 / 1000) its response gets."""
        scope = {**_request(), "path": RESPONSE_PATH, "headers": []}
        parts = [b"x" * 1000] * 3

        async def receive() -> Message:
            await asyncio.sleep(0.2)
            part = parts.pop(0)
            return {"type": "http.request", "body": part, "more_body": bool(parts)}

        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return int(sent[0]["status"])

    assert asyncio.run(slow_chunks(_limit(_a_provider))) == 200
    assert asyncio.run(slow_chunks(_limit(_a_provider, max_bytes=4000))) == 408
    with pytest.raises(ValueError, match="COIN_MAX_RESPONSE_BYTES must be at least COIN_MAX_BODY_BYTES"):
        Settings(max_body_bytes=2000, max_response_bytes=1000)  # a provider's answer is no smaller


def test_rates_and_failed_authentications_are_limited_per_client() -> None:
    settings = Settings(
        rate_limit_address_per_second=5,
        rate_limit_key_per_second=2,
        rate_limit_burst_seconds=1,
        auth_failures_per_minute=3,
    )

    async def scenario() -> tuple[list[int], Reply, Reply, list[int]]:
        app = RequestLimits(_ok, settings, LocalLimiter())
        key = [(b"authorization", b"Bearer coin_x_y")]
        statuses = [(await _call(app, _request(key), [{"type": "http.request"}]))[0] for _ in range(4)]
        refused = await _call(app, _request(key), [{"type": "http.request"}])
        other_key = await _call(
            app, _request([(b"authorization", b"Bearer other")]), [{"type": "http.request"}]
        )

        async def unauthorized(scope: Scope, receive: Receive, send: Send) -> None:
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

        guessing = RequestLimits(unauthorized, settings, LocalLimiter())
        failures = [(await _call(guessing, _request(client="10.9.9.9"), [{}]))[0] for _ in range(6)]
        return statuses, refused, other_key, failures

    statuses, refused, other_key, failures = asyncio.run(scenario())
    assert statuses[:3] == [200, 200, 200] and 429 in statuses  # a burst of rate × burst + 1, then no
    assert refused[0] == 429 and int(refused[1][b"retry-after"]) >= 1
    assert json.loads(refused[2])["status"] == 429
    assert other_key[0] == 200  # another credential from the same address still has its own bucket
    assert failures == [401, 401, 401, 401, 429, 429]  # a minute's failures, then refused outright


def test_requests_in_flight_are_capped_per_address() -> None:
    settings = Settings(max_requests_in_flight_per_address=2)

    async def scenario() -> tuple[Reply, list[int], int, dict[str, int]]:
        release = asyncio.Event()

        async def slow(scope: Scope, receive: Receive, send: Send) -> None:
            await release.wait()
            await _ok(scope, receive, send)

        app = RequestLimits(slow, settings, LocalLimiter())
        held = [asyncio.create_task(_call(app, _request(), [{"type": "http.request"}])) for _ in range(2)]
        await asyncio.sleep(0.05)
        third = await _call(app, _request(), [{"type": "http.request"}])
        elsewhere = asyncio.create_task(_call(app, _request(client="10.0.0.2"), [{"type": "http.request"}]))
        release.set()
        return third, [(await task)[0] for task in held], (await elsewhere)[0], app.in_flight

    third, held, elsewhere, in_flight = asyncio.run(scenario())
    assert third[0] == 429 and held == [200, 200] and elsewhere == 200
    assert in_flight == {}  # nothing left counted once the requests are done


def test_the_limiter_forgets_empty_buckets() -> None:
    limiter = LocalLimiter(max_keys=10)

    async def fill() -> None:
        for i in range(11):
            await limiter.take([Bucket(f"k{i}", 0.001, 1.0)])
        await asyncio.sleep(0.05)  # every bucket is full again: nothing to remember
        await limiter.take([Bucket("late", 0.001, 1.0)])

    asyncio.run(fill())
    assert set(limiter._tats) == {"late"}


def test_metrics_are_summed_across_processes(tmp_path: Path) -> None:
    """`--workers 2`: each process counts its own; with PROMETHEUS_MULTIPROC_DIR, /metrics sums them."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    count = "from service.metrics import REPORTS; REPORTS.labels('stored').inc({n})"
    for n in (2, 3):
        subprocess.run([sys.executable, "-c", count.format(n=n)], env=env, check=True)
    scrape = "from api.health.endpoints import _exposition; print(_exposition().decode())"
    text = subprocess.run(
        [sys.executable, "-c", scrape], env=env, check=True, capture_output=True, text=True
    ).stdout
    assert 'coin_reports_total{outcome="stored"} 5.0' in text


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The SQLite file that `coin` uses in this test (not created, not migrated)."""
    path = tmp_path / "coin.sqlite3"
    monkeypatch.setenv("COIN_DATABASE_URL", f"sqlite:///{path}")
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


@pytest.fixture
def migrated_store(store: Path) -> Path:
    upgrade_database(f"sqlite:///{store}")
    return store


def _coin(*args: str | Path, input: bytes | str | None = None) -> Result:
    return CliRunner().invoke(build_app(), [str(arg) for arg in args], input=input)


def _count(model: type[Any]) -> int:
    database = database_of(get_settings())
    try:
        with database.unit_of_work() as session:
            return int(session.scalar(select(func.count()).select_from(model)) or 0)
    finally:
        database.dispose()


@pytest.mark.parametrize(
    "command",
    [
        ["policy", "show", "--provider", "acme"],
        ["verify-chain"],
        ["schedule-key", "--day", "2020-01-01"],
        ["staff", "add", "--email", "d@b.example", "--password-stdin"],
    ],
)
def test_a_command_on_a_database_never_migrated_says_so(store: Path, command: list[str]) -> None:
    result = _coin(*command, input="longenoughpassword\n")
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: the database at sqlite:///{store} is not migrated: run coin migrate\n"
    assert not store.exists()  # not even an empty file left behind


def test_calibrate_checks_the_schema_before_its_audit(
    store: Path, tmp_path: Path, short_traces: list[dict[str, Any]]
) -> None:
    references = tmp_path / "math.jsonl"
    references.write_text("".join(json.dumps(trace) + "\n" for trace in short_traces[:3]))
    result = _coin("calibrate", "--domain", "math", "--traces", references)
    assert result.exit_code == 2, result.output
    assert "auditing" not in result.stdout  # the audit (minutes with the model) never started
    assert "is not migrated: run coin migrate" in result.stderr


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--min-per-day", "99999999999999999999999", "min_per_day: between 0 and 1000000"),
        ("--escalated-min-per-day", "99999999999999999999999", "escalated_min_per_day: at most 1000000"),
        ("--clean-audits", "99999999999999999999999", "clean_audits: between 1 and 10000"),
        ("--warning-e-value", "inf", "warning_e_value: above 1 (an e-value of 1 is no evidence) and at most"),
        ("--warning-e-value", "nan", "warning_e_value: above 1"),
        ("--share", "nan", "share: between 0 and 1"),
    ],
)
def test_policy_terms_out_of_range_are_refused_and_change_nothing(
    migrated_store: Path, option: str, value: str, message: str
) -> None:
    settings = get_settings()
    database = database_of(settings)
    with database.unit_of_work() as session:
        register_provider(
            session,
            "acme",
            None,
            None,
            longest_deadline_seconds=settings.longest_challenge_deadline_seconds,
            actor="admin",
        )
    database.dispose()
    events = _count(AuditEvent)
    options = {"--domain": "math", "--share": "0.02", "--min-per-day": "1", option: value}
    result = _coin(
        "policy", "set", "--provider", "acme", *(part for pair in options.items() for part in pair)
    )
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"error: {message}") and result.stderr.count("\n") == 1
    assert _count(SamplingPolicy) == 0
    assert _count(AuditEvent) == events


def test_a_password_that_is_not_utf8_is_refused(migrated_store: Path) -> None:
    add = ["staff", "add", "--email", "d@b.example", "--password-stdin"]
    undecodable = b"\xff\xfe\xfdlongenoughpassword\n"
    result = _coin(*add, input=undecodable)
    assert (result.exit_code, result.stderr) == (2, "error: the password is not UTF-8 text\n")
    # The real command in a UTF-8 locale: stdin turns the bytes into lone surrogates.
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:surrogateescape", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", "from auditor.cli import main; main()", *add]
    run = subprocess.run(command, input=undecodable, env=env, capture_output=True, timeout=120)
    assert (run.returncode, run.stderr) == (2, b"error: the password is not UTF-8 text\n")
    assert _count(StaffAccount) == 0


def test_the_key_of_the_last_day_of_the_calendar_is_not_disclosed(migrated_store: Path) -> None:
    result = _coin("schedule-key", "--day", "9999-12-31")
    assert (result.exit_code, result.stderr) == (
        1,
        "error: 9999-12-31 has not ended: a day's key is disclosed once its draws are over\n",
    )


def test_the_demo_names_the_traces_it_lacks_before_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    traces = tmp_path / "traces"
    traces.mkdir()
    (traces / "other.jsonl").write_text("{}\n")
    (traces / DEMO_TRACE_FILES[0]).write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    result = _coin("demo", "--traces-dir", traces)
    assert (result.exit_code, result.stderr) == (
        2,
        f"error: --traces-dir {traces} lacks the demo's traces {DEMO_TRACE_FILES[1]}\n",
    )
    assert not (tmp_path / "var").exists()  # no store made, nothing migrated
    monkeypatch.setenv("COLUMNS", "200")
    assert all(name in _coin("demo", "--help").stdout for name in DEMO_TRACE_FILES)
