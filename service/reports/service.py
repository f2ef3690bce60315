"""Report intake (DESIGN §2 step 2): validate against the protocol, store idempotently, sign a receipt.

A report is idempotent on (provider, request_id): the same body again returns the same receipt, a
different body under the same request id is a conflict — a provider cannot quietly re-bill a request.
"The same body" is judged on the normalised report: an optional field sent as null is the field left
out (`normalised_report`), and the digest, the stored body and the signature check all use that form.

One report and a batch of a thousand take the same path (`submit_reports`): every check in Python,
one multi-row `INSERT ... ON CONFLICT DO NOTHING` of the new reports, one read of the request ids that
were already stored, and one insert of their audit events. Each outcome is
what submitting the reports one after the other would have given.
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import blake3
from sqlalchemy import select
from sqlalchemy.orm import Session

from auditor.protocol.commitment import AnswerCommitment, Commitment
from auditor.protocol.encoding import canonical_json
from auditor.protocol.errors import ProtocolError
from auditor.protocol.fingerprint import embd_id_of, model_dir
from auditor.protocol.tokenize import known_tokenizers
from service.audits.workflow import response_bytes_bound
from service.context import ServiceContext
from service.database import streamed_insert
from service.errors import Conflict
from service.events import NewEvent, append_with_commit, row_digest
from service.metrics import REPORTS
from service.models import Provider, Report, utcnow
from service.security import Signer, constant_time_equal, sha256_hex, verify_signature

# 2: the digest is BLAKE3 of the RFC 8785 canonical report; 3: the receipt states the retention window.
RECEIPT_VERSION = "coin-receipt/3"
# Reports per insert statement of a batch: small enough that the server's insert of one chunk overlaps
# the signing of the next, large enough that the per-statement cost stays small.
INSERT_CHUNK_ROWS = 200


@cache
def accepted_embd_id() -> str:
    """The embd_id of the auditor's own model: the weights file's hash, without loading the model."""
    return embd_id_of(model_dir() / "model.safetensors")


# Optional fields whose null means "not given", by their parent object (None: the report itself).
_OPTIONAL_FIELDS: tuple[tuple[str | None, str], ...] = (
    (None, "signature"),
    ("usage", "raw"),
    ("answer", "text"),
    ("commitment", "repetition"),  # coin/2 only: a coin/1 report may spell its absence as null
)


def normalised_report(body: dict[str, Any]) -> dict[str, Any]:
    """`body` without its optional fields that are null: a copy when there is one, else `body` itself
    (the batch path stores the items as sent, so the common case must cost no copy)."""
    normalised = body
    for parent, name in _OPTIONAL_FIELDS:
        holder = normalised if parent is None else normalised.get(parent)
        if isinstance(holder, dict) and name in holder and holder[name] is None:
            if normalised is body:
                normalised = dict(body)
            stripped = {key: value for key, value in holder.items() if key != name}
            if parent is None:
                normalised = stripped
            else:
                normalised[parent] = stripped
    return normalised


# What a `reports` row says, vouched for by its `report.received` event (`row_digest` in the payload);
# the body is vouched for through `digest`, which the integrity check recomputes from it.
REPORT_ROW_FIELDS = (
    "id", "provider_id", "request_id", "model", "input_tokens", "output_tokens", "reasoning_tokens",
    "digest", "receipt", "receipt_token_hash", "receipt_key_id", "received_at",
)  # fmt: skip


def report_digest(body: dict[str, Any]) -> str:
    """H(canonical report), hex: what the receipt and the report's `report.received` event commit to."""
    return blake3.blake3(canonical_json(body)).hexdigest()


def validate_report(body: dict[str, Any], provider: Provider, *, max_response_bytes: int) -> Commitment:
    """The protocol checks of DESIGN §3 "Report"; raises ProtocolError naming the field. A report whose
    honest response to an audit could exceed `max_response_bytes` is refused: it could never be answered."""
    commitment = Commitment.from_json(body["commitment"])
    largest = response_bytes_bound(commitment)
    if largest > max_response_bytes:
        raise ProtocolError(
            f"commitment.size: an honest response to an audit of {commitment.size} tokens may take "
            f"{largest} bytes, more than this auditor accepts ({max_response_bytes}, "
            "COIN_MAX_RESPONSE_BYTES)"
        )
    AnswerCommitment.from_json(body["answer"])
    usage = body["usage"]
    if commitment.size != usage["reasoning_tokens"]:
        raise ProtocolError(
            f"commitment.size: {commitment.size} leaves committed but usage.reasoning_tokens bills "
            f"{usage['reasoning_tokens']}; they must be equal"
        )
    if usage["reasoning_tokens"] > usage["output_tokens"]:
        raise ProtocolError(
            "usage.reasoning_tokens: reasoning tokens are part of output_tokens, so cannot exceed it"
        )
    if commitment.embd_id != accepted_embd_id():
        raise ProtocolError(
            f"commitment.embd_id: unknown embedding model {commitment.embd_id!r} "
            f"(this auditor verifies with {accepted_embd_id()!r})"
        )
    if commitment.tokenizer_id not in known_tokenizers():
        raise ProtocolError(
            f"commitment.tokenizer_id: unknown tokenizer {commitment.tokenizer_id!r} "
            f"(known: {', '.join(known_tokenizers())})"
        )
    signature = body.get("signature")
    unsigned = {key: value for key, value in body.items() if key != "signature"}
    if provider.public_key is not None:
        if signature is None:
            raise ProtocolError(
                "signature: this provider registered a signing key, so its reports must be signed"
            )
        if not verify_signature(provider.public_key, unsigned, signature):
            raise ProtocolError("signature: not a valid Ed25519 signature of the canonical report")
    elif signature is not None:
        raise ProtocolError("signature: this provider has no registered public key to check it against")
    return commitment


@dataclass(frozen=True)
class Submission:
    report_id: uuid.UUID
    receipt: dict[str, Any]  # as stored: {"receipt": ..., "signature": ...}
    created: bool  # False: the same report was submitted before, and its receipt is returned again
    receipt_token: str | None = None  # known when just created; otherwise re-derived (never stored)
    receipt_key_id: str | None = None  # the secret that derived the token (`Signer.secret_key_id`)


@dataclass(frozen=True)
class _Stored:
    """What an idempotent replay needs of a stored report."""

    report_id: uuid.UUID
    digest: str
    receipt: dict[str, Any]
    receipt_key_id: str | None


def _replay(request_id: str, stored: _Stored, digest: str) -> Submission:
    if stored.digest != digest:
        raise Conflict(
            f"request_id {request_id!r} was already reported with different content "
            f"(digest {stored.digest}); a request is billed once"
        )
    return Submission(stored.report_id, stored.receipt, created=False, receipt_key_id=stored.receipt_key_id)


@dataclass(frozen=True)
class NewReport:
    """The `reports` row of a new report, with its signed receipt, and the customer's receipt token."""

    row: dict[str, Any]
    receipt_token: str


def new_report(
    signer: Signer, provider_id: uuid.UUID, body: dict[str, Any], digest: str, *, retention_days: int
) -> NewReport:
    """The row of a new report and its receipt, which states `retention_days`: how long the provider
    must keep the report's openings (an audit may be drawn until then)."""
    report_id = uuid.uuid4()
    received_at = utcnow()
    receipt = {
        "version": RECEIPT_VERSION,
        "report_id": str(report_id),
        "provider_id": str(provider_id),
        "request_id": body["request_id"],
        "digest": digest,
        "received_at": received_at.isoformat(timespec="microseconds"),
        "retention_days": retention_days,
        "auditor_key": signer.public_key_hex,
    }
    usage = body["usage"]
    token = signer.receipt_token(report_id)
    row = {
        "id": report_id,
        "provider_id": provider_id,
        "request_id": body["request_id"],
        "model": body["model"],
        "input_tokens": usage["input_tokens"],
        "output_tokens": usage["output_tokens"],
        "reasoning_tokens": usage["reasoning_tokens"],
        "body": body,
        "digest": digest,
        "receipt": {"receipt": receipt, "signature": signer.sign(receipt)},
        "receipt_token_hash": sha256_hex(token),
        "receipt_key_id": signer.secret_key_id,
        "received_at": received_at,
    }
    return NewReport(row, token)


def received_event(row: dict[str, Any]) -> NewEvent:
    """The audit event that records a stored report (`row` as `new_report` made it)."""
    return NewEvent(
        "report.received",
        provider_id=row["provider_id"],
        report_id=row["id"],
        payload={
            "request_id": row["request_id"],
            "digest": row["digest"],
            "reasoning_tokens": row["reasoning_tokens"],
            "row_digest": row_digest(row, REPORT_ROW_FIELDS),
        },
    )


def _stored(session: Session, provider: Provider, request_ids: set[str]) -> dict[str, _Stored]:
    if not request_ids:
        return {}
    rows = session.execute(
        select(Report.request_id, Report.id, Report.digest, Report.receipt, Report.receipt_key_id).where(
            Report.provider_id == provider.id, Report.request_id.in_(request_ids)
        )
    )
    return {row.request_id: _Stored(row.id, row.digest, row.receipt, row.receipt_key_id) for row in rows}


def submit_reports(
    session: Session, context: ServiceContext, provider: Provider, bodies: Sequence[dict[str, Any]]
) -> list[Submission | Conflict | ProtocolError]:
    """Store the new reports among `bodies` and sign their receipts; one outcome per body, in order.

    Each `body` is a report as the provider sent it (schema-valid). The outcome of a body is what a
    lone submission at its place in the sequence would give: a stored request id (before, or earlier
    in `bodies`) replays or conflicts whatever the body, a new one is validated, then stored."""
    bodies = [normalised_report(body) for body in bodies]
    digests = [report_digest(body) for body in bodies]
    by_request: dict[str, list[int]] = {}  # request id -> the indices of its bodies, in order
    for index, body in enumerate(bodies):
        by_request.setdefault(body["request_id"], []).append(index)
    new: dict[str, NewReport] = {}  # request id -> the new report: the first valid body per request id
    invalid: dict[int, ProtocolError] = {}
    # In request id order: two batches that share request ids then wait on each other's rows in the same
    # order, and never deadlock. The rows go in chunks, so that the server inserts one while the next
    # is validated and signed. ON CONFLICT DO NOTHING: a (provider, request_id) already stored,
    # concurrent commits included.
    with streamed_insert(session, Report, skip_conflicts_on=["provider_id", "request_id"]) as stream:
        chunk: list[dict[str, Any]] = []
        for request_id in sorted(by_request):
            for index in by_request[request_id]:
                try:
                    validate_report(
                        bodies[index], provider, max_response_bytes=context.settings.max_response_bytes
                    )
                except ProtocolError as exc:
                    invalid[index] = exc
                    continue
                new[request_id] = new_report(
                    context.signer,
                    provider.id,
                    bodies[index],
                    digests[index],
                    retention_days=context.settings.retention_days,
                )
                chunk.append(new[request_id].row)
                break  # later bodies with this request id replay it or conflict: nothing to validate
            if len(chunk) == INSERT_CHUNK_ROWS:
                stream.send(chunk)
                chunk = []
        stream.send(chunk)
    all_new = stream.inserted == len(new)
    # What was stored before this call: the request ids of invalid bodies (they may replay), and, when
    # some insert was skipped, every request id (a row with our id is one of ours).
    request_ids = {body["request_id"] for body in bodies}
    found = _stored(session, provider, request_ids - new.keys() if all_new else request_ids)
    if all_new:
        inserted = set(new)
    else:
        inserted = {rid for rid, n in new.items() if rid in found and found[rid].report_id == n.row["id"]}
    stored = {rid: earlier for rid, earlier in found.items() if rid not in inserted}

    outcomes: list[Submission | Conflict | ProtocolError] = []
    created: dict[str, _Stored] = {}  # request ids stored by this call, once their first body is reached
    for index, (body, digest) in enumerate(zip(bodies, digests, strict=True)):
        request_id = body["request_id"]
        earlier = stored.get(request_id) or created.get(request_id)
        try:
            if earlier is not None:
                outcomes.append(_replay(request_id, earlier, digest))
            elif index in invalid:
                outcomes.append(invalid[index])
            elif request_id in inserted:
                row = new[request_id].row
                created[request_id] = _Stored(row["id"], digest, row["receipt"], row["receipt_key_id"])
                outcomes.append(
                    Submission(
                        row["id"], row["receipt"], created=True, receipt_token=new[request_id].receipt_token
                    )
                )
            else:
                # Skipped by ON CONFLICT, yet not readable: only an isolation level above READ
                # COMMITTED can hide the concurrent commit that won. Fail rather than claim it stored.
                raise RuntimeError(f"request_id {request_id!r} is neither stored nor new")
        except Conflict as exc:
            outcomes.append(exc)
    append_with_commit(session, [received_event(new[request_id].row) for request_id in created])
    _count(outcomes)
    return outcomes


def _count(outcomes: Sequence[Submission | Conflict | ProtocolError]) -> None:
    """`coin_reports_total` by outcome: stored, replayed, conflict, invalid (counted before the commit:
    a rolled-back intake is counted too, as a submission the service answered)."""
    tally: dict[str, int] = {}
    for outcome in outcomes:
        if isinstance(outcome, Submission):
            kind = "stored" if outcome.created else "replayed"
        else:
            kind = "conflict" if isinstance(outcome, Conflict) else "invalid"
        tally[kind] = tally.get(kind, 0) + 1
    for kind, count in tally.items():
        REPORTS.labels(kind).inc(count)


def submit_report(
    session: Session, context: ServiceContext, provider: Provider, body: dict[str, Any]
) -> Submission:
    """Store one report and sign its receipt; raises Conflict or ProtocolError as `submit_reports` reports them."""
    [outcome] = submit_reports(session, context, provider, [body])
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def receipt_of(context: ServiceContext, submission: Submission) -> dict[str, Any]:
    """The signed receipt, with the customer's receipt token re-derived (it is never stored) with the
    secret that derived it first; None once that secret was rotated out (two rotations later)."""
    token = submission.receipt_token or context.signer.rederived_receipt_token(
        submission.report_id, submission.receipt_key_id
    )
    return {
        "report_id": str(submission.report_id),
        "receipt": submission.receipt["receipt"],
        "signature": submission.receipt["signature"],
        "receipt_token": token,
    }


def holds_receipt(report: Report, token: str) -> bool:
    return constant_time_equal(sha256_hex(token), report.receipt_token_hash)
