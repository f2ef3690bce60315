"""Batch intake: each item gets what submitting the items one by one would give, and the audit trail
stays one valid chain with one event per stored report."""

import copy
import threading
from typing import Any

import httpx2
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from service.database import Database
from service.events import verify_chain
from service.models import AuditEvent, Base, PendingEvent, Report
from tests.integration.support import MakeProvider, MakeRequest, wait_for


def _statuses(response: httpx2.Response) -> list[int]:
    assert response.status_code == 200, response.text
    return [item["status"] for item in response.json()["results"]]


def _count(database: Database, model: type[Base]) -> int:
    with database.unit_of_work() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _protocol_violation(report: dict[str, Any]) -> dict[str, Any]:
    bad = copy.deepcopy(report)
    bad["commitment"]["tokenizer_id"] = "nope"
    return bad


def test_duplicates_within_a_batch_behave_as_sequential_submissions(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    database: Database,
) -> None:
    provider = make_provider()
    first = make_request(0).report
    conflicting = {**first, "model": "another-model"}
    other = make_request(1).report
    response = client.post(
        "/v1/reports/batch",
        json={"reports": [first, first, conflicting, other, first]},
        headers=provider.headers,
    )
    assert _statuses(response) == [201, 200, 409, 201, 200]
    results = response.json()["results"]
    assert results[1]["receipt"] == results[0]["receipt"] == results[4]["receipt"]
    assert "different content" in results[2]["error"]
    assert _count(database, Report) == 2

    # A single submission afterwards sees the batch's reports as stored.
    again = client.post("/v1/reports", json=first, headers=provider.headers)
    assert again.status_code == 200 and again.json() == results[0]["receipt"]


def test_an_invalid_item_does_not_reserve_its_request_id(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    database: Database,
) -> None:
    provider = make_provider()
    report = make_request(0).report
    invalid = _protocol_violation(report)
    response = client.post(
        "/v1/reports/batch", json={"reports": [invalid, report, invalid]}, headers=provider.headers
    )
    # Before the valid item the id is free (400); after it, a different body under a stored id (409).
    assert _statuses(response) == [400, 201, 409]
    assert _count(database, Report) == 1


def test_a_batch_mixes_new_replayed_conflicting_and_invalid_items(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    database: Database,
) -> None:
    provider = make_provider()
    stored = make_request(0).report
    receipt = client.post("/v1/reports", json=stored, headers=provider.headers).json()
    fresh = make_request(1).report
    items = [
        fresh,
        stored,
        {**stored, "model": "another-model"},
        _protocol_violation(stored),  # a stored id: a conflict, whatever the body's own faults
        _protocol_violation(make_request(2).report),
        {**fresh, "request_id": 12},
        fresh,
    ]
    response = client.post("/v1/reports/batch", json={"reports": items}, headers=provider.headers)
    assert _statuses(response) == [201, 200, 409, 409, 400, 422, 200]
    results = response.json()["results"]
    assert results[1]["receipt"] == receipt
    assert results[6]["receipt"] == results[0]["receipt"]
    assert [item["index"] for item in results] == list(range(len(items)))
    assert _count(database, Report) == 2

    # The same batch again: every stored report replays with its receipt, nothing new is stored.
    replay = client.post("/v1/reports/batch", json={"reports": items}, headers=provider.headers)
    assert _statuses(replay) == [200, 200, 409, 409, 400, 422, 200]
    assert replay.json()["results"][0]["receipt"] == results[0]["receipt"]
    assert _count(database, Report) == 2


def test_the_chain_verifies_after_batches(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    database: Database,
) -> None:
    provider = make_provider()
    template = make_request(0).report
    client.post("/v1/reports", json={**template, "request_id": "single-before"}, headers=provider.headers)
    batch = [{**template, "request_id": f"chained-{i}"} for i in range(300)]
    assert set(
        _statuses(client.post("/v1/reports/batch", json={"reports": batch}, headers=provider.headers))
    ) == {201}
    client.post("/v1/reports", json={**template, "request_id": "single-after"}, headers=provider.headers)
    # A single report's event is linked by the API's chain writer, just after the request commits.
    wait_for(lambda: _count(database, PendingEvent) == 0, timeout=10, what="the chain writer")

    with database.unit_of_work() as session:
        check = verify_chain(session)
        assert check.ok, check
        assert check.events == 2 + 302  # provider.created, api_key.issued, then one per report
        received = session.execute(
            select(AuditEvent.report_id, AuditEvent.payload).where(AuditEvent.kind == "report.received")
        ).all()
        reports = dict(session.execute(select(Report.id, Report.request_id)).all())
    assert {event.report_id for event in received} == set(reports)
    assert all(event.payload["request_id"] == reports[event.report_id] for event in received)


def test_concurrent_batches_sharing_request_ids_store_each_report_once(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    database: Database,
) -> None:
    provider = make_provider()
    template = make_request(0).report
    reports = [{**template, "request_id": f"shared-{i}"} for i in range(200)]
    # Same reports, opposite orders: the two inserts wait on each other's rows.
    batches = [reports, list(reversed(reports))]
    responses: list[httpx2.Response | None] = [None, None]

    def send(k: int) -> None:
        responses[k] = client.post(
            "/v1/reports/batch", json={"reports": batches[k]}, headers=provider.headers
        )

    threads = [threading.Thread(target=send, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    by_request: dict[str, list[dict[str, Any]]] = {}
    for k, response in enumerate(responses):
        assert response is not None
        for item in response.json()["results"]:
            by_request.setdefault(batches[k][item["index"]]["request_id"], []).append(item)
    for request_id, items in by_request.items():
        assert sorted(item["status"] for item in items) == [200, 201], request_id
        assert items[0]["receipt"] == items[1]["receipt"]
    assert _count(database, Report) == 200
    with database.unit_of_work() as session:
        assert verify_chain(session).ok


def test_concurrent_single_submissions_of_one_report(
    client: TestClient,
    make_provider: MakeProvider,
    make_request: MakeRequest,
    database: Database,
) -> None:
    provider = make_provider()
    report = make_request(0).report
    responses: list[httpx2.Response] = []
    lock = threading.Lock()

    def send() -> None:
        response = client.post("/v1/reports", json=report, headers=provider.headers)
        with lock:
            responses.append(response)

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.status_code for r in responses) == [200] * 5 + [201], [r.text for r in responses]
    assert len({r.json()["receipt"]["report_id"] for r in responses}) == 1
    assert _count(database, Report) == 1
