"""How much honest reasoning copies itself, and what the `copied_spans` rule of coin/2 makes of it.

`measure` builds every trace's repetition profile with the SDK's own code (`Repetition`, under a secret
derived from the trace id: the figures do not depend on the key, only equal n-grams meet) and its copy
figures (`auditor.protocol.copies.copy_figures`): no embedding and no sampling, every position of every
trace. It reports the distribution of the copied and repeated masses overall and per domain, model
family and length band, the honest traces closest to each threshold, and how many honest traces the
rule fails (the claim is none).

`attack_sweep` does the same for the duplication family at each inflation ratio over a sample of
traces. The check reads the whole profile, so whether it fires depends on nothing the exposure plan
draws: these are the decisions the audits of those inflated traces reach (given an honest profile),
over more traces than `coin eval` can afford to audit.
"""

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import blake3
import numpy as np

from auditor.protocol.copies import COPY_RULE, MIN_COPY_TOKENS, CopyFigures, CopyRule, copy_figures
from auditor.protocol.repetition import Repetition
from auditor.research.attacks import COPY_ATTACKS, AttackContext, inflate
from auditor.research.evaluation.summary import LENGTH_BANDS, length_band, rate
from auditor.research.traces import Trace, model_family

QUANTILES = (0.5, 0.9, 0.99, 0.999, 1.0)
TOP = 10


def figures_of(tokens: Sequence[bytes], key_seed: str) -> CopyFigures:
    """The copy figures of one token list, its profile made by the provider SDK."""
    secret = blake3.blake3(key_seed.encode()).digest()
    return copy_figures(Repetition(tokens, secret).profile)


@dataclass(frozen=True)
class TraceCopies:
    id: str
    domain: str
    family: str
    band: str
    tokens: int
    copied: int
    repeated: int
    copies: int
    longest: int
    fails: bool

    @property
    def copied_fraction(self) -> float:
        return self.copied / self.tokens

    @property
    def repeated_fraction(self) -> float:
        return self.repeated / self.tokens


def _distribution(values: Iterable[float]) -> dict[str, float]:
    array = np.asarray(list(values), dtype=np.float64)
    return {f"q{q:g}": float(np.quantile(array, q)) for q in QUANTILES} if len(array) else {}


def _aggregate(rows: Sequence[TraceCopies]) -> dict[str, Any]:
    return {
        "traces": len(rows),
        "tokens": sum(r.tokens for r in rows),
        "with_copy": sum(r.copies > 0 for r in rows),
        "copied_fraction": _distribution(r.copied_fraction for r in rows),
        "repeated_fraction": _distribution(r.repeated_fraction for r in rows),
        "longest_copy": max((r.longest for r in rows), default=0),
        "fails": sum(r.fails for r in rows),
    }


def _grouped(rows: Sequence[TraceCopies], key: Callable[[TraceCopies], str]) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[TraceCopies]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    return {name: _aggregate(groups[name]) for name in sorted(groups)}


def _top(rows: Sequence[TraceCopies], fraction: Callable[[TraceCopies], float]) -> list[dict[str, Any]]:
    ranked = sorted(rows, key=lambda r: -fraction(r))[:TOP]
    return [{**asdict(r), "fraction": round(fraction(r), 4)} for r in ranked]


def measure(
    traces: Sequence[Trace], tokens_of: Callable[[Trace], list[bytes]], rule: CopyRule = COPY_RULE
) -> dict[str, Any]:
    """The honest distribution of the module docstring, JSON-serialisable (`tokens_of` tokenizes a
    trace's reasoning)."""
    rows = []
    for trace in traces:
        tokens = tokens_of(trace)
        found = figures_of(tokens, trace.id)
        rows.append(
            TraceCopies(
                trace.id,
                trace.domain,
                model_family(trace.model),
                length_band(len(tokens)),
                len(tokens),
                found.copied,
                found.repeated,
                found.copies,
                found.longest,
                found.proves_copying(rule),
            )
        )
    overall = _aggregate(rows)
    return {
        "rule": asdict(rule),
        "min_copy_tokens": MIN_COPY_TOKENS,
        "overall": overall,
        "margin": {
            "copied": rule.copied / overall["copied_fraction"]["q1"],
            "repeated": rule.repeated / overall["repeated_fraction"]["q1"],
        },
        "by_domain": _grouped(rows, lambda r: r.domain),
        "by_family": _grouped(rows, lambda r: r.family),
        "by_length": _grouped(rows, lambda r: r.band),
        "top_copied": _top(rows, lambda r: r.copied_fraction),
        "top_repeated": _top(rows, lambda r: r.repeated_fraction),
        "failed": [r.id for r in rows if r.fails],
    }


def attack_sweep(
    traces: Sequence[Trace],
    ctx: AttackContext,
    irs: Sequence[float],
    *,
    attacks: Sequence[str] = COPY_ATTACKS,
    per_cell: int = 200,
    seed: int = 0,
    rule: CopyRule = COPY_RULE,
) -> list[dict[str, Any]]:
    """The rule's decision on `per_cell` traces (drawn once, at least 2 tokens) per attack x IR."""
    usable = [t for t in traces if len(ctx.tokens(t)) >= 2]
    sample = random.Random(seed).sample(usable, min(per_cell, len(usable)))
    rows = []
    for attack in attacks:
        for ir in irs:
            found = []
            for trace in sample:
                inflated = inflate(trace, attack, ir, random.Random(f"{seed}:{trace.id}:{attack}:{ir}"), ctx)
                found.append(figures_of(inflated.tokens, trace.id))
            fails = [f.proves_copying(rule) for f in found]
            bands = [length_band(len(ctx.tokens(t))) for t in sample]
            rows.append(
                {
                    "attack": attack,
                    "ir": ir,
                    "fail": rate(fails),
                    "fail_by_length": {
                        name: rate([f for f, b in zip(fails, bands, strict=True) if b == name])
                        for name, _, _ in LENGTH_BANDS
                    },
                    "copied_fraction": float(np.mean([f.copied_fraction for f in found])),
                    "repeated_fraction": float(np.mean([f.repeated_fraction for f in found])),
                }
            )
    return rows
