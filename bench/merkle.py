"""Merkle benchmark: tree build (leaves/s) and proof generate + verify (µs per proof), ours vs pymerkle.

Leaves are DESIGN §3-sized (800 bytes: u64 index ‖ 16-byte salt ‖ 768-byte fingerprint), hashed as
leaves. "Build" starts from the leaf data: leaf hashing plus the tree, for both libraries. The comparison
with pymerkle (InmemoryTree, RFC 9162 mode) uses SHA-256 on both sides; ours with BLAKE3 (the protocol's
hash) is shown too, with the bulk BLAKE3 rate of the same bytes in one call as the ceiling.

The machine may be shared, so every figure is the best of several rounds that alternate between
the libraries (one round above 2^16 leaves), with the garbage collector off while timing, as timeit does.

Usage: python bench/merkle.py [--max-exp 20] [--proofs 2000]. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from blake3 import blake3
from pymerkle import InmemoryTree
from pymerkle import verify_inclusion as pm_verify_inclusion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without `pip install -e .`
from auditor.protocol.merkle import BLAKE3, SHA256, MerkleTree, verify_inclusion

LEAF_BYTES = 800
PYMERKLE_BUDGET_S = 60.0  # skip pymerkle at a size whose predicted build time exceeds this
ROUNDS = 5  # proof timing: rounds alternating between the libraries


def make_leaves(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    w, chunk = LEAF_BYTES - 8, 1 << 16  # randbytes is limited to 2^31 bits a call
    leaves: list[bytes] = []
    for first in range(0, n, chunk):
        count = min(chunk, n - first)
        blob = rng.randbytes(count * w)
        leaves += [(first + i).to_bytes(8, "little") + blob[i * w : (i + 1) * w] for i in range(count)]
    return leaves


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        out = fn()
        return time.perf_counter() - t0, out
    finally:
        gc.enable()


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t, out = timed(fn)
        best = min(best, t)
    return best, out


def bulk_blake3(data: list[bytes], repeat: int) -> tuple[float, float]:
    """Seconds to BLAKE3 all the leaf bytes in one call: one thread, and all cores."""
    bulk = b"".join(data)
    t_one, _ = best_of(repeat, lambda: blake3(bulk).digest())
    t_all, _ = best_of(repeat, lambda: blake3(bulk, max_threads=blake3.AUTO).digest())
    return t_one, t_all


def ours_round(tree: MerkleTree, indices: list[int]) -> tuple[float, float]:
    """Seconds to open (leaf hash + audit path) and to verify the given indices."""
    root, size, hasher = tree.root, tree.size, tree.hasher
    t_gen, opened = timed(lambda: [(i, tree.leaf_hash(i), tree.inclusion_proof(i)) for i in indices])

    def verify() -> None:
        for i, leaf, proof in opened:
            verify_inclusion(leaf, i, size, proof, root, hasher)

    t_ver, _ = timed(verify)
    return t_gen, t_ver


def pymerkle_round(tree: InmemoryTree, indices: list[int]) -> tuple[float, float]:
    root = tree.get_root()
    t_gen, opened = timed(lambda: [(tree.get_leaf(i + 1), tree.prove_inclusion(i + 1)) for i in indices])

    def verify() -> None:
        for leaf, proof in opened:
            pm_verify_inclusion(leaf, root, proof)

    t_ver, _ = timed(verify)
    return t_gen, t_ver


def bench_size(exp: int, n_proofs: int, with_pymerkle: bool) -> dict[str, Any]:
    n = 1 << exp
    data = make_leaves(n, seed=exp)
    repeat = 3 if n <= 1 << 16 else 1
    row: dict[str, Any] = {"leaves": n}

    t_bulk, t_bulk_mt = bulk_blake3(data, repeat)
    row["bulk_blake3_leaves_per_s"] = n / t_bulk
    row["bulk_blake3_mb_per_s"] = n * LEAF_BYTES / t_bulk / 1e6
    row["bulk_blake3_all_cores_leaves_per_s"] = n / t_bulk_mt

    # Builds, in `repeat` rounds alternating between ours and pymerkle; the best time of each.
    builds: dict[str, Callable[[], Any]] = {
        "blake3": lambda: MerkleTree(BLAKE3.hash_leaves(data), BLAKE3),
        "sha256": lambda: MerkleTree(SHA256.hash_leaves(data), SHA256),
    }
    if with_pymerkle:
        builds["pymerkle"] = lambda: InmemoryTree.init_from_entries(data, algorithm="sha256")
    best_build = dict.fromkeys(builds, float("inf"))
    trees: dict[str, Any] = {}
    for _ in range(repeat):
        for name, build in builds.items():
            t, trees[name] = timed(build)
            best_build[name] = min(best_build[name], t)
    for label, hasher in (("blake3", BLAKE3), ("sha256", SHA256)):
        lh = hasher.hash_leaves(data)
        t_tree, _ = best_of(repeat, lambda: MerkleTree(lh, hasher))  # noqa: B023
        row[f"ours_{label}_build_leaves_per_s"] = n / best_build[label]
        row[f"ours_{label}_tree_only_leaves_per_s"] = n / t_tree
    if with_pymerkle:
        assert trees["pymerkle"].security, "pymerkle must run with RFC 9162's 0x00/0x01 prefixes"
        assert trees["pymerkle"].get_root() == trees["sha256"].root, "pymerkle and ours disagree on the root"
        row["pymerkle_sha256_build_s"] = best_build["pymerkle"]
        row["pymerkle_sha256_build_leaves_per_s"] = n / best_build["pymerkle"]

    # Proofs: the same random indices for everyone, in ROUNDS alternating rounds; best round per phase.
    indices = random.Random(exp).choices(range(n), k=n_proofs)
    chunk = max(1, n_proofs // ROUNDS)
    best: dict[str, list[float]] = {name: [float("inf"), float("inf")] for name in trees}
    for r in range(ROUNDS):
        part = indices[r * chunk : (r + 1) * chunk]
        for name, tree in trees.items():
            gen, ver = pymerkle_round(tree, part) if name == "pymerkle" else ours_round(tree, part)
            best[name] = [
                min(best[name][0], gen / len(part) * 1e6),
                min(best[name][1], ver / len(part) * 1e6),
            ]
    for name, (gen, ver) in best.items():
        key = "pymerkle_sha256" if name == "pymerkle" else f"ours_{name}"
        row[f"{key}_proof_gen_us"] = gen
        row[f"{key}_proof_verify_us"] = ver
        row[f"{key}_proof_us"] = gen + ver
    if with_pymerkle:
        ours_rate, pm_rate = row["ours_sha256_build_leaves_per_s"], row["pymerkle_sha256_build_leaves_per_s"]
        row["build_speedup_sha256"] = ours_rate / pm_rate
        row["proof_speedup_sha256"] = row["pymerkle_sha256_proof_us"] / row["ours_sha256_proof_us"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--min-exp", type=int, default=10)
    ap.add_argument("--max-exp", type=int, default=20)
    ap.add_argument("--step", type=int, default=2, help="exponent step (2: sizes x4)")
    ap.add_argument("--proofs", type=int, default=2000, help="proofs timed per size")
    args = ap.parse_args()

    print(
        f"Merkle benchmark: {LEAF_BYTES}-byte leaves; build = leaf hashing + tree; proof = generate + verify"
    )
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    pm_last: tuple[int, float] | None = None  # (leaves, seconds) of pymerkle's last build
    for exp in range(args.min_exp, args.max_exp + 1, args.step):
        with_pm = True
        if pm_last is not None:  # n log n: predict from the last size
            predicted = pm_last[1] * ((1 << exp) / pm_last[0]) * (exp / (exp - args.step))
            if predicted > PYMERKLE_BUDGET_S:
                with_pm = False
                notes.append(f"pymerkle skipped at 2^{exp}: predicted build {predicted:.0f} s > 60 s")
        row = bench_size(exp, args.proofs, with_pm)
        if with_pm:
            pm_last = (row["leaves"], row["pymerkle_sha256_build_s"])
        rows.append(row)
        print_row(row, header=len(rows) == 1)
        sys.stdout.flush()

    print()
    print("build: leaves/s from leaf data (hashing each 800-byte leaf, then the tree); '(tree b3)': the tree")
    print("alone, from the leaf hashes. 'bulk B3 1 call': BLAKE3 of all the leaf bytes in one call on one")
    print("thread, the ceiling for hashing these bytes (it runs SIMD across 1 KiB chunks, which hashing")
    print("leaves one by one cannot). proof: mean us to open (leaf hash + audit path) and verify one random")
    print("index. speedup: ours / pymerkle (InmemoryTree), SHA-256 on both sides.")
    for note in notes:
        print("note:", note)
    at = next((r for r in rows if r["leaves"] == 1 << 16 and "build_speedup_sha256" in r), None)
    summary = {
        "build_speedup_vs_pymerkle": None if at is None else round(at["build_speedup_sha256"], 2),
        "proof_speedup_vs_pymerkle": None if at is None else round(at["proof_speedup_sha256"], 2),
        "speedups_at_leaves": 1 << 16,
        "leaf_bytes": LEAF_BYTES,
        "notes": notes,
        "rows": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
    }
    print(json.dumps(summary, separators=(",", ":")))


def print_row(row: dict[str, Any], header: bool) -> None:
    def k(v: float | None) -> str:
        return "-" if v is None else f"{v / 1e3:,.0f}k"

    def us(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    def x(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}x"

    if header:
        print()
        print(
            f"{'leaves':>8} | {'build leaves/s':^43} | {'bulk B3':>7} | "
            f"{'proof gen+verify (us)':^30} | {'speedup sha256':^14}"
        )
        print(
            f"{'':>8} | {'ours-b3':>10} {'ours-sha':>10} {'pymerkle':>10} {'(tree b3)':>10} | "
            f"{'1 call':>7} | {'ours-b3':>9} {'ours-sha':>9} {'pymerkle':>10} | {'build':>6} {'proof':>7}"
        )
        print("-" * 118)
    print(
        f"{'2^' + str(row['leaves'].bit_length() - 1):>8} | "
        f"{k(row['ours_blake3_build_leaves_per_s']):>10} {k(row['ours_sha256_build_leaves_per_s']):>10} "
        f"{k(row.get('pymerkle_sha256_build_leaves_per_s')):>10} "
        f"{k(row['ours_blake3_tree_only_leaves_per_s']):>10} | {k(row['bulk_blake3_leaves_per_s']):>7} | "
        f"{us(row['ours_blake3_proof_us']):>9} {us(row['ours_sha256_proof_us']):>9} "
        f"{us(row.get('pymerkle_sha256_proof_us')):>10} | "
        f"{x(row.get('build_speedup_sha256')):>6} {x(row.get('proof_speedup_sha256')):>7}"
    )


if __name__ == "__main__":
    main()
