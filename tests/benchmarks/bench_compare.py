"""factory compare: memory as the inputs grow, time of the measures, and MAUVE against its
reference package.

    python tests/benchmarks/bench_compare.py [--rows 2000 20000] [--sample 1000] [--sizes 1000 5000]

1. Reading: each side is a stream that keeps counts and a seeded sample. Python's
   traced peak while reading inputs of each size (same --sample) is printed with the
   ratio of the largest to the smallest (goal: about 1 while the rows grow 10x).
2. Measuring: seconds for the k-NN measures, MAUVE, Vendi and the topic clusters on
   random 384-d unit vectors of each sample size (two sides of that size), on one thread
   as `factory compare` runs them.
3. MAUVE: ours and the reference package's (mauve-text, when installed; it is GPL-3.0
   and not a dependency) on the same features, for two pairs of sets. The quantisation
   differs (scikit-learn k-means here, faiss there), so the values agree only closely.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from factory.compare import metrics, topics
from factory.compare.sides import read_side
from factory.inputs.records import iter_records
from tests.helpers.topic_qa import EVEN, qa_rows


def reading(rows: list[int], sample: int) -> None:
    peaks = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in rows:
            path = Path(tmp) / f"{n}.jsonl"
            with path.open("w") as f:
                for row in qa_rows(EVEN, n, seed=n):
                    f.write(json.dumps(row) + "\n")
            tracemalloc.start()
            t = time.perf_counter()
            side = read_side(path, iter_records(path), lambda r: "\n".join(m["content"] for m in r.messages), sample, 0)
            dt = time.perf_counter() - t
            peaks[n] = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            print(f"read {side.rows:>9,} rows: {dt:6.2f} s, traced peak {peaks[n]:6.2f} MiB (sample {sample:,})")
    print(f"peak ratio, {max(rows):,} rows vs {min(rows):,}: {peaks[max(rows)] / peaks[min(rows)]:.2f}x "
          f"(rows {max(rows) / min(rows):.0f}x)")


def unit(rng, n: int, shift: float = 0.0) -> np.ndarray:
    x = rng.standard_normal((n, 384)).astype(np.float32) + shift
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def measuring(sizes: list[int]) -> None:
    rng = np.random.default_rng(0)
    for n in [100, *sizes]:  # the first, small, imports scikit-learn and SciPy outside the timings
        timings = timed(unit(rng, n, 0.05), unit(rng, n), n)
        if n != 100:
            print(f"{n:>6,} a side: " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items())
                  + f"; all {sum(timings.values()):.1f} s")


def timed(syn: np.ndarray, ref: np.ndarray, n: int) -> dict[str, float]:
    texts = ["x"] * n
    steps = {"prdc": lambda: metrics.prdc(ref, syn, 5), "mauve": lambda: metrics.mauve(syn, ref, 0),
             "vendi": lambda: (metrics.vendi(syn), metrics.vendi(ref)),
             "topics": lambda: topics.topic_clusters(syn, ref, texts, texts, topics.default_topics(n), 0)}
    timings = {}
    with threadpool_limits(limits=1):
        for name, step in steps.items():
            t = time.perf_counter()
            step()
            timings[name] = time.perf_counter() - t
    return timings


def against_reference() -> None:
    try:
        import mauve as reference
    except ImportError:
        print("mauve-text not installed: `pip install mauve-text` to compare MAUVE with its reference package")
        return
    rng = np.random.default_rng(1)
    base = unit(rng, 1000)
    for label, other in (("close (shift 0.02)", unit(rng, 1000, 0.02)), ("apart (shift 0.1)", unit(rng, 1000, 0.1))):
        with threadpool_limits(limits=1):
            ours = metrics.mauve(other, base, 25)["mauve"]
        theirs = reference.compute_mauve(p_features=other, q_features=base, seed=25, verbose=False).mauve
        print(f"MAUVE {label}: ours {ours:.4f}, mauve-text {theirs:.4f}, ratio {ours / theirs:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--sample", type=int, default=1000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    args = parser.parse_args()
    reading(args.rows, args.sample)
    measuring(args.sizes)
    against_reference()


if __name__ == "__main__":
    main()
