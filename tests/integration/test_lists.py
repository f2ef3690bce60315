"""The staff's JSON lists (`GET /v1/reports`, `/v1/audits`, `/v1/challenges`): filters, cursor pages,
totals, unknown parameters refused, tenant isolation; and API key rotation and revocation."""

import copy
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.database import Database
from service.events import verify_chain
from service.listing import Cursor
from service.models import AuditEvent
from tests.integration.support import (
    ADMIN,
    MakeProvider,
    MakeRequest,
    ProviderAccount,
    WorkerProcess,
    bearer,
    open_audit,
    wait_for_challenge,
)


def _copies(template: dict[str, Any], tag: str, count: int, model: str) -> list[dict[str, Any]]:
    """`count` reports of one real commitment under new request ids (the commitment does not bind the
    request id or the model)."""
    reports = []
    for k in range(count):
        report = copy.deepcopy(template)
        report["request_id"], report["model"] = f"{tag}-{k:03d}", model
        reports.append(report)
    return reports


def _store(client: TestClient, provider: ProviderAccount, reports: list[dict[str, Any]]) -> list[str]:
    response = client.post("/v1/reports/batch", json={"reports": reports}, headers=provider.headers)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert {r["status"] for r in results} == {201}, results
    return [r["report_id"] for r in results]


def _all_pages(
    client: TestClient, path: str, headers: dict[str, str], **params: Any
) -> tuple[list[dict[str, Any]], list[int]]:
    """Every item of a list, page by page; and the `total` each page gave."""
    items, totals, cursor = [], [], None
    for _ in range(100):
        response = client.get(
            path, params={**params, **({"cursor": cursor} if cursor else {})}, headers=headers
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= params.get("limit", 100)
        items += page["items"]
        totals.append(page["total"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items, totals
    raise AssertionError("the pages never end")


@pytest.fixture
def world(client: TestClient, make_provider: MakeProvider, make_request: MakeRequest) -> dict[str, Any]:
    """Provider a: 12 reports of model m-large then 5 of m-small (after `between`); provider b: 4."""
    a, b = make_provider("lists-a"), make_provider("lists-b")
    template = make_request(0).report
    first = _store(client, a, _copies(template, "a-large", 12, "m-large"))
    time.sleep(0.01)
    between = datetime.now(UTC)
    time.sleep(0.01)
    second = _store(client, a, _copies(template, "a-small", 5, "m-small"))
    other = _store(client, b, _copies(template, "b", 4, "m-large"))
    return {"a": a, "b": b, "a_large": first, "a_small": second, "b_reports": other, "between": between}


def test_reports_page_through_every_filter_without_duplicates(
    client: TestClient, world: dict[str, Any]
) -> None:
    a, b = world["a"], world["b"]
    everything, totals = _all_pages(client, "/v1/reports", ADMIN, limit=4)
    ids = [r["report_id"] for r in everything]
    assert len(ids) == len(set(ids)) == 21 and set(totals) == {21}
    received = [r["received_at"] for r in everything]
    assert received == sorted(received, reverse=True)  # newest first

    mine, totals = _all_pages(client, "/v1/reports", ADMIN, provider=a.id, limit=5)
    assert {r["report_id"] for r in mine} == set(world["a_large"] + world["a_small"]) and set(totals) == {17}
    assert {r["provider_id"] for r in mine} == {a.id}
    small, _ = _all_pages(client, "/v1/reports", ADMIN, model="m-small")
    assert {r["report_id"] for r in small} == set(world["a_small"])
    [one] = client.get("/v1/reports", params={"request_id": "b-002"}, headers=ADMIN).json()["items"]
    assert one["report_id"] == world["b_reports"][2] and one["model"] == "m-large" and one["audits"] == []

    between = world["between"].isoformat()
    later, _ = _all_pages(client, "/v1/reports", ADMIN, provider=a.id, received_from=between, limit=2)
    assert {r["report_id"] for r in later} == set(world["a_small"])
    earlier, _ = _all_pages(client, "/v1/reports", ADMIN, provider=a.id, received_to=between, limit=50)
    assert {r["report_id"] for r in earlier} == set(world["a_large"])
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()  # a date: midnight UTC
    assert client.get("/v1/reports", params={"received_from": tomorrow}, headers=ADMIN).json() == {
        "items": [], "next_cursor": None, "total": 0,
    }  # fmt: skip
    nothing = client.get("/v1/reports", params={"provider": b.id, "model": "m-small"}, headers=ADMIN)
    assert nothing.json()["total"] == 0


def test_lists_refuse_unknown_parameters_and_bad_cursors(client: TestClient, world: dict[str, Any]) -> None:
    for path in ("/v1/reports", "/v1/audits", "/v1/challenges", "/v1/providers", "/v1/auditor", "/healthz"):
        response = client.get(path, params={"outcom": "fail"}, headers=ADMIN)
        assert response.status_code == 422, (path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"] == [
            {"loc": ["query", "outcom"], "msg": "unknown query parameter", "type": "extra_forbidden"}
        ]
    past_calendar = datetime(9999, 12, 31, 23, tzinfo=timezone(-timedelta(hours=23)))  # in UTC: year 10000
    for params in ({"cursor": "not-a-cursor"}, {"limit": 0}, {"limit": 501}, {"received_from": "yesterday"},
                   {"received_to": "0.5"}, {"received_from": "1764500000"},  # no Unix time: ISO 8601 only
                   {"received_from": "9999-12-31T23:59:59-23:00"},  # in UTC past the calendar
                   {"received_to": "0001-01-01T00:00:00+23:00"},  # in UTC before it
                   {"cursor": Cursor(past_calendar, uuid.uuid4()).encode()},
                   {"outcome": "guilty"}, {"provider": "nobody"}):  # fmt: skip
        response = client.get("/v1/reports", params=params, headers=ADMIN)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["errors"][0]["loc"][:2] == ["query", next(iter(params))]
    assert client.get("/v1/reports", params={"limit": 500}, headers=ADMIN).status_code == 200


def test_a_provider_lists_only_its_own(
    client: TestClient, world: dict[str, Any], make_request: MakeRequest
) -> None:
    a, b = world["a"], world["b"]
    own = client.get("/v1/reports", params={"limit": 500}, headers=a.headers).json()
    assert own["total"] == 17 and {r["provider_id"] for r in own["items"]} == {a.id}
    # Another provider's request id finds nothing; naming another provider is refused.
    assert client.get("/v1/reports", params={"request_id": "b-000"}, headers=a.headers).json()["total"] == 0
    for path in ("/v1/reports", "/v1/audits", "/v1/challenges"):
        assert client.get(path, params={"provider": b.id}, headers=a.headers).status_code == 403, path
        assert client.get(path, params={"provider": a.id}, headers=a.headers).status_code == 200, path
    receipt = client.post("/v1/reports", json=make_request(1).report, headers=b.headers).json()
    token = bearer(receipt["receipt_token"])
    for path in ("/v1/reports", "/v1/audits", "/v1/challenges"):
        assert client.get(path, headers=token).status_code == 403, path
        assert client.get(path).status_code == 401, path


def test_audits_and_challenges_page_and_filter(
    client: TestClient, world: dict[str, Any], worker: WorkerProcess
) -> None:
    a, b = world["a"], world["b"]
    audit_ids = {open_audit(client, report_id): a for report_id in world["a_large"][:5]}
    audit_ids |= {open_audit(client, report_id): b for report_id in world["b_reports"][:2]}
    challenges = {
        audit: wait_for_challenge(client, owner, audit)["challenge_id"] for audit, owner in audit_ids.items()
    }

    audits, totals = _all_pages(client, "/v1/audits", ADMIN, limit=3)
    assert [x["audit_id"] for x in audits] == list(reversed(audit_ids)) and set(totals) == {7}  # newest first
    own, _ = _all_pages(client, "/v1/audits", a.headers, status="challenged", limit=2)
    assert {x["audit_id"] for x in own} == {audit for audit, owner in audit_ids.items() if owner == a}
    by_request = client.get("/v1/audits", params={"request_id": "a-large-003"}, headers=ADMIN).json()
    assert by_request["total"] == 1 and by_request["items"][0]["request_id"] == "a-large-003"
    assert client.get("/v1/audits", params={"model": "m-small"}, headers=ADMIN).json()["total"] == 0
    assert client.get("/v1/audits", params={"outcome": "pass"}, headers=ADMIN).json()["total"] == 0

    listed, totals = _all_pages(client, "/v1/challenges", ADMIN, status="open", limit=2)
    assert {c["challenge_id"] for c in listed} == set(challenges.values()) and set(totals) == {7}
    deadlines = [c["deadline"] for c in listed]
    assert deadlines == sorted(deadlines)  # soonest deadline first
    own, _ = _all_pages(client, "/v1/challenges", b.headers, limit=1)
    assert {c["audit_id"] for c in own} == {audit for audit, owner in audit_ids.items() if owner == b}
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert client.get("/v1/challenges", params={"issued_from": future}, headers=ADMIN).json()["total"] == 0


def test_keys_rotate_and_revoke_with_events_in_the_trail(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    database: Database,
) -> None:
    provider = make_provider("rotating")
    old = provider.key
    keys = f"/v1/providers/{provider.id}/keys"
    assert client.post(keys, headers=provider.headers).status_code == 403  # the admin's, not the provider's
    issued = client.post(keys, headers=ADMIN)
    assert issued.status_code == 201, issued.text
    new = issued.json()["api_key"]
    new_prefix = issued.json()["prefix"]
    assert new.startswith(f"coin_{new_prefix}_") and new != old
    # Both keys work until the old one is revoked: a provider rotates without downtime.
    for key in (old, new):
        assert client.get("/v1/providers/me", headers=bearer(key)).status_code == 200

    listed = client.get(keys, headers=ADMIN).json()
    assert [k["prefix"] for k in listed] == [new_prefix, old.split("_")[1]]  # newest first
    assert all(set(k) == {"prefix", "created_at", "revoked_at"} for k in listed)  # never a secret
    old_prefix = old.split("_")[1]
    revoked = client.delete(f"{keys}/{old_prefix}", headers=ADMIN)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    refused = client.get("/v1/providers/me", headers=bearer(old))
    assert refused.status_code == 401 and refused.headers["content-type"] == "application/problem+json"
    assert client.post("/v1/reports", json=make_request(0).report, headers=bearer(old)).status_code == 401
    assert client.post("/v1/reports", json=make_request(0).report, headers=bearer(new)).status_code == 201
    again = client.delete(f"{keys}/{old_prefix}", headers=ADMIN)
    assert again.status_code == 200 and again.json()["revoked_at"] == revoked.json()["revoked_at"]

    assert client.delete(f"{keys}/{'0' * 16}", headers=ADMIN).status_code == 404
    assert client.delete(f"{keys}/not-a-prefix", headers=ADMIN).status_code == 422
    assert client.get(f"/v1/providers/{uuid.uuid4()}/keys", headers=ADMIN).status_code == 404
    assert client.delete(f"{keys}/{new_prefix}", headers=bearer(new)).status_code == 403

    with database.unit_of_work() as session:
        events = session.execute(
            select(AuditEvent.kind, AuditEvent.payload)
            .where(AuditEvent.provider_id == uuid.UUID(provider.id), AuditEvent.kind.like("api_key.%"))
            .order_by(AuditEvent.seq)
        ).all()
        assert verify_chain(session).ok
    assert [(kind, payload["prefix"], payload["by"]) for kind, payload in events] == [
        ("api_key.issued", old_prefix, "admin"),
        ("api_key.issued", new_prefix, "admin"),
        ("api_key.revoked", old_prefix, "admin"),  # once: revoking a revoked key records nothing
    ]


def test_openapi_documents_the_lists_and_keys(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths, components = schema["paths"], schema["components"]["schemas"]
    for name, item in (
        ("ReportPage", "ReportListed"),
        ("AuditPage", "AuditOut"),
        ("ChallengePage", "ChallengeOut"),
    ):
        page = components[name]
        assert set(page["required"]) == {"items", "next_cursor", "total"}, name
        assert page["properties"]["items"]["items"] == {"$ref": f"#/components/schemas/{item}"}
    listed = {p["name"] for p in paths["/v1/reports"]["get"]["parameters"]}
    assert listed == {
        "provider",
        "model",
        "request_id",
        "received_from",
        "received_to",
        "cursor",
        "limit",
        "outcome",
    }
    assert {p["name"] for p in paths["/v1/audits"]["get"]["parameters"]} >= {
        "created_from",
        "status",
        "outcome",
    }
    assert {p["name"] for p in paths["/v1/challenges"]["get"]["parameters"]} >= {"issued_to", "status"}
    limit = next(p for p in paths["/v1/audits"]["get"]["parameters"] if p["name"] == "limit")["schema"]
    assert (limit["minimum"], limit["maximum"]) == (1, 500)
    assert set(paths["/v1/providers/{provider_id}/keys"]) == {"get", "post"}
    assert "delete" in paths["/v1/providers/{provider_id}/keys/{prefix}"]
    assert components["ApiKeyIssued"]["examples"] and "api_key" not in components["ApiKeyOut"]["properties"]
    assert not [path for path in paths if path.startswith("/dashboard")]  # pages are not the API
