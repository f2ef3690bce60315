"""Health, readiness, metrics, settings, and the embedded default (SQLite, tasks in-process)."""

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import func, select

from api.app import create_app, run_periodic_jobs
from service.database import Database
from service.events import verify_chain
from service.migrate import upgrade_database
from service.models import Verdict
from service.settings import Settings
from tests.integration.support import ADMIN


def test_health_ready_and_metrics(client, settings):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["broker"] == "redis"
    client.post("/v1/providers", json={"name": "metrics-provider"}, headers=ADMIN)
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert 'coin_http_requests_total{method="POST",route="/v1/providers",status="201"}' in metrics.text
    assert 'coin_audits{status="pending"}' in metrics.text


def test_readyz_reports_a_dead_broker(settings):
    broken = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(broken), raise_server_exceptions=False) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["problems"] == ["broker: ConnectionError"]


def test_openapi_documents_every_endpoint_with_examples(client):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in ("/v1/providers", "/v1/reports", "/v1/reports/batch", "/v1/audits", "/v1/audits/{audit_id}",
                 "/v1/challenges", "/v1/challenges/{challenge_id}/response", "/v1/reports/{report_id}/status"):  # fmt: skip
        assert path in paths, path
    components = schema["components"]["schemas"]
    for name in ("ReportIn", "ReceiptOut", "AuditOut", "ChallengeOut", "ResponseIn", "ProviderCreate"):
        assert components[name].get("examples"), name
    assert "HTTPBearer" in schema["components"]["securitySchemes"]


def test_refuses_default_secrets_outside_development(monkeypatch):
    for name in ("COIN_SECRET_KEY", "COIN_SIGNING_KEY", "COIN_ADMIN_TOKEN", "COIN_ENV"):
        monkeypatch.delenv(name, raising=False)
    assert Settings().env == "development"  # the demo needs no configuration
    with pytest.raises(ValidationError, match="refuses the published default secrets"):
        Settings(env="production")
    with pytest.raises(ValidationError, match="COIN_ADMIN_TOKEN"):
        Settings(env="production", secret_key="s" * 32, signing_key="ab" * 32)
    with pytest.raises(ValidationError, match="64 hex"):
        Settings(signing_key="not-a-seed")
    ok = Settings(env="production", secret_key="s" * 32, signing_key="ab" * 32, admin_token="t" * 32)
    assert ok.embedded


def test_embedded_default_runs_a_whole_audit_on_sqlite(tmp_path, make_request):
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
        [challenge] = client.get("/v1/challenges", params={"status": "open"}, headers=provider).json()
        body = request.openings.respond(challenge["indices"], challenge["content_indices"]).to_json()
        answer = client.post(
            f"/v1/challenges/{challenge['challenge_id']}/response", json=body, headers=provider
        )
        assert answer.status_code == 202
        done = client.get(f"/v1/audits/{audit['audit_id']}", headers=admin).json()
        assert done["status"] == "done" and done["verdict"]["outcome"] == "pass"
        run_periodic_jobs(client.app.state.context)  # nothing stuck, nothing overdue: no change

    database = Database(url)
    with database.unit_of_work() as session:
        assert verify_chain(session).ok
        assert session.scalar(select(func.count()).select_from(Verdict)) == 1
    database.dispose()
