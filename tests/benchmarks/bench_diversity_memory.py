"""The diversity stage's own memory as its input grows, measured in one run.

    python tests/benchmarks/bench_diversity_memory.py [--records 300000] [--selection clustered]

Records are generated (a text each) and their embeddings are synthetic vectors put in
the stage's embedding cache beforehand (near-duplicates included, as in
bench_diversity_scale.py), so no model runs: what is measured is the stage itself,
fed a stream of records as a run feeds it. Each way runs in a fresh process, which
reports its peak resident memory and wall time:

- `stage`: the Diversity stage as it is: records and embeddings spilled to disk, the
  matrix memory-mapped, the records read back to be kept or dropped;
- `held`: the same selection over records held in a list and the matrix in memory
  (what the stage did before, and what a stage that holds its input costs).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
MODEL = "synthetic-benchmark-model"  # only the cache knows it: nothing is loaded


def record(i: int):
    from factory.core.record import Record

    return Record(f"r{i:08d}", [{"role": "user", "content": f"Question {i}: what about topic {i % 997}?"},
                                {"role": "assistant", "content": f"Answer {i}, " + "with some words " * 20}])


def fill_cache(out: Path, n: int, dim: int) -> None:
    from bench_diversity_scale import vectors
    from factory.core.constants import EMBEDDING_CACHE_FILE
    from filters.diversity.diversity import Diversity
    from filters.diversity.embeddings import EmbeddingCache, text_key

    text = Diversity().config.text
    x = vectors(n, dim, max(10, n // 150), 0.2)
    cache = EmbeddingCache(out / EMBEDDING_CACHE_FILE)
    for start in range(0, n, 50_000):
        cache.put(MODEL, {text_key(text(record(i))): x[i] for i in range(start, min(n, start + 50_000))})
    cache.close()


def run(way: str, out: Path, n: int, selection: str) -> dict:
    import factory
    from filters.base import StageContext
    from filters.diversity.diversity import Diversity

    pipeline = factory.Pipeline.from_dict({"name": "bench", "teacher": {"model": "none", "base_url": "http://x"},
                                           "seeds": {"topic": ["x"], "domain": ["x"], "persona": ["x"],
                                                     "difficulty": ["x"]},
                                           "generate": {"task": "qa", "count": 1}}).file
    stage = Diversity(model=MODEL, threshold=0.9, budget=0.1, selection=selection)
    stage.bind(lambda rejection: None, StageContext(pipeline, out, show_progress=False))
    stream = (record(i) for i in range(n))
    anon = _AnonPeak()
    began = time.perf_counter()
    if way == "held":
        stream = iter(list(stream))  # every record in memory, as a stage holding its input has them
        held = np.ones((n, 384), dtype=np.float32)  # and a matrix of the vectors' size, in memory
        held[:] = 0.0
    kept = sum(1 for _ in stage(stream))
    return {"way": way, "records": n, "kept": kept, "seconds": round(time.perf_counter() - began, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "peak_anon_mib": anon.stop(), "selection": stage.funnel().get("selection")}


class _AnonPeak:
    """The peak of the process's anonymous (heap) resident memory, sampled: unlike peak RSS
    it leaves out file pages mapped in (the memory-mapped matrix), which the kernel can
    drop and read again."""

    def __init__(self, every: float = 0.02):
        import threading

        self.peak, self.done = 0, threading.Event()
        self.thread = threading.Thread(target=self._watch, args=(every,), daemon=True)
        self.thread.start()

    def _watch(self, every: float) -> None:
        from bench_diversity import _status

        while not self.done.wait(every):
            self.peak = max(self.peak, _status("RssAnon:"))

    def stop(self) -> int:
        self.done.set()
        self.thread.join()
        return round(self.peak)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--selection", choices=["clustered", "exact"], default="clustered")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run(args.child, Path(args.out), args.records, args.selection)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        began = time.perf_counter()
        fill_cache(out, args.records, 384)
        print(f"{args.records:,} records, synthetic embeddings cached in {time.perf_counter() - began:.0f} s")
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests' / 'benchmarks'}"}
        results = {}
        for way in ("stage", "held"):
            done = subprocess.run([sys.executable, __file__, "--child", way, "--out", tmp, "--records",
                                   str(args.records), "--selection", args.selection],
                                  capture_output=True, text=True, env=env, cwd=ROOT)
            if done.returncode:
                raise SystemExit(done.stderr[-3000:])
            results[way] = json.loads(done.stdout.strip().splitlines()[-1])
            print(results[way])
        stage, held = results["stage"], results["held"]
        print(f"peak RSS: the stage {stage['peak_rss_mib']:,} MiB against {held['peak_rss_mib']:,} MiB holding its "
              f"input; of it anonymous (heap, not the mapped matrix): {stage['peak_anon_mib']:,} against "
              f"{held['peak_anon_mib']:,} MiB ({held['peak_anon_mib'] / stage['peak_anon_mib']:.2f}x); the same kept "
              f"count: {stage['kept'] == held['kept']}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
