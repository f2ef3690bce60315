"""Input and protocol handling (Issue 15): bounded numbers, database data errors as 4xx, responses whose
indices are wrong refused while they can still be corrected, equal reports equal after normalisation,
readable names and ids, bounded exposure plans, and no lock-out of a report's customer."""

import copy
import secrets
import unicodedata
import uuid
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select, text, update

from api.app import create_app
from api.deps import SessionDep
from service.audits.workflow import MAX_PLAN_BLOCKS, MAX_PLAN_TOKENS, plan_for, public_commitment_of
from service.database import Database
from service.models import Audit, AuditTrigger, Challenge, PlanGenerator, Provider, Report, utcnow
from service.settings import Settings
from tests.integration.support import (
    ADMIN,
    MakeProvider,
    MakeRequest,
    ProviderAccount,
    WorkerProcess,
    answer_until_verdict,
    bearer,
    open_audit,
    respond,
    submit_report,
    wait_for_challenge,
    wait_for_verdict,
)


def test_numbers_beyond_the_store_are_4xx_never_500(client: TestClient, settings: Settings) -> None:
    for query in ("offset=9223372036854775808", "limit=9223372036854775808", "limit=-1"):
        response = client.get(f"/v1/audits?{query}", headers=ADMIN)
        assert response.status_code == 422, (query, response.text)

    # Whatever the schema lets through, a value the database cannot hold is a 422 problem.
    app = create_app(settings)

    @app.get("/overflow")
    def overflow(session: SessionDep) -> int:
        return int(session.scalar(text("SELECT CAST(:value AS bigint)"), {"value": 2**63}))

    with TestClient(app, raise_server_exceptions=False) as test_client:
        response = test_client.get("/overflow")
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


def test_a_response_with_wrong_indices_is_refused_while_it_can_be_corrected(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    worker: WorkerProcess,
) -> None:
    provider = make_provider()
    request = make_request(0)
    audit_id = open_audit(client, submit_report(client, provider, request)["report_id"])
    challenge = wait_for_challenge(client, provider, audit_id)
    good = request.openings.respond(challenge["indices"], challenge["content_indices"]).to_json()
    openings = good["openings"]
    first, last = openings[0], openings[-1]
    content = challenge["content_indices"][0]
    bare = request.openings.respond(challenge["indices"]).to_json()["openings"]
    unrequested = request.report["commitment"]["size"] + 7
    extra = [{**first, "index": unrequested}]
    cases = {
        "empty": ([], "missing"),
        "missing": (openings[1:], f"missing [{first['index']}]"),
        "duplicated": ([*openings, last], f"opened more than once [{last['index']}]"),
        "unrequested": ([*openings, *extra], f"not requested [{unrequested}]"),
        "content as count": (
            [o for o in bare if o["index"] == content] + [o for o in openings if o["index"] != content],
            f"content indices opened without fingerprint and token [{content}]",
        ),
    }
    for name, (body, expected) in cases.items():
        response = respond(client, provider, challenge, {"openings": body})
        assert response.status_code == 400, (name, response.text)
        assert expected in response.json()["detail"], (name, response.json()["detail"])
    # Nothing was stored: the correct answer is still accepted, and the audit passes.
    assert respond(client, provider, challenge, good).status_code == 202
    assert answer_until_verdict(client, provider, audit_id, request.openings)["verdict"]["outcome"] == "pass"


def test_a_null_optional_field_is_the_field_left_out(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    database: Database,
) -> None:
    provider = make_provider()
    report = make_request(1).report
    first = client.post("/v1/reports", json=report, headers=provider.headers)
    assert first.status_code == 201, first.text
    spelled = copy.deepcopy(report)
    spelled["answer"]["text"] = None  # both absent from the first submission
    spelled["signature"] = None
    again = client.post("/v1/reports", json=spelled, headers=provider.headers)
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    batch = client.post("/v1/reports/batch", json={"reports": [spelled, report]}, headers=provider.headers)
    assert [item["status"] for item in batch.json()["results"]] == [200, 200]

    # The stored body is the normalised one, and a first submission with nulls digests as without.
    other = make_request(2).report
    del other["usage"]["raw"]
    with_nulls = copy.deepcopy(other)
    with_nulls["usage"]["raw"] = None
    stored = client.post("/v1/reports/batch", json={"reports": [with_nulls]}, headers=provider.headers)
    assert stored.json()["results"][0]["status"] == 201
    assert client.post("/v1/reports", json=other, headers=provider.headers).status_code == 200
    with database.unit_of_work() as session:
        body = session.scalars(select(Report.body).where(Report.request_id == other["request_id"])).one()
    assert "raw" not in body["usage"]


def test_challenge_deadlines_have_a_floor(client: TestClient) -> None:
    for deadline in (1e-300, 0.5, 59.9):
        response = client.post(
            "/v1/providers", json={"name": f"p-{uuid.uuid4().hex[:8]}", "challenge_deadline_seconds": deadline},
            headers=ADMIN,
        )  # fmt: skip
        assert response.status_code == 422, (deadline, response.text)
    ok = client.post(
        "/v1/providers", json={"name": "patient", "challenge_deadline_seconds": 60}, headers=ADMIN
    )
    assert ok.status_code == 201, ok.text


def test_a_challenge_deadline_that_outlasts_the_retention_window_is_refused(
    client: TestClient, database: Database, settings: Settings
) -> None:
    longest = settings.longest_challenge_deadline_seconds
    with database.unit_of_work() as session:
        before = session.scalar(select(func.count()).select_from(Provider))
    response = client.post(
        "/v1/providers", json={"name": "forever", "challenge_deadline_seconds": longest + 1}, headers=ADMIN
    )
    assert response.status_code == 400, response.text
    assert "challenge_deadline_seconds: at most" in response.json()["detail"]
    with database.unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(Provider)) == before
    ok = client.post(
        "/v1/providers", json={"name": "forever", "challenge_deadline_seconds": longest}, headers=ADMIN
    )
    assert ok.status_code == 201, ok.text


def test_names_and_ids_are_readable_and_look_alikes_are_refused(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
) -> None:
    for name in ("line\nbreak", "bidi\u202eevil", "zero\u200bwidth", "bom\ufeff", "private\ue000"):
        response = client.post("/v1/providers", json={"name": name}, headers=ADMIN)
        assert response.status_code == 422, (name, response.text)
    created = client.post("/v1/providers", json={"name": "  Cafe\u0301 Labs "}, headers=ADMIN)
    assert created.status_code == 201 and created.json()["name"] == "Caf\u00e9 Labs"  # NFC, trimmed
    for look_alike in ("café labs", "CAFÉ LABS", "Ｃａｆé Ｌａｂｓ"):
        response = client.post("/v1/providers", json={"name": look_alike}, headers=ADMIN)
        assert response.status_code == 409, (look_alike, response.text)

    provider = make_provider()
    report = make_request(3).report
    for field in ("request_id", "model"):
        for value in ("a\nb", "a\u202eb", "a\u200db", "e\u0301"):
            bad = {**report, field: value}
            response = client.post("/v1/reports", json=bad, headers=provider.headers)
            assert response.status_code == 422, (field, value, response.text)
            batch = client.post("/v1/reports/batch", json={"reports": [bad]}, headers=provider.headers)
            assert batch.json()["results"][0]["status"] == 422, (field, value)
    nfc = unicodedata.normalize("NFC", "e\u0301")
    assert (
        client.post("/v1/reports", json={**report, "model": nfc}, headers=provider.headers).status_code == 201
    )


def _huge_report(template: dict[str, Any], size: int) -> dict[str, Any]:
    report = copy.deepcopy(template)
    report["request_id"] = f"huge-{uuid.uuid4().hex}"
    report["usage"].update(reasoning_tokens=size, output_tokens=size + 25, raw=None)
    report["commitment"].update(size=size, root=secrets.token_hex(32))
    return report


def test_the_cost_of_a_plan_does_not_grow_with_the_claimed_count(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    worker: WorkerProcess,
    database: Database,
) -> None:
    provider = make_provider()
    template = make_request(4).report
    too_many = client.post("/v1/reports", json=_huge_report(template, 2**24 + 1), headers=provider.headers)
    assert too_many.status_code == 422, too_many.text
    # Under coin/2 every response carries the whole profile: 2**24 tokens could not be answered within
    # the response limit, so such a report is refused (and nothing stored) rather than failed later.
    with database.unit_of_work() as session:
        stored = session.scalar(select(func.count()).select_from(Report))
    unanswerable = client.post("/v1/reports", json=_huge_report(template, 2**24), headers=provider.headers)
    assert unanswerable.status_code == 400, unanswerable.text  # a protocol violation, as a wrong size is
    assert "COIN_MAX_RESPONSE_BYTES" in unanswerable.json()["detail"]
    with database.unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(Report)) == stored
    receipt = client.post("/v1/reports", json=_huge_report(template, 2**23), headers=provider.headers)
    assert receipt.status_code == 201, receipt.text
    audit_id = open_audit(client, receipt.json()["report_id"])
    challenge = wait_for_challenge(client, provider, audit_id)
    assert len(challenge["challenge"]["block_indices"]) <= MAX_PLAN_BLOCKS
    assert len(challenge["content_indices"]) <= MAX_PLAN_TOKENS
    with database.unit_of_work() as session:
        audit = session.get_one(Audit, uuid.UUID(audit_id))
        seed, generator = audit.exposure_seed, audit.plan_generator
        commitment = public_commitment_of(audit.report).commitment
        columns = session.execute(text("SELECT * FROM audits LIMIT 0")).keys()
    assert seed is not None
    assert len(seed) == 64 and "exposure_plan" not in columns  # the seed is stored, not the expansion
    # drawn with BLAKE3 keyed with the seed, not Mersenne Twister:
    assert generator == PlanGenerator.BLAKE3
    drawn = plan_for(commitment, seed, generator=PlanGenerator.BLAKE3).challenge(0)
    assert challenge["challenge"]["block_indices"] == list(drawn.block_indices)
    legacy = plan_for(commitment, seed, generator=PlanGenerator.MT19937).challenge(0)
    assert list(legacy.block_indices) != list(drawn.block_indices)
    assert seed not in client.get(f"/v1/audits/{audit_id}", headers=ADMIN).text
    assert seed not in client.get("/v1/challenges", headers=provider.headers).text


def _fail_by_deadline(
    client: TestClient, provider: ProviderAccount, audit_id: str, database: Database
) -> None:
    challenge = wait_for_challenge(client, provider, audit_id)
    with database.unit_of_work() as session:
        session.execute(
            update(Challenge)
            .where(Challenge.id == uuid.UUID(challenge["challenge_id"]))
            .values(deadline=utcnow() - timedelta(seconds=1))
        )
    wait_for_verdict(client, audit_id, timeout=30)


def test_a_provider_holding_receipts_cannot_lock_its_customers_out(
    client: TestClient,
    settings: Settings,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    worker: WorkerProcess,
    database: Database,
) -> None:
    provider = make_provider()
    request = make_request(5)
    receipt = submit_report(client, provider, request)
    token = bearer(receipt["receipt_token"])  # the provider holds it too
    ask = {"report_id": receipt["report_id"]}

    first = client.post("/v1/audits", json=ask, headers=token).json()
    assert first["created"]
    # While it runs, and for a day after its verdict, asking again gets that audit and spends nothing.
    assert client.post("/v1/audits", json=ask, headers=token).json()["audit_id"] == first["audit_id"]
    answer_until_verdict(client, provider, first["audit_id"], request.openings)
    for _ in range(5):
        again = client.post("/v1/audits", json=ask, headers=token)
        assert again.status_code == 202 and again.json() == {**first, "created": False, "status": "done"}

    # With no reuse window and the quota spent, the customer still gets the latest verdict, never a 429.
    strict = create_app(
        settings.model_copy(update={"customer_audit_reuse_seconds": 0, "customer_audit_quota": 2})
    )
    with TestClient(strict, raise_server_exceptions=False) as strict_client:
        second = strict_client.post("/v1/audits", json=ask, headers=token).json()
        assert second["created"] and second["audit_id"] != first["audit_id"]
        _fail_by_deadline(client, provider, second["audit_id"], database)
        for _ in range(3):
            spent = strict_client.post("/v1/audits", json=ask, headers=token)
            assert spent.status_code == 202, spent.text
            assert spent.json()["audit_id"] == second["audit_id"] and not spent.json()["created"]
    with database.unit_of_work() as session:
        customer = session.scalar(
            select(func.count()).select_from(Audit).where(Audit.trigger == AuditTrigger.CUSTOMER)
        )
    assert customer == 2
