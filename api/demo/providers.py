"""Simulated providers for the demo: each commits to a real trace with the SDK and answers challenges
the way an honest or a cheating provider would (`coin demo` sends their reports and responses through
the REST API)."""

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.demo import DEMO_TRACE_FILES
from auditor.protocol.challenge import Challenge
from auditor.protocol.commitment import (
    DEFAULT_BLOCK_SIZE,
    Openings,
    PublicCommitment,
    Response,
    commit,
    new_secret,
)
from auditor.protocol.fingerprint import Embedder


@dataclass
class SimulatedReport:
    """One billed request as a provider reports it, and how that provider answers challenges."""

    behaviour: str
    trace_id: str
    public: PublicCommitment
    openings: Openings
    answer_challenge: Callable[[Challenge], Response]


def demo_traces(traces_dir: Path, limit: int) -> list[dict[str, Any]]:
    """Short real traces from several sources, deterministic."""
    picked: list[dict[str, Any]] = []
    for name in DEMO_TRACE_FILES:
        with (traces_dir / name).open(encoding="utf-8") as fh:
            rows = [json.loads(line) for _, line in zip(range(limit), fh, strict=False)]
        picked += rows[: -(-limit // len(DEMO_TRACE_FILES))]
    return picked[:limit]


def _honest(openings: Openings) -> Callable[[Challenge], Response]:
    return lambda challenge: openings.respond(challenge.indices, challenge.content_indices)


def _best_effort(openings: Openings) -> Callable[[Challenge], Response]:
    """An over-claiming provider opens what it has; for the indices it never committed, the best it can
    send is its last leaf's opening under the asked index (CoIn's padding reuses the last leaf), which the
    auditor's recomputed leaf hash refutes. (Leaving them out is refused as an incomplete answer.)"""

    def respond(challenge: Challenge) -> Response:
        have = len(openings.tokens)
        content = set(challenge.content_indices)
        real = openings.respond([i for i in challenge.indices if i < have], [i for i in content if i < have])
        padded = [
            dataclasses.replace(openings.open(have - 1, content=i in content), index=i)
            for i in challenge.indices
            if i >= have
        ]
        return Response(tuple(sorted([*real.openings, *padded], key=lambda opening: opening.index)))

    return respond


def _forging(openings: Openings) -> Callable[[Challenge], Response]:
    """Answers with a fingerprint that is not the committed one (e.g. to hide filler)."""

    def respond(challenge: Challenge) -> Response:
        honest = openings.respond(challenge.indices, challenge.content_indices)
        forged = []
        for opening in honest.openings:
            if opening.fingerprint is not None:
                flipped = bytes([opening.fingerprint[0] ^ 0x7F]) + opening.fingerprint[1:]
                opening = dataclasses.replace(opening, fingerprint=flipped)
            forged.append(opening)
        return Response(tuple(forged))

    return respond


def simulate(trace: dict[str, Any], behaviour: str, embedder: Embedder) -> SimulatedReport:
    # a copying provider bills its trace twice: the reasoning pasted again after itself, committed and
    # answered faithfully (coin/2's profile shows the copy; nothing else about it is wrong)
    copies = 2 if behaviour == "copied 2x" else 1
    reasoning = "\n\n".join([trace["reasoning"]] * copies)
    public, openings = commit(
        reasoning, trace["answer"], new_secret(), block_size=DEFAULT_BLOCK_SIZE, embedder=embedder
    )
    size = public.commitment.size
    if behaviour in ("honest", "copied 2x"):
        return SimulatedReport(behaviour, trace["id"], public, openings, _honest(openings))
    # a cheating provider bills more leaves than it committed: 1.5x, or CoIn's padding to the next
    # power of two by repeating the last leaf; it opens what it has
    billed = {"over-claim 1.5x": size + size // 2, "coin padding": 1 << (size - 1).bit_length()}
    if behaviour in billed:
        claimed = dataclasses.replace(
            public, commitment=dataclasses.replace(public.commitment, size=billed[behaviour])
        )
        return SimulatedReport(behaviour, trace["id"], claimed, openings, _best_effort(openings))
    if behaviour == "forged opening":
        return SimulatedReport(behaviour, trace["id"], public, openings, _forging(openings))
    raise ValueError(f"unknown behaviour {behaviour!r}")


# What each should get: honest -> pass; the four cheats -> fail, each caught by a proof check (the
# over-claims cannot open the count indices they never committed, the forgery's leaves miss the root,
# the copy's repetition profile shows half the trace pasted again), never by a statistical one, which
# could only make an audit `suspect`.
BEHAVIOURS = ("honest", "over-claim 1.5x", "coin padding", "forged opening", "copied 2x")
