"""Full audits through the REST API and a real Celery worker: honest, forged, silent providers."""

import base64
import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from auditor.protocol.repetition import NGRAM, checkable_positions
from service.audits import verification
from service.audits.workflow import MAX_VERIFICATION_ERRORS, _verify_claimed, open_round, verify_audit
from service.database import Database
from service.events import verify_chain
from service.models import (
    Audit,
    AuditEvent,
    AuditStatus,
    AuditTrigger,
    Challenge,
    Outcome,
    Verdict,
    utcnow,
)
from service.security import verify_signature
from tests.integration.support import (
    ADMIN,
    MakeProvider,
    MakeRequest,
    WorkerProcess,
    answer_until_verdict,
    decide,
    get_audit,
    open_audit,
    respond,
    service_context,
    submit_report,
    wait_for_challenge,
    wait_for_verdict,
)


def test_honest_provider_passes_with_a_signed_verdict(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    worker: WorkerProcess,
    database: Database,
) -> None:
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
    statement = verdict["statement"]
    assert statement["version"] == "coin-verdict/3"
    checks = {c["name"]: c for c in statement["evidence"]["checks"]}
    # fail is for proof checks, which cannot fire on honest text; suspect for statistical ones.
    assert {name: c["kind"] for name, c in checks.items()} == {
        "proof": "proof", "block_consistency": "proof", "token_embedding": "proof",  # DESIGN §3 checks 1-3
        "repetition_profile": "proof", "copied_spans": "proof",  # coin/2: the repetition profile
        "tokens_to_block": "statistical", "block_to_answer": "statistical",  # 4-5
        "duplicate_blocks": "statistical", "repeated_token": "proof",  # 6
        "vocabulary": "proof", "split_token": "proof", "retokenization": "statistical",  # 7
        "verifier": "statistical",  # 8
    }  # fmt: skip
    assert all(c["outcome"] == "pass" for c in checks.values())
    assert all(
        c.keys() == {"name", "kind", "outcome", "figure", "threshold", "detail"} for c in checks.values()
    )
    assert statement["evidence"]["proof_failures"] == statement["evidence"]["statistical_flags"] == []
    assert verdict["proof_failures"] == verdict["statistical_flags"] == []
    decided_by = statement["decided_by"]
    assert decided_by["embd_id"] == request.report["commitment"]["embd_id"]
    assert re.fullmatch(r"heads@[0-9a-f]{16}", decided_by["heads"]), decided_by
    assert decided_by["calibration"] == "shipped"  # the provider has no domain calibration
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


def test_forged_openings_fail(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    worker: WorkerProcess,
) -> None:
    provider = make_provider()
    audits = {}
    for name, request_index in (("token", 1), ("proof", 2)):
        request = make_request(request_index)
        receipt = submit_report(client, provider, request)
        audits[name] = (open_audit(client, receipt["report_id"]), request)

    expected_failures: dict[str, set[str]] = {}
    for name, (audit_id, request) in audits.items():
        challenge = wait_for_challenge(client, provider, audit_id)
        body = request.openings.respond(challenge["indices"], challenge["content_indices"]).to_json()
        content = set(challenge["content_indices"])
        forge = _forge_token if name == "token" else _forge_proof
        target = next(o for o in body["openings"] if (o["index"] in content) == (name == "token"))
        body["openings"] = [forge(o) if o is target else o for o in body["openings"]]
        assert respond(client, provider, challenge, body).status_code == 202
        if name == "proof":
            expected_failures[name] = {"proof"}
        else:  # a forged token also breaks the fingerprint of every revealed n-gram it is part of (coin/2)
            in_ngram = any(0 <= p - target["index"] < NGRAM for p in checkable_positions(content))
            expected_failures[name] = {"token_embedding"} | ({"repetition_profile"} if in_ngram else set())

    auditor_key = client.get("/v1/auditor").json()["public_key"]
    for name, (audit_id, request) in audits.items():
        verdict = wait_for_verdict(client, audit_id)["verdict"]
        assert verdict["outcome"] == "fail", (name, verdict)
        checks = verdict["statement"]["evidence"]["checks"]
        failed = [c["name"] for c in checks if c["outcome"] == "fail"]
        assert set(failed) == expected_failures[name] and len(failed) == len(set(failed)), (name, failed)
        assert {c["kind"] for c in checks if c["outcome"] == "fail"} == {"proof"}
        assert verdict["proof_failures"] == failed and verdict["statistical_flags"] == []
        # Checks 1-3 failed, so the semantic checks never ran: no head decided this verdict.
        assert verdict["statement"]["decided_by"] == {
            "embd_id": request.report["commitment"]["embd_id"],
            "heads": None,
            "calibration": "shipped",
        }
        assert verify_signature(auditor_key, verdict["statement"], verdict["signature"])


def test_silent_provider_fails_at_the_deadline(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    worker: WorkerProcess,
    database: Database,
) -> None:
    provider = make_provider()
    request = make_request(3)
    receipt = submit_report(client, provider, request)
    audit_id = open_audit(client, receipt["report_id"])
    challenge = wait_for_challenge(client, provider, audit_id)
    # A deadline is at least a minute (COIN_CHALLENGE_DEADLINE_SECONDS, a provider's own): let this one
    # pass at once rather than wait for it.
    with database.unit_of_work() as session:
        session.execute(
            update(Challenge)
            .where(Challenge.id == uuid.UUID(challenge["challenge_id"]))
            .values(deadline=utcnow() - timedelta(seconds=1))
        )

    audit = wait_for_verdict(client, audit_id, timeout=30)
    verdict = audit["verdict"]
    assert verdict["outcome"] == "fail"
    statement = verdict["statement"]
    assert statement["version"] == "coin-verdict/3"
    [check] = statement["evidence"]["checks"]
    assert (check["name"], check["kind"], check["outcome"]) == ("deadline", "proof", "fail")
    assert verdict["proof_failures"] == ["deadline"] and verdict["statistical_flags"] == []
    # A missed deadline is a count opening not given: decided without any head.
    embd_id = request.report["commitment"]["embd_id"]
    assert statement["decided_by"] == {"embd_id": embd_id, "heads": None, "calibration": "shipped"}
    assert verify_signature(verdict["signing_key"], statement, verdict["signature"])
    assert audit["challenges"][0]["status"] == "expired"

    late = respond(client, provider, challenge, request.openings.respond(challenge["indices"]).to_json())
    assert late.status_code == 410, late.text
    assert "deadline" in late.json()["detail"]
    with database.unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(Verdict)) == 1


def test_a_challenge_is_answered_once(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    worker: WorkerProcess,
) -> None:
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


def test_an_open_audit_is_not_opened_twice(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    worker: WorkerProcess,
) -> None:
    provider = make_provider()
    receipt = submit_report(client, provider, make_request(5))
    first = client.post("/v1/audits", json={"report_id": receipt["report_id"]}, headers=ADMIN).json()
    second = client.post("/v1/audits", json={"report_id": receipt["report_id"]}, headers=ADMIN).json()
    assert first["created"] and not second["created"]
    assert first["audit_id"] == second["audit_id"]
    assert get_audit(client, first["audit_id"])["status"] in {"pending", "challenged"}


def test_audits_are_listed_by_outcome(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    database: Database,
) -> None:
    """`GET /v1/audits?outcome=` filters on the verdict; a suspect verdict names its statistical flags
    apart from proof failures. (Verdicts written directly: a trace that an honest-looking provider gets
    flagged on is a matter for the science side, not for this filter.)"""
    provider, other = make_provider(), make_provider()
    context = service_context(client)
    flagged = {"name": "verifier", "kind": "statistical", "outcome": "suspect", "figure": 1e-10,
               "threshold": 1e-9, "detail": "P(benign) below the calibrated threshold"}  # fmt: skip
    broken = {"name": "proof", "kind": "proof", "outcome": "fail", "figure": 1.0, "threshold": None,
              "detail": "1 of 90 paths fail"}  # fmt: skip
    audit_ids: dict[tuple[str, str], str] = {}
    for owner in (provider, other):
        for outcome, checks in ((Outcome.PASS, []), (Outcome.SUSPECT, [flagged]), (Outcome.FAIL, [broken])):
            report_id = submit_report(client, owner, make_request(len(audit_ids)))["report_id"]
            verdict = decide(context, report_id, AuditTrigger.ADMIN, outcome, checks)
            audit_ids[owner.id, outcome.value] = str(verdict.audit_id)

    def listed(headers: dict[str, str], **params: str) -> list[dict[str, Any]]:
        response = client.get("/v1/audits", params=params, headers=headers)
        assert response.status_code == 200, response.text
        return list(response.json()["items"])

    [suspect] = listed(provider.headers, outcome="suspect")
    assert suspect["audit_id"] == audit_ids[provider.id, "suspect"]
    assert suspect["verdict"]["outcome"] == "suspect"
    assert (
        suspect["verdict"]["statistical_flags"] == ["verifier"] and suspect["verdict"]["proof_failures"] == []
    )
    suspects = listed(ADMIN, outcome="suspect", status="done")
    assert {a["audit_id"] for a in suspects} == {audit_ids[p.id, "suspect"] for p in (provider, other)}
    [failed] = listed(ADMIN, outcome="fail", provider=other.id)
    assert failed["audit_id"] == audit_ids[other.id, "fail"]
    assert failed["verdict"]["proof_failures"] == ["proof"] and failed["verdict"]["statistical_flags"] == []
    assert len(listed(ADMIN)) == 6 and listed(ADMIN, outcome="inconclusive") == []
    assert client.get("/v1/audits", params={"outcome": "bogus"}, headers=ADMIN).status_code == 422


def test_a_verification_overtaken_by_a_later_round_writes_nothing(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    worker: WorkerProcess,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker whose lease went stale while it verified round 1: meanwhile another worker decided round
    1, opened round 2 and the provider answered it. The first worker's result is about round 1 and must
    not be written over round 2 (as a verdict, or as a second round 2)."""
    provider = make_provider()
    request = make_request(6, joined=3)
    audit_id = open_audit(client, submit_report(client, provider, request)["report_id"])
    first = wait_for_challenge(client, provider, audit_id)
    worker.stop()  # this test's verification runs in-process, as the overtaken worker
    body = request.openings.respond(first["indices"], first["content_indices"]).to_json()
    assert respond(client, provider, first, body).status_code == 202
    context, audit_uuid = service_context(client), uuid.UUID(audit_id)
    real_verify_round = verification.verify_round

    def overtaken(*args: Any, **kwargs: Any) -> Any:
        result = real_verify_round(*args, **kwargs)
        with database.unit_of_work() as session:  # the other worker, holding the lease now
            audit = session.get_one(Audit, audit_uuid)
            open_round(session, context, audit, 1)
        second = wait_for_challenge(client, provider, audit_id)
        answer = request.openings.respond(second["indices"], second["content_indices"]).to_json()
        assert respond(client, provider, second, answer).status_code == 202
        return result

    monkeypatch.setattr(verification, "verify_round", overtaken)
    _verify_claimed(context, audit_uuid)
    with database.unit_of_work() as session:
        audit = session.get_one(Audit, audit_uuid)
        rounds = session.scalars(select(Challenge.round).where(Challenge.audit_id == audit_uuid)).all()
        verdicts = session.scalar(
            select(func.count()).select_from(Verdict).where(Verdict.audit_id == audit_uuid)
        )
        assert (audit.status, sorted(rounds), verdicts) == (AuditStatus.VERIFYING, [1, 2], 0)
    worker.start()  # the queued verification of round 2 goes on with the audit
    assert answer_until_verdict(client, provider, audit_id, request.openings)["verdict"]["outcome"] == "pass"


def test_a_verification_that_keeps_raising_ends_inconclusive_after_its_last_try(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    worker: WorkerProcess,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A verification that raises releases its lease and is counted; the sweeper tries again, and at the
    last allowed error the audit is closed `inconclusive` (it accuses nobody) rather than re-queued for
    ever. The verdict and the trail name the error's type, never its message."""
    provider = make_provider()
    request = make_request(6, joined=3)
    audit_id = open_audit(client, submit_report(client, provider, request)["report_id"])
    challenge = wait_for_challenge(client, provider, audit_id)
    worker.stop()  # the verifications run in-process, where the fault is injected
    body = request.openings.respond(challenge["indices"], challenge["content_indices"]).to_json()
    assert respond(client, provider, challenge, body).status_code == 202
    context, audit_uuid = service_context(client), uuid.UUID(audit_id)

    def crashes(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret-ish detail of the response")

    monkeypatch.setattr(verification, "verify_round", crashes)
    for attempt in range(1, MAX_VERIFICATION_ERRORS + 1):
        with pytest.raises(RuntimeError):
            verify_audit(context, audit_id)  # claims the lease: the previous error released it
        with database.unit_of_work() as session:
            audit = session.get_one(Audit, audit_uuid)
            assert audit.verification_errors == attempt and audit.heartbeat_at is None
            decided = attempt == MAX_VERIFICATION_ERRORS
            assert audit.status == (AuditStatus.DONE if decided else AuditStatus.VERIFYING)
    verdict = get_audit(client, audit_id)["verdict"]
    assert verdict["outcome"] == "inconclusive"
    [check] = verdict["statement"]["evidence"]["checks"]
    assert check["name"] == "protocol" and "RuntimeError" in check["detail"]
    assert "secret-ish" not in str(verdict)
    with database.unit_of_work() as session:
        failures = session.scalars(
            select(AuditEvent.payload).where(
                AuditEvent.audit_id == audit_uuid, AuditEvent.kind == "audit.verification_failed"
            )
        ).all()
    assert [f["verification_errors"] for f in failures] == [1, 2, 3]
    assert all(f["error"] == "RuntimeError" for f in failures)
    worker.start()
