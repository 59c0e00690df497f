"""MinHash dedup of 1M synthetic records: one process against disk-based stages on Ray.

Each way runs in a process of its own on the same machine, from the same generated
records (a seeded vocabulary, a quarter of the records near or exact copies of
earlier ones): records per second, the kept count and a digest of the kept ids (they
must be equal), and peak resident memory: of the single process, and on Ray of the
driver and of each worker process (a local cluster with `--cpus` CPUs). The driver
on Ray holds a few numbers per record, never the records or their signatures.

Run: python tests/benchmarks/bench_dedup_ray.py [--records 1000000] [--cpus 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[2]


def synthetic(count: int, seed: int = 0) -> Iterator:
    """`count` records of 30-80 words; one in four repeats an earlier one with 0-6 words changed."""
    import random

    from factory.core.record import Record

    rng = random.Random(seed)
    vocabulary = [f"w{i}" for i in range(20000)]
    recent: list[list[str]] = []
    for i in range(count):
        if recent and rng.random() < 0.25:
            words = list(rng.choice(recent))
            for _ in range(rng.choice([0, 1, 2, 3, 6])):
                words[rng.randrange(len(words))] = rng.choice(vocabulary)
        else:
            words = rng.choices(vocabulary, k=rng.randint(30, 80))
            recent.append(words)
            if len(recent) > 5000:
                recent.pop(rng.randrange(len(recent)))
        yield Record(f"s{i}", [{"role": "user", "content": "Say it."}, {"role": "assistant", "content": " ".join(words)}])


def run(mode: str, records: int, cpus: int) -> dict:
    from filters.dedup.minhash import MinHashDedup

    stage = MinHashDedup()
    digest = hashlib.sha256()
    began = time.perf_counter()
    kept = 0
    if mode == "local":
        outputs = stage(synthetic(records))
    else:
        import ray

        from filters.dedup.minhash_ray import dedup_on_ray

        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        stage.seen = 0
        work = Path(tempfile.mkdtemp(prefix="dedup-ray-"))
        outputs = dedup_on_ray(stage, synthetic(records), work / "work", ray)
    for record in outputs:
        digest.update(record.id.encode())
        kept += 1
    elapsed = time.perf_counter() - began
    return {"mode": mode, "records": records, "seconds": elapsed, "kept": kept, "digest": digest.hexdigest()[:16],
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "workers": sorted(getattr(stage, "worker_memory", {}).values())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--mode", choices=["local", "ray"], help=argparse.SUPPRESS)  # one side, in a child process
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run(args.mode, args.records, args.cpus)))
        return
    results = {}
    for mode in ("local", "ray"):
        child = subprocess.run([sys.executable, __file__, "--mode", mode, "--records", str(args.records),
                                "--cpus", str(args.cpus)], capture_output=True, text=True, cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
        if child.returncode:
            raise SystemExit(f"{mode} failed:\n{child.stderr[-3000:]}")
        results[mode] = json.loads(child.stdout.strip().splitlines()[-1])
    gib = 1024 ** 3
    local, on_ray = results["local"], results["ray"]
    print(f"{args.records:,} synthetic records, MinHash dedup (threshold 0.8, 128 slots), this machine:")
    print(f"  one process:  {args.records / local['seconds']:,.0f} records/s, peak RSS {local['peak_rss'] / gib:.2f} GiB, "
          f"{local['kept']:,} kept (ids {local['digest']})")
    workers = ", ".join(f"{w / gib:.2f}" for w in on_ray["workers"])
    print(f"  Ray, {args.cpus} CPUs: {args.records / on_ray['seconds']:,.0f} records/s, driver peak RSS "
          f"{on_ray['peak_rss'] / gib:.2f} GiB, workers' peak RSS [{workers}] GiB, {on_ray['kept']:,} kept "
          f"(ids {on_ray['digest']})")
    print(f"  same decisions: {local['kept'] == on_ray['kept'] and local['digest'] == on_ray['digest']}; "
          f"Ray / one process: {local['seconds'] / on_ray['seconds']:.2f}x the speed, "
          f"{max([on_ray['peak_rss'], *on_ray['workers']]) / local['peak_rss']:.2f}x the largest process's memory")


if __name__ == "__main__":
    main()
