"""How much honest reasoning copies itself, and what the `copied_spans` rule of coin/2 makes of it.

`measure` builds every trace's repetition profile with the SDK's own code (`Repetition`, under a secret
derived from the trace id: the figures do not depend on the key, only equal n-grams meet) and its copy
figures (`auditor.protocol.copies.copy_figures`): no embedding and no sampling, every position of every
trace. It reports the distribution of the copied and repeated masses overall and per domain, model
family and length band, the honest traces closest to each threshold, and how many honest traces the
rule fails (the claim is none).

`rewriting_domain` measures a domain rule (`rule_for_references`) on a domain the shipped rule was not
fitted to: real traces that write their last half out again, half of them references, half held out.

`attack_sweep` does the same for the duplication family at each inflation ratio over a sample of
traces. The check reads the whole profile, so whether it fires depends on nothing the exposure plan
draws: these are the decisions the audits of those inflated traces reach (given an honest profile),
over more traces than `coin eval` can afford to audit.
"""

import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import blake3
import numpy as np

from auditor.protocol.copies import (
    COPY_RULE,
    HONEST_RATE,
    MIN_COPY_TOKENS,
    CopyFigures,
    CopyRule,
    copy_figures_of,
    figures_of_copies,
    find_copies,
    profile_values,
    rule_for_references,
    tail_threshold,
)
from auditor.protocol.repetition import Repetition
from auditor.research.attacks import COPY_ATTACKS, AttackContext, inflate
from auditor.research.evaluation.summary import LENGTH_BANDS, length_band, rate
from auditor.research.traces import Trace, model_family

QUANTILES = (0.5, 0.9, 0.99, 0.999, 1.0)
TOP = 10


def figures_of(tokens: Sequence[bytes], key_seed: str) -> CopyFigures:
    """The copy figures of one token list, its profile made by the provider SDK."""
    return copy_figures_of(tokens, blake3.blake3(key_seed.encode()).digest())


@dataclass(frozen=True)
class TraceCopies:
    id: str
    domain: str
    family: str
    band: str
    figures: CopyFigures
    fails: bool

    @property
    def copied_fraction(self) -> float:
        return self.figures.copied_fraction

    @property
    def repeated_fraction(self) -> float:
        return self.figures.repeated_fraction


def _distribution(values: Iterable[float]) -> dict[str, float]:
    array = np.asarray(list(values), dtype=np.float64)
    return {f"q{q:g}": float(np.quantile(array, q)) for q in QUANTILES} if len(array) else {}


def _aggregate(rows: Sequence[TraceCopies]) -> dict[str, Any]:
    return {
        "traces": len(rows),
        "tokens": sum(r.figures.size for r in rows),
        "with_copy": sum(r.figures.copies > 0 for r in rows),
        "copied_fraction": _distribution(r.copied_fraction for r in rows),
        "repeated_fraction": _distribution(r.repeated_fraction for r in rows),
        "longest_copy": max((r.figures.longest for r in rows), default=0),
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


class Masses(Protocol):
    """A trace's two copy masses (`TraceCopies`, `CopyFigures`)."""

    @property
    def copied_fraction(self) -> float: ...

    @property
    def repeated_fraction(self) -> float: ...


def fitted_rule(
    rows: Sequence[Masses],
    min_tokens: int = COPY_RULE.min_tokens,
    label: str = "fitted",
    rate: float = HONEST_RATE,
) -> CopyRule:
    """The rule `tail_threshold` sets on these honest traces (unrounded) at the honest `rate`; ValueError
    below 200 traces (their top 1% must hold two)."""
    return CopyRule(
        copied=tail_threshold((r.copied_fraction for r in rows), rate=rate),
        repeated=tail_threshold((r.repeated_fraction for r in rows), rate=rate),
        min_tokens=min_tokens,
        label=label,
    )


def fold_copy_rule(
    traces: Sequence[Trace], domain: str, tokens_of: Callable[[Trace], list[bytes]]
) -> CopyRule:
    """The copy rule of the leave-one-domain-out fold that leaves `domain` out: the tail fit on the other
    domains' honest traces, exactly as `leave_one_domain_out` fits it (unrounded, the shipped
    `min_tokens`), so that the evaluation's fold audits under the rule whose held-out margin the bench
    prints. The shipped `COPY_RULE` was fitted on every domain, the held-out one included."""
    rest = [figures_of(tokens_of(t), t.id) for t in traces if t.domain != domain]
    return fitted_rule(rest, label=f"without-{domain}")


def _ratio(threshold: float, largest: float) -> float:
    return threshold / largest if largest else math.inf


def leave_one_domain_out(rows: Sequence[TraceCopies], rate: float = HONEST_RATE) -> list[dict[str, Any]]:
    """Per domain: the rule fitted (at the honest `rate`) on the other domains' honest traces, and how
    this domain's honest traces fare under it (`fails` must be 0; `margin`: threshold over the largest
    mass, the nearer of the two)."""
    out = []
    for domain in sorted({r.domain for r in rows}):
        held_out = [r for r in rows if r.domain == domain]
        rule = fitted_rule([r for r in rows if r.domain != domain], rate=rate)
        largest_copied = max(r.copied_fraction for r in held_out)
        largest_repeated = max(r.repeated_fraction for r in held_out)
        out.append(
            {
                "domain": domain,
                "traces": len(held_out),
                "rule": asdict(rule),
                "fails": sum(r.figures.proves_copying(rule) for r in held_out),
                "largest_copied": largest_copied,
                "largest_repeated": largest_repeated,
                "margin": min(_ratio(rule.copied, largest_copied), _ratio(rule.repeated, largest_repeated)),
            }
        )
    return out


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
                found,
                found.proves_copying(rule),
            )
        )
    overall = _aggregate(rows)
    return {
        "rule": asdict(rule),
        "fitted_rule": asdict(fitted_rule(rows, rule.min_tokens)),
        "leave_one_domain_out": leave_one_domain_out(rows),
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


def _rates_by(fails: Sequence[bool], groups: Sequence[str], names: Sequence[str]) -> dict[str, Any]:
    return {name: rate([f for f, g in zip(fails, groups, strict=True) if g == name]) for name in names}


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
    bands = [length_band(len(ctx.tokens(t))) for t in sample]
    domains = [t.domain for t in sample]
    rows = []
    for attack in attacks:
        for ir in irs:
            found = []
            for trace in sample:
                inflated = inflate(trace, attack, ir, random.Random(f"{seed}:{trace.id}:{attack}:{ir}"), ctx)
                found.append(figures_of(inflated.tokens, trace.id))
            fails = [f.proves_copying(rule) for f in found]
            rows.append(
                {
                    "attack": attack,
                    "ir": ir,
                    "fail": rate(fails),
                    "fail_by_length": _rates_by(fails, bands, [name for name, _, _ in LENGTH_BANDS]),
                    "fail_by_domain": _rates_by(fails, domains, sorted(set(domains))),
                    "copied_fraction": float(np.mean([f.copied_fraction for f in found])),
                    "repeated_fraction": float(np.mean([f.repeated_fraction for f in found])),
                }
            )
    return rows


REWRITE_BRIDGE = "\n\nSo, written out again:\n\n"


def _largest(figures: Sequence[CopyFigures]) -> dict[str, float]:
    return {
        "copied": max(f.copied_fraction for f in figures),
        "repeated": max(f.repeated_fraction for f in figures),
    }


def rewriting_domain(
    traces: Sequence[Trace],
    tokenize: Callable[[str], list[bytes]],
    *,
    count: int = 400,
    min_tokens: int = 500,
    share: float = 0.5,
) -> list[dict[str, Any]]:
    """A domain the shipped rule was not fitted to, made of real traces: the first `count` with at least
    `min_tokens` tokens, each writing the last `share` of its reasoning out again (a final draft, as a
    coding model rewrites its code). Either half is the references of a domain rule
    (`rule_for_references`), the other half held out: per split, the rule and how many of each half
    fail it, and how many held-out traces the shipped rule fails."""
    rewritten = []
    for trace in traces:
        tokens = tokenize(trace.reasoning)
        if len(tokens) < min_tokens:
            continue
        tokens += tokenize(REWRITE_BRIDGE) + tokens[-round(share * len(tokens)) :]
        rewritten.append(figures_of(tokens, trace.id))
        if len(rewritten) == count:
            break
    splits = []
    for references, held_out in ((rewritten[::2], rewritten[1::2]), (rewritten[1::2], rewritten[::2])):
        rule = rule_for_references(references, label="rewriting")
        splits.append(
            {
                "rule": asdict(rule),
                "references": len(references),
                "held_out": len(held_out),
                "reference_fails": sum(f.proves_copying(rule) for f in references),
                "held_out_fails": sum(f.proves_copying(rule) for f in held_out),
                "held_out_fails_shipped": sum(f.proves_copying(COPY_RULE) for f in held_out),
                "largest_reference": _largest(references),
                "largest_held_out": _largest(held_out),
            }
        )
    return splits


def constants_sensitivity(
    traces: Sequence[Trace],
    tokens_of: Callable[[Trace], list[bytes]],
    *,
    rates: Sequence[float] = (HONEST_RATE, 3e-4, 1e-3),
    min_spans: Sequence[int] = (6, MIN_COPY_TOKENS, 16),
) -> list[dict[str, Any]]:
    """`leave_one_domain_out` again with the rule's hand-set constants moved, one at a time: the honest
    rate the tail fit is read at (`HONEST_RATE`) and the shortest copy counted (`MIN_COPY_TOKENS`). The
    shipped values were chosen with every domain in view; per setting, each held-out domain's honest
    fails under the fit on the others and the worst margin (threshold over largest mass)."""
    found = []
    for trace in traces:
        tokens = tokens_of(trace)
        profile = Repetition(tokens, blake3.blake3(trace.id.encode()).digest()).profile
        found.append((trace, len(tokens), find_copies(profile_values(profile))))
    settings = [(r, MIN_COPY_TOKENS) for r in rates] + [
        (HONEST_RATE, m) for m in min_spans if m != MIN_COPY_TOKENS
    ]
    rows = []
    for honest_rate, min_span in settings:
        copies = [
            TraceCopies(
                t.id, t.domain, model_family(t.model), length_band(n), figures_of_copies(c, min_span), False
            )
            for t, n, c in found
        ]
        folds = leave_one_domain_out(copies, rate=honest_rate)
        rows.append(
            {
                "honest_rate": honest_rate,
                "min_copy_tokens": min_span,
                "held_out_fails": {fold["domain"]: fold["fails"] for fold in folds},
                "margin": min(fold["margin"] for fold in folds),
            }
        )
    return rows


if __name__ == "__main__":
    # .venv/bin/python -m auditor.research.copy_rates: the held-out fails of `constants_sensitivity`.
    from auditor.protocol.tokenize import DEFAULT_TOKENIZER_ID, get_tokenizer
    from auditor.research.traces import load_traces

    tokenizer = get_tokenizer(DEFAULT_TOKENIZER_ID)
    every = load_traces(["../shared/data/traces"])
    print(f"the copy rule's tail fit held out by domain, {len(every)} honest traces, one constant moved:")
    for row in constants_sensitivity(every, lambda t: tokenizer.tokenize(t.reasoning)):
        fails = ", ".join(f"{d} {n}" for d, n in row["held_out_fails"].items())
        print(
            f"  rate {row['honest_rate']:g}, MIN_COPY_TOKENS {row['min_copy_tokens']}: held-out fails {fails};"
            f" worst margin x{row['margin']:.2f}"
        )
