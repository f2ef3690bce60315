"""Health, readiness, metrics, settings, and the embedded default (SQLite, tasks in-process)."""

from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import func, select

from api.app import create_app, run_periodic_jobs
from service.context import database_of
from service.events import verify_chain
from service.migrate import upgrade_database
from service.models import Verdict
from service.settings import DEV_CHAIN_KEY, DEV_SECRET_KEY, Settings
from tests.integration.support import ADMIN, MakeProvider, MakeRequest


def _counter(text: str, sample: str) -> float:
    line = next((line for line in text.splitlines() if line.startswith(sample + " ")), None)
    return float(line.split()[-1]) if line else 0.0


def test_health_ready_and_metrics(
    client: TestClient,
    settings: Settings,
    make_provider: MakeProvider,
    make_request: MakeRequest,
) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["broker"] == "redis"
    stored = 'coin_reports_total{outcome="stored"}'
    before = _counter(client.get("/metrics", headers=ADMIN).text, stored)
    provider = make_provider("metrics-provider")
    request = make_request(0)
    assert client.post("/v1/reports", json=request.report, headers=provider.headers).status_code == 201
    assert client.post("/v1/reports", json=request.report, headers=provider.headers).status_code == 200
    assert client.get("/metrics").status_code == 401  # not for anyone who can reach the port
    metrics = client.get("/metrics", headers=ADMIN)
    assert metrics.status_code == 200
    assert 'coin_http_requests_total{method="POST",route="/v1/providers",status="201"}' in metrics.text
    assert 'coin_audits{status="pending"}' in metrics.text
    assert _counter(metrics.text, stored) == before + 1
    assert _counter(metrics.text, 'coin_reports_total{outcome="replayed"}') >= 1


def test_readyz_reports_a_dead_broker(settings: Settings) -> None:
    broken = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(broken), raise_server_exceptions=False) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["problems"] == ["broker: ConnectionError"]


def test_openapi_documents_every_endpoint_with_examples(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in ("/v1/providers", "/v1/reports", "/v1/reports/batch", "/v1/audits", "/v1/audits/{audit_id}",
                 "/v1/challenges", "/v1/challenges/{challenge_id}/response", "/v1/reports/{report_id}/status"):  # fmt: skip
        assert path in paths, path
    components = schema["components"]["schemas"]
    for name in ("ReportIn", "ReceiptOut", "AuditOut", "ChallengeOut", "ResponseIn", "ProviderCreate"):
        assert components[name].get("examples"), name
    assert "HTTPBearer" in schema["components"]["securitySchemes"]


def test_openapi_documents_problems_on_every_operation_and_enum_statuses(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    problem = {"$ref": "#/components/schemas/Problem"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            # /readyz answers 503 with its own body: which dependency is down.
            for code in ("422", "500") if path == "/readyz" else ("422", "500", "503"):
                assert responses[code]["content"] == {"application/problem+json": {"schema": problem}}, (
                    method,
                    path,
                    code,
                )
    components = schema["components"]["schemas"]
    assert "HTTPValidationError" not in components  # the one error model replaces FastAPI's own
    assert set(components["Problem"]["required"]) == {"title", "status", "detail"}
    assert components["AuditStatus"]["enum"] == ["pending", "challenged", "verifying", "done"]
    assert components["Outcome"]["enum"] == ["pass", "suspect", "fail", "inconclusive"]
    for outcome in ("`pass`", "`suspect`", "`fail`", "`inconclusive`"):  # each value explained
        assert outcome in components["Outcome"]["description"], outcome
    assert "accuses nobody" in components["VerdictOut"]["properties"]["outcome"]["description"]
    assert components["ChallengeStatus"]["enum"] == ["open", "answered", "expired"]
    assert components["AuditOut"]["properties"]["status"] == {"$ref": "#/components/schemas/AuditStatus"}


def test_errors_are_problem_details(client: TestClient, make_provider: MakeProvider) -> None:
    missing = client.get("/v1/audits/6a0e2b8c-54c7-4b59-8f0e-6f7f4f1b9a21", headers=ADMIN)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json() == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "audit not found",
    }
    unknown_route = client.get("/v1/nowhere")
    assert unknown_route.status_code == 404 and unknown_route.json()["title"] == "Not Found"
    no_key = client.get("/v1/challenges")
    assert no_key.status_code == 401 and no_key.headers["www-authenticate"] == "Bearer"
    assert no_key.headers["content-type"] == "application/problem+json"
    bad = client.post("/v1/providers", json={"name": 5}, headers=ADMIN)
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["body", "name"]
    duplicate = make_provider("twice")
    again = client.post("/v1/providers", json={"name": duplicate.name}, headers=ADMIN)
    assert again.status_code == 409 and "already exists" in again.json()["detail"]


def test_refuses_default_secrets_outside_development(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("COIN_SECRET_KEY", "COIN_SIGNING_KEY", "COIN_ADMIN_TOKEN", "COIN_ENV"):
        monkeypatch.delenv(name, raising=False)
    assert Settings().env == "development"  # the demo needs no configuration
    # Raw strings, as the environment gives them: pydantic validates and coerces them.
    for unknown in ("prod", "staging", "dev"):
        with pytest.raises(ValidationError, match="development"):
            Settings(env=unknown)
    assert (
        Settings(
            env="PRODUCTION ",
            secret_key="s" * 32,
            signing_key="ab" * 32,
            admin_token="t" * 32,
            chain_key="c" * 32,
        ).env
        == "production"
    )
    with pytest.raises(ValidationError, match="refuses the published default secrets"):
        Settings(env="production")
    real: dict[str, Any] = {
        "secret_key": "s" * 32,
        "signing_key": "ab" * 32,
        "admin_token": "t" * 32,
        "chain_key": "c" * 32,
    }
    for name, published in (("signing_key", "C0" * 32), ("signing_key", " ".join(["c0"] * 32)),
                            ("secret_key", DEV_SECRET_KEY + " "), ("secret_key_previous", DEV_SECRET_KEY),
                            ("chain_key_previous", DEV_CHAIN_KEY)):  # fmt: skip
        with pytest.raises(ValidationError, match=f"published default secrets: set COIN_{name.upper()} "):
            Settings(env="production", **{**real, name: published})
    with pytest.raises(ValidationError, match="COIN_ADMIN_TOKEN"):
        Settings(env="production", secret_key="s" * 32, signing_key="ab" * 32)
    with pytest.raises(ValidationError, match="64 hex"):
        Settings(signing_key="not-a-seed")
    with pytest.raises(ValidationError, match="COIN_SECRET_KEY must be at least 32"):
        Settings(
            env="production",
            secret_key="s" * 31,
            signing_key="ab" * 32,
            admin_token="t" * 32,
            chain_key="c" * 32,
        )
    ok = Settings(
        env="production",
        secret_key="s" * 32,
        signing_key="ab" * 32,
        admin_token="t" * 32,
        chain_key="c" * 32,
    )
    assert ok.embedded


def test_embedded_default_runs_a_whole_audit_on_sqlite(tmp_path: Path, make_request: MakeRequest) -> None:
    """No broker, a SQLite file: tasks run in-process after each commit, and the same code holds."""
    url = f"sqlite:///{tmp_path / 'coin.sqlite3'}"
    upgrade_database(url)
    settings = Settings(database_url=url, challenge_deadline_seconds=60)
    request = make_request(1)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        admin = {"Authorization": f"Bearer {settings.admin_token.get_secret_value()}"}
        key = client.post("/v1/providers", json={"name": "embedded"}, headers=admin).json()["api_key"]
        provider = {"Authorization": f"Bearer {key}"}
        receipt = client.post("/v1/reports", json=request.report, headers=provider)
        assert receipt.status_code == 201
        assert client.post("/v1/reports", json=request.report, headers=provider).status_code == 200
        audit = client.post(
            "/v1/audits", json={"report_id": receipt.json()["report_id"]}, headers=admin
        ).json()
        # In-process: the challenge is drawn before the request returns.
        page = client.get("/v1/challenges", params={"status": "open"}, headers=provider).json()
        [challenge] = page["items"]
        body = request.openings.respond(challenge["indices"], challenge["content_indices"]).to_json()
        answer = client.post(
            f"/v1/challenges/{challenge['challenge_id']}/response", json=body, headers=provider
        )
        assert answer.status_code == 202
        done = client.get(f"/v1/audits/{audit['audit_id']}", headers=admin).json()
        assert done["status"] == "done" and done["verdict"]["outcome"] == "pass"
        assert isinstance(client.app, FastAPI)
        run_periodic_jobs(client.app.state.context)  # nothing stuck, nothing overdue: no change

    database = database_of(settings)
    with database.unit_of_work() as session:
        assert verify_chain(session).ok
        assert session.scalar(select(func.count()).select_from(Verdict)) == 1
    database.dispose()
