"""Clustered diversity selection against the exact one, measured in one run.

    python tests/benchmarks/bench_diversity_scale.py [--n 200000] [--method threshold] [--threshold 0.9]

Synthetic 384-d unit vectors shaped like sentence embeddings of a generated dataset:
records around a few thousand topics, and a fifth of them near-paraphrases of another
record (the near-duplicates a threshold walk exists to drop). Scores are random (the
judge's). For the exact selection and the clustered one (in this process) it prints
wall time, the peak memory each added, and how well the clustered kept set agrees with
the exact one (Jaccard, precision, recall of kept ids), next to the agreement the
stage itself estimated on its sample.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench_diversity import _status  # beside this script
from filters.diversity import clustered as dc
from filters.diversity.select import Products, kcenter_select, threshold_select


def vectors(n: int, dim: int, topics: int, paraphrases: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((topics, dim), dtype=np.float32)
    x = centres[rng.integers(0, topics, n)] + rng.standard_normal((n, dim), dtype=np.float32)
    copies = rng.choice(n, size=int(n * paraphrases), replace=False)
    x[copies] = x[rng.integers(0, n, len(copies))] + 0.25 * rng.standard_normal((len(copies), dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--topics", type=int, default=2000)
    parser.add_argument("--method", choices=["threshold", "kcenter"], default="threshold")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--budget", type=float, default=0.1, help="a fraction of the records")
    parser.add_argument("--clusters", type=int, default=None)
    parser.add_argument("--probes", type=int, default=2)
    args = parser.parse_args()
    x = vectors(args.n, args.dim, args.topics, 0.2)
    scores = np.random.default_rng(1).random(args.n)
    order = np.argsort(-scores, kind="stable")
    budget = max(1, round(args.budget * args.n))
    k = dc.cluster_count(args.n, budget, args.method, args.clusters)
    print(f"{args.n:,} x {args.dim} vectors ({x.nbytes / 2**20:.0f} MiB), {args.method}"
          f"{f' {args.threshold:g}' if args.method == 'threshold' else ''}, budget {budget:,}; "
          f"{k} clusters, {args.probes} probes")
    kcenter_select(x[:2000], 10)  # load torch and warm its kernels outside the timings

    def measure(fn):
        before = _status("VmRSS:")
        _reset_peak()
        t = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - t, max(0.0, _status("VmHWM:") - before)

    if args.method == "kcenter":
        exact, t_exact, m_exact = measure(lambda: kcenter_select(x, budget, first=int(order[0])))
    else:
        exact, t_exact, m_exact = measure(lambda: threshold_select(x, order, args.threshold, budget))

    def clustered():
        hoods = dc.partition(x, k, args.probes, 0, dc.run_here)
        if args.method == "kcenter":
            return dc.kcenter_clustered(x, budget, scores, hoods, dc.run_here, 1000, 0)
        return dc.threshold_clustered(x, order, args.threshold, budget, hoods, dc.run_here, 1000, 0)

    ours, t_ours, m_ours = measure(clustered)
    a, b = set(exact.kept.tolist()), set(ours.selection.kept.tolist())
    both = len(a & b)
    matrix = x.nbytes / 2**20
    print(f"exact      {t_exact:8.1f} s  peak +{m_exact:7.0f} MiB ({m_exact / matrix:.1f}x the matrix)  kept {len(a):,}")
    print(f"clustered  {t_ours:8.1f} s  peak +{m_ours:7.0f} MiB ({m_ours / matrix:.1f}x the matrix)  kept {len(b):,}")
    print(f"speed-up {t_exact / t_ours:.1f}x; kept sets: Jaccard {both / len(a | b):.4f}, "
          f"precision {both / len(b):.4f}, recall {both / len(a):.4f}")
    info = {key: value for key, value in ours.info.items() if key != "agreement"}
    print(f"clustered run: {info}; its own agreement estimate: {ours.info['agreement']}")
    if args.method == "kcenter":
        # Which k-center picks is chaotic (any change of start changes most picks); what it is
        # for is coverage: how close the farthest record is to a pick. Both, measured alike.
        other = kcenter_select(x, budget, first=int(order[1]))
        c = set(other.kept.tolist())
        print(f"exact from another start vs exact: Jaccard {len(a & c) / len(a | c):.4f}")
        for label, kept in (("exact", exact.kept), ("clustered", ours.selection.kept), ("exact, other start", other.kept)):
            near, _ = Products(x).best(kept)
            print(f"coverage, {label:<19} every record within cosine {near.min():.4f} of a pick "
                  f"(mean nearest pick {near.mean():.4f})")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # Linux: "5" resets the peak RSS
        f.write("5")


if __name__ == "__main__":
    main()
