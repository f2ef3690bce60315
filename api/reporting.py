"""Report intake (DESIGN §2 step 2): validate against the protocol, store idempotently, sign a receipt.

A report is idempotent on (provider, request_id): the same body again returns the same receipt, a
different body under the same request id is a conflict — a provider cannot quietly re-bill a request.
"""

import uuid
from dataclasses import dataclass
from functools import cache
from typing import Any

import blake3
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.context import ServiceContext
from api.errors import Conflict
from api.events import append_event
from api.models import Provider, Report, utcnow
from api.security import constant_time_equal, sha256_hex, verify_signature
from auditor.commitment import AnswerCommitment, Commitment
from auditor.encoding import canonical_json
from auditor.errors import ProtocolError
from auditor.fingerprint import embd_id_of, model_dir
from auditor.tokenize import known_tokenizers

RECEIPT_VERSION = "coin-receipt/1"


@cache
def accepted_embd_id() -> str:
    """The embd_id of the auditor's own model: the weights file's hash, without loading the model."""
    return embd_id_of(model_dir() / "model.safetensors")


def report_digest(body: dict[str, Any]) -> str:
    """H(canonical report), hex: what the receipt and the transparency log commit to."""
    return blake3.blake3(canonical_json(body)).hexdigest()


def validate_report(body: dict[str, Any], provider: Provider) -> Commitment:
    """The protocol checks of DESIGN §3 "Report"; raises ProtocolError naming the field."""
    commitment = Commitment.from_json(body["commitment"])
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
    report: Report
    created: bool  # False: the same report was submitted before, and its receipt is returned again


def _replay(existing: Report, digest: str) -> Submission:
    if existing.digest != digest:
        raise Conflict(
            f"request_id {existing.request_id!r} was already reported with different content "
            f"(digest {existing.digest}); a request is billed once"
        )
    return Submission(existing, created=False)


def _find(session: Session, provider_id: uuid.UUID, request_id: str) -> Report | None:
    return session.scalars(
        select(Report).where(Report.provider_id == provider_id, Report.request_id == request_id)
    ).one_or_none()


def submit_report(
    session: Session, context: ServiceContext, provider: Provider, body: dict[str, Any]
) -> Submission:
    """Store one validated report and sign its receipt; `body` is the report as the provider sent it."""
    digest = report_digest(body)
    existing = _find(session, provider.id, body["request_id"])
    if existing is not None:
        return _replay(existing, digest)
    validate_report(body, provider)

    report_id = uuid.uuid4()
    received_at = utcnow()
    receipt = {
        "version": RECEIPT_VERSION,
        "report_id": str(report_id),
        "provider_id": str(provider.id),
        "request_id": body["request_id"],
        "digest": digest,
        "received_at": received_at.isoformat(timespec="microseconds"),
        "auditor_key": context.signer.public_key_hex,
    }
    usage = body["usage"]
    report = Report(
        id=report_id,
        provider_id=provider.id,
        request_id=body["request_id"],
        model=body["model"],
        input_tokens=usage["input_tokens"],
        output_tokens=usage["output_tokens"],
        reasoning_tokens=usage["reasoning_tokens"],
        body=body,
        digest=digest,
        receipt={"receipt": receipt, "signature": context.signer.sign(receipt)},
        receipt_token_hash=sha256_hex(context.signer.receipt_token(report_id)),
        received_at=received_at,
    )
    try:
        with session.begin_nested():
            session.add(report)
    except IntegrityError:
        # A concurrent submission of the same request id committed first.
        raced = _find(session, provider.id, body["request_id"])
        if raced is None:
            raise
        return _replay(raced, digest)
    append_event(
        session,
        "report.received",
        provider_id=provider.id,
        report_id=report.id,
        payload={
            "request_id": report.request_id,
            "digest": digest,
            "reasoning_tokens": report.reasoning_tokens,
        },
    )
    return Submission(report, created=True)


def receipt_of(context: ServiceContext, report: Report) -> dict[str, Any]:
    """The signed receipt, with the customer's receipt token re-derived (it is never stored)."""
    return {
        "report_id": str(report.id),
        "receipt": report.receipt["receipt"],
        "signature": report.receipt["signature"],
        "receipt_token": context.signer.receipt_token(report.id),
    }


def holds_receipt(report: Report, token: str) -> bool:
    return constant_time_equal(sha256_hex(token), report.receipt_token_hash)
