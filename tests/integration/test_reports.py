"""Report intake: idempotency, conflicts, protocol validation, receipts, batches, atomicity."""

import base64
import copy
import uuid
from collections.abc import Iterator
from typing import Any

from fastapi.testclient import TestClient
from nacl.signing import SigningKey
from sqlalchemy import func, select

from api.app import create_app
from auditor.protocol.encoding import canonical_json
from service.context import ServiceContext, database_of
from service.database import Database, PoolLimits
from service.models import AuditEvent, Base, Report
from service.security import sha256_hex, verify_signature
from service.settings import Settings
from tests.integration.support import (
    ADMIN,
    MakeProvider,
    MakeRequest,
    bearer,
)


def _count(database: Database, model: type[Base]) -> int:
    with database.unit_of_work() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_same_request_twice_returns_the_same_receipt(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    database: Database,
) -> None:
    provider = make_provider()
    request = make_request(0)
    first = client.post("/v1/reports", json=request.report, headers=provider.headers)
    assert first.status_code == 201, first.text
    # Same content, other key order: the canonical form is the same report.
    reordered = dict(reversed(list(request.report.items())))
    again = client.post("/v1/reports", json=reordered, headers=provider.headers)
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert _count(database, Report) == 1

    receipt = first.json()
    auditor_key = client.get("/v1/auditor").json()["public_key"]
    assert receipt["receipt"]["auditor_key"] == auditor_key
    assert verify_signature(auditor_key, receipt["receipt"], receipt["signature"])
    with database.unit_of_work() as session:
        stored = session.get_one(Report, __import__("uuid").UUID(receipt["report_id"]))
        # The token is kept as a hash only; the digest is H(canonical report).
        assert stored.receipt_token_hash == sha256_hex(receipt["receipt_token"])
        assert receipt["receipt_token"] not in str(stored.receipt) + str(stored.body)
        assert stored.digest == receipt["receipt"]["digest"]


def test_same_request_id_with_another_body_is_a_conflict(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    database: Database,
) -> None:
    provider = make_provider()
    request = make_request(0)
    assert client.post("/v1/reports", json=request.report, headers=provider.headers).status_code == 201
    inflated = copy.deepcopy(request.report)
    inflated["usage"]["input_tokens"] += 1
    response = client.post("/v1/reports", json=inflated, headers=provider.headers)
    assert response.status_code == 409, response.text
    assert "different content" in response.json()["detail"]
    assert _count(database, Report) == 1

    # The same request id under another provider is another request.
    other = make_provider()
    assert client.post("/v1/reports", json=inflated, headers=other.headers).status_code == 201


def _bad(report: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    bad = copy.deepcopy(report)
    target = bad
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return bad


def test_protocol_violations_are_400_and_store_nothing(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    database: Database,
) -> None:
    provider = make_provider()
    report = make_request(0).report
    size = report["commitment"]["size"]
    cases = {
        "size differs from reasoning_tokens": _bad(report, ["usage", "reasoning_tokens"], size + 1),
        "reasoning above output": _bad(report, ["usage", "output_tokens"], size - 1),
        "unknown embd_id": _bad(report, ["commitment", "embd_id"], "all-MiniLM-L6-v2@0000000000000000"),
        "unknown tokenizer": _bad(report, ["commitment", "tokenizer_id"], "gpt-17"),
        "root not hex": _bad(report, ["commitment", "root"], "zz" * 32),
        "root too short": _bad(report, ["commitment", "root"], "ab" * 16),
        "block size out of range": _bad(report, ["commitment", "block_size"], 8),
        "unknown version": _bad(report, ["commitment", "version"], "coin/0"),
        "embedding wrong length": _bad(
            report, ["answer", "embedding"], base64.b64encode(b"\x01" * 10).decode()
        ),
        "signature without a key": {**report, "signature": "ab" * 64},
    }
    for name, body in cases.items():
        response = client.post("/v1/reports", json=body, headers=provider.headers)
        assert response.status_code == 400, (name, response.text)
        assert response.json()["detail"].startswith("protocol violation"), name
    assert _count(database, Report) == 0
    assert _count(database, AuditEvent) == 2  # provider.created and api_key.issued only


def test_schema_errors_are_422_with_the_field(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
) -> None:
    provider = make_provider()
    report = make_request(0).report
    response = client.post(
        "/v1/reports", json=_bad(report, ["usage", "reasoning_tokens"], "12"), headers=provider.headers
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "usage", "reasoning_tokens"]
    missing = {k: v for k, v in report.items() if k != "commitment"}
    response = client.post("/v1/reports", json=missing, headers=provider.headers)
    assert response.status_code == 422
    assert ["body", "commitment"] in [e["loc"] for e in response.json()["errors"]]


def test_signed_reports(client: TestClient, make_provider: MakeProvider, make_request: MakeRequest) -> None:
    key = SigningKey.generate()
    provider = make_provider(public_key=bytes(key.verify_key).hex())
    report = make_request(0).report
    unsigned = client.post("/v1/reports", json=report, headers=provider.headers)
    assert unsigned.status_code == 400 and "must be signed" in unsigned.json()["detail"]
    forged = client.post("/v1/reports", json={**report, "signature": "00" * 64}, headers=provider.headers)
    assert forged.status_code == 400
    signature = key.sign(canonical_json(report)).signature.hex()
    signed = client.post("/v1/reports", json={**report, "signature": signature}, headers=provider.headers)
    assert signed.status_code == 201, signed.text


def test_batch_gives_each_report_its_own_outcome(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    database: Database,
) -> None:
    provider = make_provider()
    stored = make_request(0).report
    assert client.post("/v1/reports", json=stored, headers=provider.headers).status_code == 201
    fresh = make_request(1).report
    conflicting = _bad(stored, ["model"], "another-model")
    protocol = _bad(make_request(2).report, ["commitment", "tokenizer_id"], "nope")
    schema = _bad(fresh, ["request_id"], 12)
    response = client.post(
        "/v1/reports/batch",
        json={"reports": [fresh, stored, conflicting, protocol, schema, "not an object"]},
        headers=provider.headers,
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 200, 409, 400, 422, 422]
    assert results[0]["receipt"]["receipt"]["request_id"] == fresh["request_id"]
    assert _count(database, Report) == 2

    too_many = client.post("/v1/reports/batch", json={"reports": [fresh] * 1001}, headers=provider.headers)
    assert too_many.status_code == 422


def test_batch_of_a_thousand(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    database: Database,
) -> None:
    provider = make_provider()
    template = make_request(0).report
    reports = [{**template, "request_id": f"bulk-{i}"} for i in range(1000)]
    response = client.post("/v1/reports/batch", json={"reports": reports}, headers=provider.headers)
    assert response.status_code == 200
    assert {r["status"] for r in response.json()["results"]} == {201}
    assert _count(database, Report) == 1000


def test_body_above_the_limit_is_413(
    client: TestClient, make_provider: MakeProvider, settings: Settings
) -> None:
    provider = make_provider()
    huge = b'{"reports": ["' + b"x" * settings.max_body_bytes + b'"]}'
    response = client.post(
        "/v1/reports/batch", content=huge, headers={**provider.headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 413

    def chunks() -> Iterator[bytes]:
        yield b'{"reports": ["'
        for _ in range(settings.max_body_bytes // 65536 + 1):
            yield b"y" * 65536
        yield b'"]}'

    streamed = client.post(
        "/v1/reports/batch",
        content=chunks(),
        headers={**provider.headers, "Content-Type": "application/json"},
    )
    assert streamed.status_code == 413
    # A challenge's response carries the whole repetition profile: it has its own, larger limit.
    assert settings.max_response_bytes > settings.max_body_bytes
    answer = client.post(
        f"/v1/challenges/{uuid.uuid4()}/response",
        content=b'{"openings": ["' + b"z" * settings.max_body_bytes + b'"]}',
        headers={**provider.headers, "Content-Type": "application/json"},
    )
    assert answer.status_code == 422, answer.text  # read and judged, not refused for its size
    # ... but only for a provider, whose key is checked before the body is read (FastAPI parses a body
    # before the endpoint's own check): anyone else is refused as the endpoint refuses them, whatever
    # the size.
    for token in ("coin_0000000000000000_not-a-key", ADMIN["Authorization"].removeprefix("Bearer ")):
        stranger = client.post(
            f"/v1/challenges/{uuid.uuid4()}/response",
            content=b'{"openings": ["' + b"z" * settings.max_body_bytes + b'"]}',
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        assert stranger.status_code in (401, 403), stranger.text


def test_customer_may_audit_within_its_quota(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    settings: Settings,
) -> None:
    provider = make_provider()
    receipt = client.post("/v1/reports", json=make_request(0).report, headers=provider.headers).json()
    token = bearer(receipt["receipt_token"])
    first = client.post("/v1/audits", json={"report_id": receipt["report_id"]}, headers=token)
    assert first.status_code == 202 and first.json()["created"]
    status = client.get(f"/v1/reports/{receipt['report_id']}/status", headers=token)
    assert status.status_code == 200
    assert status.json()["audits"][0]["trigger"] == "customer"
    assert "body" not in status.json()  # a customer sees counts and outcomes, not the commitment
    assert client.get(f"/v1/reports/{receipt['report_id']}", headers=token).status_code == 403
    assert client.get(f"/v1/reports/{receipt['report_id']}", headers=ADMIN).status_code == 200


def test_no_free_database_connection_is_503_with_retry_after(
    settings: Settings,
    make_provider: MakeProvider,
    make_request: MakeRequest,
) -> None:
    provider = make_provider()
    context = ServiceContext.from_settings(settings)
    context.db.dispose()
    context.db = database_of(settings, PoolLimits(size=1, overflow=0, timeout_seconds=0.2))
    overloaded = TestClient(create_app(settings, context), raise_server_exceptions=False)
    try:
        with context.db.engine.connect():  # the pool's only connection, busy
            response = overloaded.post("/v1/reports", json=make_request(0).report, headers=provider.headers)
            # An invalid body's key cannot be checked either: the body's own error stands, never a 500.
            invalid = overloaded.post("/v1/reports", json={"request_id": 5}, headers=provider.headers)
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "1"
        assert invalid.status_code == 422, invalid.text
        # Once a connection is free again, the same request goes through.
        retried = overloaded.post("/v1/reports", json=make_request(0).report, headers=provider.headers)
        assert retried.status_code == 201, retried.text
    finally:
        context.close()
