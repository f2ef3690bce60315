"""Full audits through the REST API and a real Celery worker: honest, forged, silent providers."""

import base64
from typing import Any

from sqlalchemy import func, select

from service.events import verify_chain
from service.models import AuditEvent, Verdict
from service.security import verify_signature
from tests.integration.support import (
    ADMIN,
    answer_until_verdict,
    get_audit,
    open_audit,
    respond,
    submit_report,
    wait_for_challenge,
    wait_for_verdict,
)


def test_honest_provider_passes_with_a_signed_verdict(client, make_provider, make_request, worker, database):
    provider = make_provider()
    request = make_request(0)
    receipt = submit_report(client, provider, request)
    audit_id = open_audit(client, receipt["report_id"])

    challenge = wait_for_challenge(client, provider, audit_id)
    assert challenge["request_id"] == request.request_id
    assert 0 in challenge["indices"] and request.report["commitment"]["size"] - 1 in challenge["indices"]
    audit = answer_until_verdict(client, provider, audit_id, request.openings)
    verdict = audit["verdict"]
    assert verdict["outcome"] == "pass", verdict
    checks = {c["name"]: c for c in verdict["statement"]["evidence"]["checks"]}
    assert checks.keys() == {
        "proof", "block_consistency", "token_embedding",  # DESIGN §3 checks 1-3
        "tokens_to_block", "block_to_answer", "duplicate_blocks", "repeated_token", "tokenization", "verifier",  # 4-8
    }  # fmt: skip
    assert all(c["outcome"] == "pass" for c in checks.values())
    exposure = verdict["statement"]["evidence"]["exposure"]
    assert 0 < exposure["blocks"] <= 0.25 + 1e-9 and 0 < exposure["tokens"] <= 0.05
    assert verdict["statement"]["report_digest"] == receipt["receipt"]["digest"]

    auditor_key = client.get("/v1/auditor").json()["public_key"]
    assert verdict["signing_key"] == auditor_key
    assert verify_signature(auditor_key, verdict["statement"], verdict["signature"])
    assert not verify_signature(
        auditor_key, {**verdict["statement"], "outcome": "fail"}, verdict["signature"]
    )

    status = client.get(
        f"/v1/reports/{receipt['report_id']}/status",
        headers={"Authorization": f"Bearer {receipt['receipt_token']}"},
    )
    assert status.status_code == 200
    assert status.json()["audits"][0]["outcome"] == "pass"

    with database.unit_of_work() as session:
        kinds = session.scalars(select(AuditEvent.kind).order_by(AuditEvent.seq)).all()
        assert verify_chain(session).ok
    rounds = kinds.count("challenge.issued")
    assert rounds >= 1 and kinds.count("response.received") == rounds
    # (a slow first start may also show an `audit.requeued` by the sweeper: harmless, jobs are idempotent)
    assert kinds.index("audit.requested") < kinds.index("challenge.issued") and kinds[-1] == "verdict.issued"


def _forge_token(opening: dict[str, Any]) -> dict[str, Any]:
    """Reveal a different token than the one committed (the fingerprint and proof stay genuine)."""
    token = base64.b64decode(opening["token"])
    forged = b" banana" if token != b" banana" else b" apple"
    return {**opening, "token": base64.b64encode(forged).decode()}


def _forge_proof(opening: dict[str, Any]) -> dict[str, Any]:
    """Open a count leaf with a salt it was not committed with: its path no longer reaches the root."""
    salt = bytes.fromhex(opening["salt"])
    return {**opening, "salt": bytes([salt[0] ^ 1]).hex() + salt[1:].hex()}


def test_forged_openings_fail(client, make_provider, make_request, worker):
    provider = make_provider()
    audits = {}
    for name, request_index in (("token", 1), ("proof", 2)):
        request = make_request(request_index)
        receipt = submit_report(client, provider, request)
        audits[name] = (open_audit(client, receipt["report_id"]), request)

    expected_failure = {"token": "token_embedding", "proof": "proof"}
    for name, (audit_id, request) in audits.items():
        challenge = wait_for_challenge(client, provider, audit_id)
        body = request.openings.respond(challenge["indices"], challenge["content_indices"]).to_json()
        content = set(challenge["content_indices"])
        forge = _forge_token if name == "token" else _forge_proof
        target = next(o for o in body["openings"] if (o["index"] in content) == (name == "token"))
        body["openings"] = [forge(o) if o is target else o for o in body["openings"]]
        assert respond(client, provider, challenge, body).status_code == 202

    for name, (audit_id, _) in audits.items():
        verdict = wait_for_verdict(client, audit_id)["verdict"]
        assert verdict["outcome"] == "fail", (name, verdict)
        failed = [c["name"] for c in verdict["statement"]["evidence"]["checks"] if c["outcome"] == "fail"]
        assert failed == [expected_failure[name]], (name, failed)


def test_silent_provider_fails_at_the_deadline(client, make_provider, make_request, worker, database):
    provider = make_provider(challenge_deadline_seconds=2)
    request = make_request(3)
    receipt = submit_report(client, provider, request)
    audit_id = open_audit(client, receipt["report_id"])
    challenge = wait_for_challenge(client, provider, audit_id)

    audit = wait_for_verdict(client, audit_id, timeout=30)
    verdict = audit["verdict"]
    assert verdict["outcome"] == "fail"
    assert [c["name"] for c in verdict["statement"]["evidence"]["checks"]] == ["deadline"]
    assert audit["challenges"][0]["status"] == "expired"

    late = respond(client, provider, challenge, request.openings.respond(challenge["indices"]).to_json())
    assert late.status_code == 410, late.text
    assert "deadline" in late.json()["detail"]
    with database.unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(Verdict)) == 1


def test_a_challenge_is_answered_once(client, make_provider, make_request, worker):
    provider = make_provider()
    request = make_request(4)
    receipt = submit_report(client, provider, request)
    audit_id = open_audit(client, receipt["report_id"])
    challenge = wait_for_challenge(client, provider, audit_id)
    body = request.openings.respond(challenge["indices"], challenge["content_indices"]).to_json()

    malformed = respond(client, provider, challenge, {"openings": [{"index": 0, "salt": "zz", "proof": []}]})
    assert malformed.status_code == 400, malformed.text  # may still be corrected before the deadline
    assert respond(client, provider, challenge, body).status_code == 202
    again = respond(client, provider, challenge, body)
    assert again.status_code == 409, again.text
    assert "already answered" in again.json()["detail"]
    assert wait_for_verdict(client, audit_id)["verdict"]["outcome"] == "pass"


def test_an_open_audit_is_not_opened_twice(client, make_provider, make_request, worker):
    provider = make_provider()
    receipt = submit_report(client, provider, make_request(5))
    first = client.post("/v1/audits", json={"report_id": receipt["report_id"]}, headers=ADMIN).json()
    second = client.post("/v1/audits", json={"report_id": receipt["report_id"]}, headers=ADMIN).json()
    assert first["created"] and not second["created"]
    assert first["audit_id"] == second["audit_id"]
    assert get_audit(client, first["audit_id"])["status"] in {"pending", "challenged"}
