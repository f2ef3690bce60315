"""Honest reference traces through the auditor's own pipeline, for a domain's calibration (`coin calibrate`).

Each trace is committed with the provider SDK (`auditor.protocol.commitment.commit`), challenged with
the exposure plan a service audit draws (`service.audits.workflow.plan_for`), answered honestly round by
round and verified by the service's own verification (`verify_round`: checks 1–8 with the shipped
heads) until a round decides, as a real audit would. What the monitor reads of each is its score
(`auditor.monitoring.AuditEvidence`); `service.monitoring.calibration.register_calibration` turns the
scores into the domain's null bound.

Before the audits, the references' repetition profiles give the domain's copy rule
(`reference_copy_rule`: the profiles need no embedding), and the references are audited under it, as the
domain's providers will be.
"""

import json
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from auditor.monitoring import AuditEvidence
from auditor.protocol.commitment import commit, new_secret, tokens_of
from auditor.protocol.copies import CopyRule, copy_figures_of, rule_for_references
from auditor.protocol.fingerprint import get_embedder
from auditor.protocol.tokenize import DEFAULT_TOKENIZER_ID
from service.audits.verification import semantic_suite, verify_round
from service.audits.workflow import exposure_policy, plan_for
from service.settings import Settings


@dataclass(frozen=True)
class ReferenceTrace:
    """An honest trace the auditor produced itself: the hidden reasoning and the visible answer."""

    id: str
    reasoning: str
    answer: str


def read_reference_traces(path: Path, domain: str) -> list[ReferenceTrace]:
    """The traces of a JSON-lines file: `reasoning` and `answer` (strings) on each line, `id` if given
    (else the line number), and `domain`, if given, must be `domain`. ValueError naming the line."""
    traces = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path.name}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{where}: expected a JSON object")
            for name in ("reasoning", "answer"):
                if not isinstance(record.get(name), str) or not record[name].strip():
                    raise ValueError(f"{where}.{name}: expected a non-empty string")
            if record.get("domain", domain) != domain:
                raise ValueError(f"{where}.domain: {record['domain']!r}, not {domain!r}")
            traces.append(
                ReferenceTrace(str(record.get("id", number)), record["reasoning"], record["answer"])
            )
    if not traces:
        raise ValueError(f"{path.name}: no traces")
    return traces


def reference_copy_rule(traces: Sequence[ReferenceTrace], domain: str) -> CopyRule:
    """The copy rule the references set (`rule_for_references`, whose ValueError it passes on): each
    one's repetition profile, as the SDK commits it, under a fresh key (the copies do not depend on it)."""
    figures = [copy_figures_of(tokens_of(t.reasoning, DEFAULT_TOKENIZER_ID), new_secret()) for t in traces]
    return rule_for_references(figures, label=f"{domain} reference")


@dataclass(frozen=True)
class ReferenceAudit:
    trace_id: str
    outcome: str
    evidence: AuditEvidence


def audit_reference(settings: Settings, trace: ReferenceTrace, copy_rule: CopyRule) -> ReferenceAudit:
    """One honest trace, committed, challenged, answered and verified as the service audits a report."""
    public, openings = commit(
        trace.reasoning, trace.answer, new_secret(), embedder=get_embedder(settings.embed_device)
    )
    plan = plan_for(public.commitment, secrets.token_hex(32))
    policy = exposure_policy(public.commitment.size, public.commitment.block_size)
    for round_index in range(plan.rounds):
        challenge = plan.challenge(round_index)
        response = openings.respond(challenge.indices, challenge.content_indices).to_json()
        result = verify_round(settings, public, challenge, response, copy_rule=copy_rule, policy=policy)
        if not result.wants_more_blocks:
            break
    statement = {"outcome": result.outcome.value, "evidence": result.evidence}
    return ReferenceAudit(
        trace.id, result.outcome.value, AuditEvidence.from_verdict(statement, len(plan.blocks))
    )


def audit_references(
    settings: Settings,
    traces: Iterable[ReferenceTrace],
    copy_rule: CopyRule,
    progress: Callable[[ReferenceAudit], None],
) -> list[ReferenceAudit]:
    """Every trace audited in turn under `copy_rule` (`progress` is told of each)."""
    audits = []
    for trace in traces:
        audits.append(audit_reference(settings, trace, copy_rule))
        progress(audits[-1])
    return audits


def checkpoint_in_use(settings: Settings) -> tuple[str, str]:
    """(head checkpoint id, embd_id) the references are audited with."""
    embd_id = get_embedder(settings.embed_device).embd_id
    return semantic_suite(embd_id, DEFAULT_TOKENIZER_ID).heads.checkpoint_id, embd_id
