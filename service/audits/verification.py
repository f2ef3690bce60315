"""The expensive step of an audit: checks 1–8 of DESIGN §3 on a stored response.

Kept apart from the state machine because it loads Embd and the heads (torch): a process that only
takes requests and hands jobs to the workers never imports it.
"""

import dataclasses
from dataclasses import dataclass
from functools import cache
from typing import Any

from auditor.protocol.challenge import Challenge
from auditor.protocol.commitment import PublicCommitment, Response
from auditor.protocol.copies import CopyRule
from auditor.protocol.errors import ModelError, ProtocolError
from auditor.protocol.fingerprint import get_embedder
from auditor.protocol.tokenize import DEFAULT_TOKENIZER_ID
from auditor.protocol.verify import CheckResult, verify_response
from auditor.semantic.checks import SemanticSuite
from auditor.semantic.exposure import ExposurePolicy
from auditor.semantic.heads import load_heads
from service.audits.verdicts import DecidedBy, evidence_of
from service.models import Outcome
from service.monitoring.calibration import shipped_calibration
from service.settings import Settings


@cache
def semantic_suite(embd_id: str, tokenizer_id: str) -> SemanticSuite:
    """Checks 4–8 with the shipped heads, loaded once per process (ModelError if missing or mismatched)."""
    return SemanticSuite.for_tokenizer(load_heads(embd_id=embd_id), tokenizer_id)


def preload_models(settings: Settings) -> None:
    """Load Embd and the heads when a verifying process starts: a missing or mismatched checkpoint — or a
    shipped monitor calibration fitted for another checkpoint — is a clear ModelError at start, not a
    surprise at the first audit."""
    embedder = get_embedder(settings.embed_device)
    heads = semantic_suite(embedder.embd_id, DEFAULT_TOKENIZER_ID).heads.checkpoint_id
    shipped = shipped_calibration().heads
    if heads != shipped:
        raise ModelError(
            f"the shipped monitor calibration goes with {shipped}, but the head checkpoint is {heads}: "
            "refit it with `coin monitor-eval` (service/monitoring/shipped_calibration.json)"
        )


@dataclass(frozen=True)
class RoundResult:
    outcome: Outcome
    evidence: dict[str, Any]
    wants_more_blocks: bool  # the semantic test is undecided: the next round may settle it
    # The embedding model the verdict was decided with, and the head checkpoint when the semantic checks
    # ran (None when checks 1–3 already failed, or when nothing could be verified).
    decided_by: DecidedBy


def verify_round(
    settings: Settings,
    public: PublicCommitment,
    challenge: Challenge,
    response_body: dict[str, Any],
    *,
    copy_rule: CopyRule,
    policy: ExposurePolicy,
) -> RoundResult:
    """One round's checks; `copy_rule` is the provider's (`service.monitoring.calibration.copy_rule_for`),
    `policy` the one the audit's plan was drawn under (`service.audits.workflow.exposure_policy`): the
    verifier decides on the blocks that plan reveals, and passes a clean sample once they are spent."""
    embd_id = public.commitment.embd_id
    try:
        embedder = get_embedder(settings.embed_device)
        suite = dataclasses.replace(semantic_suite(embd_id, public.commitment.tokenizer_id), policy=policy)
        semantic_checks = suite.checks()
        verification = verify_response(
            public,
            challenge,
            Response.from_json(response_body),
            embedder=embedder,
            semantic_checks=semantic_checks,
            copy_rule=copy_rule,
        )
    except (ProtocolError, ModelError) as exc:
        # The API checked the response's shape on receipt, so what is left is a mismatch on the
        # auditor's side (e.g. its embedding model or heads changed since the report): no verdict.
        check = CheckResult("protocol", "inconclusive", None, str(exc))
        return RoundResult(
            Outcome.INCONCLUSIVE,
            evidence_of(challenge, [check.to_json()]),
            wants_more_blocks=False,
            decided_by={"embd_id": embd_id, "heads": None},
        )
    outcome = Outcome(verification.verdict)
    evidence = evidence_of(challenge, [check.to_json() for check in verification.checks])
    semantic_names = {check.name for check in semantic_checks}
    heads_ran = any(check.name in semantic_names for check in verification.checks)
    return RoundResult(
        outcome,
        evidence,
        wants_more_blocks=outcome == Outcome.INCONCLUSIVE,
        # `checkpoint_id` names the bytes the suite loaded (BLAKE3), so the calibration is named with them.
        decided_by={"embd_id": embd_id, "heads": suite.heads.checkpoint_id if heads_ran else None},
    )
