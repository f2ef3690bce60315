"""Honest base rates of the proof-level checks over every trace in ../shared/data/traces.

Runs `auditor.research.honest_rates.measure` (every token, adjacent pair and block of every trace),
writes var/honest-rates.json and prints a summary. Last line: one JSON object of the headline counts.

    .venv/bin/python bench/honest_rates.py [--traces DIR] [--out FILE] [--block-size B]
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without `pip install -e .`
from auditor.protocol.fingerprint import Embedder
from auditor.protocol.tokenize import DEFAULT_TOKENIZER_ID, get_tokenizer
from auditor.research.honest_rates import RECOMMENDED_RULE, SPLIT_VARIANTS, measure
from auditor.research.traces import load_traces

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT.parent / "shared" / "data" / "traces"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=Path, default=TRACES)
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "honest-rates.json")
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--repeat-share", type=float, default=0.5, help="blocks embedded for check 3")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the embedder")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    traces = load_traces([args.traces])
    tokenizer = get_tokenizer(DEFAULT_TOKENIZER_ID)
    embedder = Embedder(device=os.environ.get("COIN_EMBED_DEVICE", "cpu"), batch_size=256)
    result = measure(traces, tokenizer, embedder, block_size=args.block_size, repeat_share=args.repeat_share)
    elapsed = time.perf_counter() - start
    result["runtime_s"] = round(elapsed, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    overall, rules, repeat = result["overall"], result["split_rules"], result["repeated_token"]
    print(
        f"{overall['traces']} traces, {overall['tokens']:,} tokens, {overall['pairs']:,} adjacent pairs, "
        f"{overall['blocks']:,} blocks of {args.block_size}; {elapsed:.0f} s"
    )
    print(f"1. tokens outside the vocabulary: {overall['non_tokens']}")
    print(
        f"2. merging pairs: {overall['merges']} ({result['merges']['distinct_pairs']} distinct) in "
        f"{overall['traces_with_merge']} traces, at most {overall['max_merges_per_trace']} in one trace"
    )
    for cause, n in result["merges"]["causes"].items():
        print(f"   {n:6d}  {cause}")
    print("   split rules (honest fires / stress fires / attack catch):")
    for variant in SPLIT_VARIANTS:
        attack = rules["attack"][variant]
        mark = "  <- recommended" if variant == RECOMMENDED_RULE else ""
        print(
            f"   {variant:17s} {rules['honest_fires'][variant]:5d} / {rules['stress']['fires'][variant]:5d} / "
            f"{attack['fires']}/{rules['attack']['pairs']} = {attack['share']:.4f}{mark}"
        )
    print(
        f"3. one-token blocks: {overall['uniform_blocks']} (at {args.block_size}), "
        f"{overall['uniform_blocks_double']} (at {2 * args.block_size}); "
        f"{repeat['candidates']} (block, token) with a token share >= {repeat['min_share']} "
        f"({repeat['embedded']} embedded, {repeat['blocks']} blocks), max cosine {repeat['max_cosine']:.4f}"
    )
    for row in repeat["top"][:5]:
        print(
            f"   {row['cosine']:.4f} {row['trace']} block {row['block']} ({row['length']} tokens) "
            f"{row['token']} x{row['share']}: "
            f"{row['text']!r}"
        )
    runs = repeat["longest_runs"][:3]
    print(
        f"   longest run of one token: {overall['longest_token_run']} "
        f"(a run of {2 * args.block_size - 1} always covers a block): "
        + ", ".join(f"{r['run']} x {r['token']} in {r['trace']}" for r in runs)
    )
    print(
        f"4. identical block pairs: {overall['duplicate_block_pairs']} in "
        f"{overall['traces_with_duplicate_blocks']} traces ({overall['share_with_duplicate_blocks']:.1%}), "
        f"at most {overall['max_duplicate_pairs_per_trace']} in one trace"
    )
    print(f"wrote {args.out}")
    headline = {
        "traces": overall["traces"],
        "tokens": overall["tokens"],
        "pairs": overall["pairs"],
        "non_tokens": overall["non_tokens"],
        "merges": overall["merges"],
        "traces_with_merge": overall["traces_with_merge"],
        "max_merges_per_trace": overall["max_merges_per_trace"],
        "split_rule": RECOMMENDED_RULE,
        "split_honest_fires": rules["honest_fires"][RECOMMENDED_RULE],
        "split_stress_fires": rules["stress"]["fires"][RECOMMENDED_RULE],
        "split_attack_catch": round(rules["attack"][RECOMMENDED_RULE]["share"], 4),
        "uniform_blocks": overall["uniform_blocks"],
        "uniform_blocks_double": overall["uniform_blocks_double"],
        "repeat_candidates": repeat["candidates"],
        "repeat_embedded": repeat["embedded"],
        "repeat_max_cosine": repeat["max_cosine"] and round(repeat["max_cosine"], 4),
        "longest_token_run": overall["longest_token_run"],
        "duplicate_block_pairs": overall["duplicate_block_pairs"],
        "share_with_duplicate_blocks": round(overall["share_with_duplicate_blocks"], 4),
        "runtime_s": result["runtime_s"],
    }
    print(json.dumps(headline))


if __name__ == "__main__":
    main()
