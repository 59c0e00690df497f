"""Diversity selection speed: pick 10,000 of 100,000 random 384-d unit vectors.

    python tests/benchmarks/bench_diversity.py [--n 100000] [--k 10000]

Prints seconds for each method and the peak memory it added, as a multiple of the
embedding matrix (goal: 10 s or less each, memory within a few times the matrix).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from filters.diversity.select import kcenter_select, threshold_select


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--k", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    matrix_mb = x.nbytes / 2**20
    scores = rng.random(args.n)
    order = np.argsort(-scores, kind="stable")
    print(f"{args.n:,} x {args.dim} float32 vectors ({matrix_mb:.0f} MiB); budget {args.k:,}")

    kcenter_select(x[:2000], 10)  # load torch and warm its kernels outside the timings

    def run(label, fn):
        before = _rss_mb()
        _reset_peak()
        t = time.perf_counter()
        sel = fn()
        dt = time.perf_counter() - t
        grew = max(0.0, _peak_mb() - before)
        dropped = np.ones(args.n, dtype=bool)
        dropped[sel.kept] = False
        print(f"{label:<38} {dt:6.2f} s  kept {len(sel.kept):,}  "
              f"drops' similarity to nearest kept: max {sel.similarity[dropped].max():.3f}  "
              f"peak memory +{grew / matrix_mb:.1f}x the matrix")
        return dt

    run("threshold 0.9 (score order)", lambda: threshold_select(x, order, 0.9, args.k))
    # A threshold that bites on random vectors: most candidates fall within it of a pick.
    run("threshold 0.2 (score order)", lambda: threshold_select(x, order, 0.2, args.k))
    ours = run("k-center (exact decisions, same picks anywhere)", lambda: kcenter_select(x, args.k))
    # The least any k-center can do: every row against every pick once, in float32.
    t = time.perf_counter()
    (x @ x[: args.k].T).max(axis=1)
    floor = time.perf_counter() - t
    print(f"k-center vs one float32 product of all rows with {args.k:,} picks (the floor): {ours / floor:.1f}x")


def _status(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return 0.0


def _rss_mb() -> float:
    return _status("VmRSS:")


def _peak_mb() -> float:
    return _status("VmHWM:")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # Linux: "5" resets the peak RSS
        f.write("5")


if __name__ == "__main__":
    main()
