"""Copied spans (protocol coin/2) over every trace in ../shared/data/traces, honest and copy-attacked.

Runs `auditor.research.copy_rates.measure` (every trace's repetition profile, made by the SDK, and its
copy figures: no embedding, no sampling; the rule's tail fit on all traces and leaving each domain out)
and `attack_sweep` (the duplication family at each IR over a sample of traces), measures a domain's own
copy rule on a domain the shipped one was not fitted to (`rewriting_domain`), times the copied_spans
check on the longest profiles (it runs once per audit round), writes var/copy-rates.json and prints a
summary. Last line: one JSON object of the headline figures.

    .venv/bin/python bench/copy_rates.py [--traces DIR] [--out FILE] [--per-cell N] [--ir 0.1,0.25,...]
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without `pip install -e .`
from auditor.protocol.copies import COPY_RULE, HONEST_RATE, TAIL_SHARE, copy_figures
from auditor.protocol.encoding import to_b64
from auditor.protocol.repetition import Repetition, RepetitionOpening, profile_digest
from auditor.protocol.tokenize import DEFAULT_TOKENIZER_ID, get_tokenizer
from auditor.research.attacks import AttackContext
from auditor.research.copy_rates import attack_sweep, measure, rewriting_domain
from auditor.research.traces import load_traces

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT.parent / "shared" / "data" / "traces"


def check_timing(token_lists: list[list[bytes]], longest: int = 20) -> dict[str, float]:
    """Milliseconds a round spends on the profile — decode it from the response's base64, check its
    digest, find the copies — on the longest traces: best of three per profile, then the slowest
    profile and the mean per 1,000 tokens."""
    chosen = sorted(token_lists, key=len)[-longest:]
    worst, per_kilo = 0.0, []
    for tokens in chosen:
        wire = {"profile": to_b64(Repetition(tokens, b"\x07" * 32).profile), "keys": []}

        def round_work(wire: object = wire) -> None:
            profile = RepetitionOpening.from_json(wire).profile
            profile_digest(profile)
            copy_figures(profile)

        best = min(_timed(round_work) for _ in range(3))
        worst = max(worst, best)
        per_kilo.append(best / len(tokens) * 1000)
    return {
        "profiles": len(chosen),
        "max_tokens": max(len(t) for t in chosen),
        "slowest_ms": worst * 1000,
        "ms_per_1k_tokens": sum(per_kilo) / len(per_kilo) * 1000,
    }


def _timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=Path, default=TRACES)
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "copy-rates.json")
    parser.add_argument("--per-cell", type=int, default=200, help="attacked traces per attack x IR")
    parser.add_argument("--ir", default="0.1,0.25,0.5,1,3")
    args = parser.parse_args()

    start = time.perf_counter()
    traces = load_traces([args.traces])
    tokenizer = get_tokenizer(DEFAULT_TOKENIZER_ID)
    ctx = AttackContext(tokenizer, traces)
    honest = measure(traces, ctx.tokens)
    measured = time.perf_counter() - start
    sweep = attack_sweep(traces, ctx, [float(x) for x in args.ir.split(",")], per_cell=args.per_cell)
    rewriting = rewriting_domain(traces, tokenizer.tokenize)
    timing = check_timing([ctx.tokens(t) for t in traces])
    result = {
        "honest": honest,
        "attacks": sweep,
        "rewriting_domain": rewriting,
        "check_timing": timing,
        "runtime_s": round(time.perf_counter() - start, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    overall, margin = honest["overall"], honest["margin"]
    print(
        f"{overall['traces']} honest traces, {overall['tokens']:,} tokens ({measured:.0f} s); "
        f"{overall['with_copy']} hold a copy of >= {honest['min_copy_tokens']} tokens; "
        f"longest copy {overall['longest_copy']} tokens"
    )
    for name in ("copied_fraction", "repeated_fraction"):
        quantiles = ", ".join(f"{q} {v:.4f}" for q, v in overall[name].items())
        print(f"  {name}: {quantiles}")
    print(
        f"rule: fail above copied {COPY_RULE.copied:.0%} or repeated {COPY_RULE.repeated:.0%} "
        f"(>= {COPY_RULE.min_tokens} tokens): {overall['fails']} honest fails; margin over the largest honest "
        f"copied x{margin['copied']:.3f}, repeated x{margin['repeated']:.3f}"
    )
    fitted = honest["fitted_rule"]
    print(
        f"  the tail fit (top {TAIL_SHARE:.0%}, one honest trace in {1 / HONEST_RATE:,.0f}) on all traces: "
        f"copied {fitted['copied']:.4f}, repeated {fitted['repeated']:.4f} (the rule rounds them up)"
    )
    print("  leave one domain out (the fit on the other domains; held-out fails, largest masses, margin):")
    for fold in honest["leave_one_domain_out"]:
        print(
            f"    {fold['domain']:18s} {fold['traces']:5d} traces  copied {fold['rule']['copied']:.4f} "
            f"repeated {fold['rule']['repeated']:.4f}  fails {fold['fails']}  largest "
            f"{fold['largest_copied']:.4f} / {fold['largest_repeated']:.4f}  margin x{fold['margin']:.2f}"
        )
    print("  by domain (max copied / max repeated):")
    for domain, row in honest["by_domain"].items():
        print(
            f"    {domain:18s} {row['traces']:5d} traces  {row['copied_fraction']['q1']:.4f} / "
            f"{row['repeated_fraction']['q1']:.4f}  fails {row['fails']}"
        )
    for key in ("top_copied", "top_repeated"):
        print(f"  {key}:")
        for row in honest[key][:5]:
            print(f"    {row['fraction']:.4f} {row['id']} ({row['domain']}, {row['figures']['size']} tokens)")
    print("copy family, fail rate (proof) per IR:")
    irs = sorted({row["ir"] for row in sweep})
    print(f"  {'attack':24s} " + " ".join(f"{ir:>6g}" for ir in irs))
    for attack in dict.fromkeys(row["attack"] for row in sweep):
        cells = {row["ir"]: row["fail"]["rate"] for row in sweep if row["attack"] == attack}
        print(f"  {attack:24s} " + " ".join(f"{cells[ir]:6.3f}" for ir in irs))
    print("  the worst domain per IR (fail rate, n):")
    for ir in irs:
        worst = min(
            (
                (row["attack"], domain, cell)
                for row in sweep
                if row["ir"] == ir
                for domain, cell in row["fail_by_domain"].items()
            ),
            key=lambda found: found[2]["rate"],
        )
        print(f"    IR {ir:g}: {worst[2]['rate']:.3f} (n = {worst[2]['n']}) {worst[0]} on {worst[1]}")
    print("a rewriting domain (each trace writes its last half again), half as references, half held out:")
    for split in rewriting:
        rule, largest = split["rule"], split["largest_held_out"]
        print(
            f"  rule copied {rule['copied']:.0%} repeated {rule['repeated']:.0%} from {split['references']} "
            f"references ({split['reference_fails']} fail); held out {split['held_out']}: {split['held_out_fails']} "
            f"fail (the shipped rule: {split['held_out_fails_shipped']}); largest held out "
            f"{largest['copied']:.4f} / {largest['repeated']:.4f}"
        )
    print(
        f"profile in a round (decode, digest, copies): slowest {timing['slowest_ms']:.1f} ms on {timing['max_tokens']:,} tokens; "
        f"{timing['ms_per_1k_tokens']:.2f} ms per 1,000 tokens"
    )
    print(f"wrote {args.out}")
    headline = {
        "traces": overall["traces"],
        "honest_fails": overall["fails"],
        "held_out_fails_max": max(fold["fails"] for fold in honest["leave_one_domain_out"]),
        "held_out_margin_min": round(min(fold["margin"] for fold in honest["leave_one_domain_out"]), 3),
        "max_copied_fraction": round(overall["copied_fraction"]["q1"], 4),
        "max_repeated_fraction": round(overall["repeated_fraction"]["q1"], 4),
        "min_fail_rate_by_ir": {
            str(ir): round(min(r["fail"]["rate"] for r in sweep if r["ir"] == ir), 3) for ir in irs
        },
        "rewriting_domain_held_out_fails": [split["held_out_fails"] for split in rewriting],
        "check_slowest_ms": round(timing["slowest_ms"], 2),
        "runtime_s": result["runtime_s"],
    }
    print(json.dumps(headline))


if __name__ == "__main__":
    main()
