"""Protocol coin/2 through the REST API and a real Celery worker: a copying provider fails on its own
committed profile, unless its domain's honest references copy as much (a calibrated copy rule); a
profile swapped after the report fails, and a coin/1 report still audits as before."""

import uuid
from typing import Any

from fastapi.testclient import TestClient

from auditor.protocol.fingerprint import Embedder, EmbeddingModel
from service.database import Database
from tests.integration.support import (
    ADMIN,
    CommittedRequest,
    MakeProvider,
    WorkerProcess,
    answer_until_verdict,
    open_audit,
    respond,
    shortest_traces,
    submit_report,
    wait_for_challenge,
    wait_for_verdict,
)


def committed_request(embedder: EmbeddingModel, version: str, copies: int = 1) -> CommittedRequest:
    """A real short trace committed by the SDK under `version`; `copies` > 1 bills it that many times,
    the reasoning pasted again after itself (and committed faithfully)."""
    from auditor.protocol.commitment import commit, new_secret

    trace = shortest_traces()[0]
    reasoning = "\n\n".join([trace["reasoning"]] * copies)
    public, openings = commit(
        reasoning, trace["answer"], new_secret(), block_size=16, embedder=embedder, version=version
    )
    size = public.commitment.size
    report = {
        "request_id": f"req-{uuid.uuid4().hex}",
        "model": trace["model"],
        "usage": {"input_tokens": 40, "output_tokens": size + 25, "reasoning_tokens": size},
        **public.to_json(),
    }
    return CommittedRequest(report, openings)


def checks_of(audit: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in audit["verdict"]["statement"]["evidence"]["checks"]}


def test_a_copying_provider_fails_on_copied_spans(
    client: TestClient,
    make_provider: MakeProvider,
    worker: WorkerProcess,
    embedder: Embedder,
) -> None:
    provider = make_provider()
    request = committed_request(embedder, "coin/2", copies=2)
    audit_id = open_audit(client, submit_report(client, provider, request)["report_id"])
    audit = answer_until_verdict(client, provider, audit_id, request.openings)
    assert audit["verdict"]["outcome"] == "fail"
    assert audit["verdict"]["proof_failures"] == ["copied_spans"]
    copied = checks_of(audit)["copied_spans"]
    assert copied["kind"] == "proof" and copied["figure"] > copied["threshold"]
    assert checks_of(audit)["repetition_profile"]["outcome"] == "pass"


def test_a_domain_calibrated_on_references_that_copy_raises_its_providers_copy_rule(
    client: TestClient,
    make_provider: MakeProvider,
    worker: WorkerProcess,
    embedder: Embedder,
    database: Database,
) -> None:
    from auditor.protocol.copies import COPY_RULE
    from service.monitoring.calibration import register_calibration
    from service.monitoring.references import ReferenceTrace, reference_copy_rule

    # A domain whose honest models write their reasoning out twice: the shipped rule fails its report.
    provider = make_provider()
    policy = {"domain": "rewriting", "share": 0.0, "min_per_day": 0}
    assert client.put(f"/v1/providers/{provider.id}/policy", json=policy, headers=ADMIN).status_code == 200
    request = committed_request(embedder, "coin/2", copies=2)
    audit_id = open_audit(client, submit_report(client, provider, request)["report_id"])
    shipped = checks_of(answer_until_verdict(client, provider, audit_id, request.openings))["copied_spans"]
    assert (shipped["outcome"], shipped["threshold"]) == ("fail", COPY_RULE.copied)
    assert shipped["detail"].endswith("the shipped rule")

    # Its honest references copy as much: the calibration raises the rule, from the next audit on.
    references = [
        ReferenceTrace(str(k), "\n\n".join([t["reasoning"]] * 2), t["answer"])
        for k, t in enumerate(shortest_traces(51)[1:])  # 50, to fit a tail; not the reported trace
    ]
    rule = reference_copy_rule(references, "rewriting")
    assert rule.copied > shipped["figure"] > COPY_RULE.copied
    with database.unit_of_work() as session:
        register_calibration(session, "rewriting", [1.0] * len(references), copy_rule=rule,
                             heads="test", embd_id="test", actor="test")  # fmt: skip
    request = committed_request(embedder, "coin/2", copies=2)
    audit_id = open_audit(client, submit_report(client, provider, request)["report_id"])
    audit = answer_until_verdict(client, provider, audit_id, request.openings)
    raised = checks_of(audit)["copied_spans"]
    assert (raised["outcome"], raised["threshold"]) == ("pass", rule.copied)
    assert raised["figure"] == shipped["figure"] and raised["detail"].endswith("the rewriting@1 rule")
    assert "copied_spans" not in audit["verdict"]["proof_failures"]

    # A provider of another domain keeps the shipped rule.
    other = make_provider()
    request = committed_request(embedder, "coin/2", copies=2)
    audit_id = open_audit(client, submit_report(client, other, request)["report_id"])
    audit = answer_until_verdict(client, other, audit_id, request.openings)
    assert audit["verdict"]["proof_failures"] == ["copied_spans"]


def test_a_profile_other_than_the_reported_one_fails(
    client: TestClient,
    make_provider: MakeProvider,
    worker: WorkerProcess,
    embedder: Embedder,
) -> None:
    provider = make_provider()
    request = committed_request(embedder, "coin/2")
    other = committed_request(embedder, "coin/2").openings.repetition
    assert other is not None
    audit_id = open_audit(client, submit_report(client, provider, request)["report_id"])
    challenge = wait_for_challenge(client, provider, audit_id)
    body = request.openings.respond(challenge["indices"], challenge["content_indices"]).to_json()
    body["repetition"]["profile"] = other.open([]).to_json()["profile"]
    assert respond(client, provider, challenge, body).status_code == 202
    audit = wait_for_verdict(client, audit_id)
    assert audit["verdict"]["outcome"] == "fail"
    assert audit["verdict"]["proof_failures"] == ["repetition_profile"]
    assert "digest" in checks_of(audit)["repetition_profile"]["detail"]


def test_a_coin1_report_still_audits(
    client: TestClient,
    make_provider: MakeProvider,
    worker: WorkerProcess,
    embedder: Embedder,
    database: Database,
) -> None:
    from sqlalchemy import select

    from service.models import Challenge, ChallengeResponse

    provider = make_provider()
    request = committed_request(embedder, "coin/1")
    assert "repetition" not in request.report["commitment"]
    audit_id = open_audit(client, submit_report(client, provider, request)["report_id"])
    audit = answer_until_verdict(client, provider, audit_id, request.openings)
    assert audit["verdict"]["outcome"] == "pass", audit["verdict"]
    assert not {"repetition_profile", "copied_spans"} & checks_of(audit).keys()
    with database.unit_of_work() as session:
        stored = session.scalars(
            select(ChallengeResponse.body).join(Challenge).where(Challenge.audit_id == uuid.UUID(audit_id))
        ).all()
    assert stored and all("repetition" not in body for body in stored)
