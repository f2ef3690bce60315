"""No input produces a 500: malformed, hostile and random bodies get 4xx, and nothing is half-written."""

import json
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from service.database import Database
from service.models import AuditEvent, Report
from tests.integration.support import ADMIN, MakeProvider, MakeRequest

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _post_raw(client: TestClient, path: str, raw: bytes, headers: dict[str, str]) -> httpx2.Response:
    return client.post(path, content=raw, headers={**headers, "Content-Type": "application/json"})


def test_hostile_bodies(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    database: Database,
) -> None:
    provider = make_provider()
    report = make_request(0).report
    mutations = {
        "nul in request_id": {**report, "request_id": "a\x00b"},
        "nul in raw usage": {**report, "usage": {**report["usage"], "raw": {"k": "\x00"}}},
        "huge integer": {**report, "usage": {**report["usage"], "input_tokens": 10**30}},
        "negative count": {**report, "usage": {**report["usage"], "input_tokens": -1}},
        "float count": {**report, "usage": {**report["usage"], "input_tokens": 1.5}},
        "bool count": {**report, "usage": {**report["usage"], "input_tokens": True}},
        "extra field": {**report, "extra": 1},
        "long request id": {**report, "request_id": "r" * 300},
        "long model": {**report, "model": "m" * 300},
        "commitment is a list": {**report, "commitment": [1, 2]},
        "answer is null": {**report, "answer": None},
        "size zero": {
            **report,
            "commitment": {**report["commitment"], "size": 0},
            "usage": {**report["usage"], "reasoning_tokens": 0},
        },
        "size huge": {
            **report,
            "commitment": {**report["commitment"], "size": 2**62},
            "usage": {**report["usage"], "reasoning_tokens": 2**62, "output_tokens": 2**62},
        },
        "bad signature pattern": {**report, "signature": "xyz"},
    }
    for name, body in mutations.items():
        response = client.post("/v1/reports", json=body, headers=provider.headers)
        assert 400 <= response.status_code < 500, (name, response.status_code, response.text)

    raw_bodies = {
        "not json": b"{not json",
        "empty": b"",
        "array": b"[]",
        "lone surrogate": json.dumps({**report, "request_id": "\ud800"}).encode(),
        "NaN": json.dumps({**report, "usage": {**report["usage"], "raw": {"x": float("nan")}}}).encode(),
        "Infinity": b'{"request_id": "x", "usage": {"raw": {"x": Infinity}}}',
        # A whole number as a float: JSONB would give it back as an integer canonical JSON cannot write.
        "1e21": json.dumps({**report, "usage": {**report["usage"], "raw": {"x": "@"}}})
        .replace('"@"', "1e21")
        .encode(),
        "deep nesting": b'{"usage": {"raw": ' + b"[" * 5000 + b"]" * 5000 + b"}}",
        "invalid utf-8": b'{"request_id": "\xff\xfe"}',
    }
    for name, raw in raw_bodies.items():
        for path in ("/v1/reports", "/v1/reports/batch", "/v1/providers", "/v1/audits"):
            headers = ADMIN if path in ("/v1/providers", "/v1/audits") else provider.headers
            response = _post_raw(client, path, raw, headers)
            assert 400 <= response.status_code < 500, (name, path, response.status_code, response.text)

    for name, path in {
        "bad uuid": "/v1/audits/not-a-uuid",
        "bad status filter": "/v1/audits?status=bogus",
        "bad limit": "/v1/audits?limit=0",
    }.items():
        response = client.get(path, headers=ADMIN)
        assert response.status_code == 422, (name, response.status_code)
    # A path that names no report (`:uuid`), so that /v1/reports/batch is a POST-only resource (405).
    assert client.get("/v1/reports/123/status", headers=ADMIN).status_code == 404
    batch = client.get("/v1/reports/batch", headers=ADMIN)
    assert batch.status_code == 405 and batch.headers["Allow"] == "POST"
    audits = client.options("/v1/audits", headers=ADMIN)
    assert audits.status_code == 405 and audits.headers["Allow"] == "GET, POST"

    with database.unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(Report)) == 0
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == 2


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=json_values)
def test_random_json_never_500(client: TestClient, make_provider: MakeProvider, body: Any) -> None:
    for path in (
        "/v1/reports",
        "/v1/reports/batch",
        "/v1/audits",
        "/v1/challenges/00000000-0000-0000-0000-000000000000/response",
    ):
        response = client.post(path, json=body, headers=ADMIN)
        assert response.status_code < 500, (path, body, response.text)


@pytest.fixture(scope="module")
def report_template(make_request: MakeRequest) -> dict[str, Any]:
    return make_request(0).report


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=json_values, usage=json_values)
def test_random_reports_never_500(
    client: TestClient,
    make_provider: MakeProvider,
    report_template: dict[str, Any],
    body: Any,
    usage: Any,
) -> None:
    provider = make_provider()
    report = report_template
    for candidate in (
        body,
        {**report, "usage": usage},
        {**report, "commitment": body},
        {**report, "answer": usage},
    ):
        response = client.post("/v1/reports", json=candidate, headers=provider.headers)
        assert response.status_code < 500, (candidate, response.text)


def test_a_bad_key_is_refused_before_the_body_is_judged(
    client: TestClient, make_provider: MakeProvider
) -> None:
    """Intake checks the key inside its unit of work, after FastAPI has validated the body; an invalid
    body must still get the key's refusal (401/403), not a 422 that a key holder would get."""
    provider = make_provider()
    last = provider.key[-1]
    wrong_secret = {"Authorization": f"Bearer {provider.key[:-1]}{'a' if last != 'a' else 'b'}"}
    for path, body in (("/v1/reports", {"request_id": 5}), ("/v1/reports/batch", {"reports": "x"})):
        refused = client.post(path, json=body, headers=wrong_secret)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer", refused.text
        assert client.post(path, json=body).status_code == 401
        assert client.post(path, json=body, headers=ADMIN).status_code == 403
        judged = client.post(path, json=body, headers=provider.headers)
        assert judged.status_code == 422 and judged.json()["errors"][0]["loc"], judged.text
