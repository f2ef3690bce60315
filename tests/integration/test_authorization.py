"""Who may do what: admin, provider (only its own resources), receipt holder, and nobody."""

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.integration.support import (
    ADMIN,
    MakeProvider,
    MakeRequest,
    WorkerProcess,
    bearer,
    open_audit,
    submit_report,
    wait_for_challenge,
)


@pytest.fixture
def two_providers(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    worker: WorkerProcess,
) -> dict[str, dict[str, Any]]:
    """Providers A and B, each with a report, a receipt, an audit and an open challenge."""
    world: dict[str, dict[str, Any]] = {}
    for name, index in (("a", 0), ("b", 1)):
        provider = make_provider(f"provider-{name}")
        request = make_request(index)
        receipt = submit_report(client, provider, request)
        audit_id = open_audit(client, receipt["report_id"])
        world[name] = {"provider": provider, "request": request, "receipt": receipt, "audit_id": audit_id}
    for side in world.values():
        side["challenge"] = wait_for_challenge(client, side["provider"], side["audit_id"])
    return world


def test_authorization_matrix(client: TestClient, two_providers: dict[str, dict[str, Any]]) -> None:
    a, b = two_providers["a"], two_providers["b"]
    key_a, key_b = a["provider"].headers, b["provider"].headers
    token_a, token_b = bearer(a["receipt"]["receipt_token"]), bearer(b["receipt"]["receipt_token"])
    report_b, audit_b = b["receipt"]["report_id"], b["audit_id"]
    challenge_b = b["challenge"]["challenge_id"]
    response_b = (
        b["request"].openings.respond(b["challenge"]["indices"], b["challenge"]["content_indices"]).to_json()
    )
    nobody: dict[str, str] = {}
    garbage = bearer("coin_0000000000000000_not-a-real-secret")
    wrong_secret = bearer(a["provider"].key[:-4] + "AAAA")

    # (method, path, body, headers, expected status)
    matrix = [
        # providers: admin only
        ("POST", "/v1/providers", {"name": "x"}, key_a, 403),
        ("POST", "/v1/providers", {"name": "x"}, token_a, 403),
        ("POST", "/v1/providers", {"name": "x"}, nobody, 401),
        ("POST", "/v1/providers", {"name": "x"}, garbage, 401),
        ("GET", "/v1/providers", None, key_a, 403),
        ("GET", "/v1/providers", None, ADMIN, 200),
        ("GET", "/v1/providers/me", None, key_a, 200),
        ("GET", "/v1/providers/me", None, wrong_secret, 401),
        # reports: a provider sees only its own; a receipt token only its report's status
        ("GET", f"/v1/reports/{report_b}", None, key_a, 404),
        ("GET", f"/v1/reports/{report_b}", None, key_b, 200),
        ("GET", f"/v1/reports/{report_b}", None, token_b, 403),
        ("GET", f"/v1/reports/{report_b}", None, ADMIN, 200),
        ("GET", f"/v1/reports/{report_b}/status", None, key_a, 404),
        ("GET", f"/v1/reports/{report_b}/status", None, token_a, 401),
        ("GET", f"/v1/reports/{report_b}/status", None, token_b, 200),
        ("GET", f"/v1/reports/{report_b}/status", None, nobody, 401),
        ("GET", f"/v1/reports/{uuid.uuid4()}/status", None, token_b, 401),
        ("POST", "/v1/reports", b["request"].report, ADMIN, 403),
        ("POST", "/v1/reports", b["request"].report, token_b, 403),
        ("POST", "/v1/reports/batch", {"reports": [b["request"].report]}, token_b, 403),
        # audits: opened by the admin or the receipt holder, never by the provider; read by owner/admin
        ("POST", "/v1/audits", {"report_id": report_b}, key_b, 403),
        ("POST", "/v1/audits", {"report_id": report_b}, key_a, 403),
        ("POST", "/v1/audits", {"report_id": report_b}, token_a, 401),
        ("POST", "/v1/audits", {"report_id": report_b}, nobody, 401),
        ("POST", "/v1/audits", {"report_id": str(uuid.uuid4())}, ADMIN, 404),
        ("GET", f"/v1/audits/{audit_b}", None, key_a, 404),
        ("GET", f"/v1/audits/{audit_b}", None, key_b, 200),
        ("GET", f"/v1/audits/{audit_b}", None, token_b, 403),
        ("GET", f"/v1/audits/{audit_b}", None, ADMIN, 200),
        ("GET", f"/v1/audits?provider={b['provider'].id}", None, key_a, 403),
        ("GET", "/v1/audits", None, token_a, 403),
        # challenges: only the provider answers its own
        ("GET", "/v1/challenges?status=open", None, token_a, 403),
        ("GET", "/v1/challenges?status=open", None, nobody, 401),
        ("POST", f"/v1/challenges/{challenge_b}/response", response_b, key_a, 404),
        ("POST", f"/v1/challenges/{challenge_b}/response", response_b, ADMIN, 403),
        ("POST", f"/v1/challenges/{challenge_b}/response", response_b, token_b, 403),
        ("POST", f"/v1/challenges/{challenge_b}/response", response_b, nobody, 401),
    ]
    failures = []
    for method, path, body, headers, expected in matrix:
        response = client.request(method, path, json=body, headers=headers)
        if response.status_code != expected:
            failures.append(f"{method} {path} as {headers or 'nobody'}: {response.status_code} != {expected}")
    assert not failures, "\n".join(failures)

    # Lists are filtered to the caller's own resources.
    own_audits = client.get("/v1/audits", headers=key_a).json()["items"]
    assert [x["audit_id"] for x in own_audits] == [a["audit_id"]]
    assert {x["audit_id"] for x in client.get("/v1/audits", headers=ADMIN).json()["items"]} == {
        a["audit_id"],
        audit_b,
    }
    filtered = client.get(f"/v1/audits?provider={b['provider'].id}&status=challenged", headers=ADMIN).json()
    assert [x["audit_id"] for x in filtered["items"]] == [audit_b]
    own_challenges = client.get("/v1/challenges?status=open", headers=key_a).json()["items"]
    assert [c["challenge_id"] for c in own_challenges] == [a["challenge"]["challenge_id"]]
    assert client.get("/v1/challenges?status=open", headers=ADMIN).json()["total"] == 2

    # After all that, B's challenge is still open and B can answer it.
    answered = client.post(f"/v1/challenges/{challenge_b}/response", json=response_b, headers=key_b)
    assert answered.status_code == 202, answered.text
