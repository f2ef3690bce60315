"""Variants of the copied_spans measure tried toward issue 12's IR <= 0.25 targets, and why none shipped.

For every honest trace in ../shared/data/traces and for `--per-cell` traces per copy attack x IR, finds
the copies of the SDK's repetition profile (`auditor.protocol.copies.find_copies`) and measures the
copied mass four ways:

- `copied`: the copied mass of the `copied_spans` rule (copies spanning >= MIN_COPY_TOKENS tokens; the
  rule also fails on the repeated mass, which this bench leaves out: bench/copy_rates.py has both);
- `span>=32`, `span>=64`: only copies spanning at least that many tokens (restated phrases left out);
- `verbatim`: only copies that are not loops and whose positions all but match (>= 95%): pasted text
  is verbatim, a model restating itself edits;
- `to 4th`: an n-gram's second to fourth occurrences counted, not its second only: a unit pasted three
  times in a row (the "near" copies at IR 3) counts three times, a long honest loop three periods.

Each variant's threshold is set the way the shipped one is (`tail_threshold`: the exponential tail of
the top 1% of honest masses at one trace in 10,000, with at least `COPY_RULE.min_tokens` tokens), on all
traces and leaving each domain out. Printed: honest fails (held out: the worst fold), and the share of
attacked traces above the threshold per attack and IR.

Then a provider-level test of the copied mass: per model family (>= 30 traces), the share of honest
traces above a level x; a monitor's null would be the heaviest family's share. Held out by domain, the
null from the other domains against the held-out domain's heaviest family.

    .venv/bin/python bench/copy_variants.py [--traces DIR] [--per-cell N]    # about 3 min on 2 cores
"""

import argparse
import os
import random
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without `pip install -e .`
import blake3
import numpy as np

from auditor.protocol.copies import (
    COPY_RULE,
    MIN_COPY_TOKENS,
    PERIODIC,
    copy_figures,
    find_copies,
    profile_values,
    tail_threshold,
)
from auditor.protocol.repetition import Repetition
from auditor.protocol.tokenize import DEFAULT_TOKENIZER_ID, get_tokenizer
from auditor.research.attacks import COPY_ATTACKS, AttackContext, inflate
from auditor.research.traces import load_traces, model_family

TRACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces"
VARIANTS = ("copied", "span>=32", "span>=64", "verbatim", "to 4th")
VERBATIM = 0.95
IRS = (0.1, 0.25, 0.5, 1.0, 3.0)
LEVELS = (0.05, 0.08, 0.10)
MIN_FAMILY = 30


def masses(tokens: Sequence[bytes], key_seed: str) -> dict[str, int]:
    """Tokens of copied mass per variant (`copied` is CopyFigures.copied: checked here)."""
    profile = Repetition(tokens, blake3.blake3(key_seed.encode()).digest()).profile
    found = find_copies(profile_values(profile))
    span, second = found.span, found.copied
    verbatim = (span <= PERIODIC * found.offset) & (found.matched >= VERBATIM * (found.end - found.start))
    long = span >= MIN_COPY_TOKENS
    out = {
        "copied": int(second[long].sum()),
        "span>=32": int(second[span >= 32].sum()),
        "span>=64": int(second[span >= 64].sum()),
        "verbatim": int(second[long & verbatim].sum()),
        "to 4th": int(find_copies(profile_values(profile), repeats=3).copied[long].sum()),
    }
    if out["copied"] != copy_figures(profile).copied:
        raise AssertionError("the copied variant departs from copy_figures")
    return out


def fraction(mass: dict[str, int], size: int, variant: str) -> float:
    return mass[variant] / size if mass[variant] >= COPY_RULE.min_tokens else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=Path, default=TRACES)
    parser.add_argument("--per-cell", type=int, default=200)
    args = parser.parse_args()

    traces = load_traces([args.traces])
    ctx = AttackContext(get_tokenizer(DEFAULT_TOKENIZER_ID), traces)
    honest = []  # (domain, family, {variant: fraction})
    for trace in traces:
        tokens = ctx.tokens(trace)
        mass = masses(tokens, trace.id)
        honest.append(
            (trace.domain, model_family(trace.model), {v: fraction(mass, len(tokens), v) for v in VARIANTS})
        )
    domains = sorted({d for d, _, _ in honest})
    usable = [t for t in traces if len(ctx.tokens(t)) >= 2]
    sample = random.Random(0).sample(usable, min(args.per_cell, len(usable)))
    attacked: dict[tuple[str, float], list[dict[str, float]]] = defaultdict(list)
    for attack in COPY_ATTACKS:
        for ir in IRS:
            for trace in sample:
                inflated = inflate(
                    trace, attack, ir, random.Random(f"0:{trace.id}:{attack}:{ir}"), ctx
                ).tokens
                mass = masses(inflated, trace.id)
                attacked[attack, ir].append({v: fraction(mass, len(inflated), v) for v in VARIANTS})

    print(f"{len(honest)} honest traces, {len(sample)} attacked per attack x IR")
    print(
        f"{'variant':10s} {'max':>7s} {'thresh':>7s} {'fails':>5s} {'LODO':>5s}  min/max over the family at IR"
    )
    for variant in VARIANTS:
        values = np.array([f[variant] for _, _, f in honest])
        threshold = tail_threshold(values)
        held_out_fails = []
        for domain in domains:
            inside = np.array([d == domain for d, _, _ in honest])
            held_out_fails.append(int((values[inside] > tail_threshold(values[~inside])).sum()))
        cells = []
        for ir in IRS:
            rates = [np.mean([f[variant] > threshold for f in attacked[a, ir]]) for a in COPY_ATTACKS]
            cells.append(f"{ir:g}: {min(rates):.2f}-{max(rates):.2f}")
        print(
            f"{variant:10s} {values.max():7.4f} {threshold:7.4f} {int((values > threshold).sum()):5d} "
            f"{max(held_out_fails):5d}  " + "  ".join(cells)
        )

    print("provider level: share of honest traces above x, the heaviest family (null) vs held out")
    by_family: dict[tuple[str, str], list[float]] = defaultdict(list)
    for domain, family, f in honest:
        by_family[domain, family].append(f["copied"])
    for level in LEVELS:
        share = {k: float(np.mean(np.array(v) > level)) for k, v in by_family.items() if len(v) >= MIN_FAMILY}
        heaviest = max(share, key=share.__getitem__)
        ir_low = min(np.mean([f["copied"] > level for f in attacked[a, IRS[0]]]) for a in COPY_ATTACKS)
        folds = []
        for domain in domains:
            null = max(s for (d, _), s in share.items() if d != domain)
            held = max((s, fam) for (d, fam), s in share.items() if d == domain)
            folds.append(f"{domain} {held[0]:.3f} ({held[1]}) vs {null:.3f}")
        print(
            f"  x={level:.2f}: heaviest {heaviest[1]} ({heaviest[0]}) {share[heaviest]:.3f}; "
            f"IR {IRS[0]:g} copies >= {ir_low:.3f}; held out: " + "; ".join(folds)
        )


if __name__ == "__main__":
    main()
