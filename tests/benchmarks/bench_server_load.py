"""Server-aware concurrency: as fast as a wide fixed window, without the pile-up.

One loopback teacher in a process of its own (64 decode slots, lognormal service
times), serving vLLM's gauges at /metrics; the same run against the same server
without /metrics, where the window is the fixed default (512). For each: throughput
as a fraction of the server's ideal (slots / mean drawn service time) and of a
perfect client's bound (the drawn times back to back on the slots), and how many
requests waited at the server, at most and on average.

Run: python tests/benchmarks/bench_server_load.py [--requests 6000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from factory.loopback.process import loopback_process, server_stats
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import greedy_makespan, write_pipeline  # noqa: E402

SLOTS, MEDIAN, SIGMA = 64, 0.2, 0.5


def one(requests: int, metrics: bool) -> dict:
    flags = [] if metrics else ["--no-metrics"]
    with tempfile.TemporaryDirectory() as tmp, loopback_process(
            "--slots", str(SLOTS), "--latency-median", str(MEDIAN), "--latency-sigma", str(SIGMA), *flags) as url:
        tmp = Path(tmp)
        subprocess.run([sys.executable, "-m", "factory", "run", str(write_pipeline(tmp, requests)), "--out",
                        str(tmp / "out"), "--quiet", "--set", f"teacher.base_url={url}"],
                       stdout=subprocess.DEVNULL, check=True)
        st = server_stats(url)
        concurrency = json.loads((tmp / "out" / "run.json").read_text())["engine"]["concurrency"]
    span = st["last_answer"] - st["first_request"]
    measured = st["served"] / span
    ideal = SLOTS * st["served"] / st["busy_time"]
    bound = st["served"] / greedy_makespan([e - s for s, e in st["intervals"]], SLOTS)
    label = "metrics" if metrics else "fixed  "
    print(f"{label}: {measured:.1f} req/s = {measured / ideal:.3f} of ideal, {measured / bound:.3f} of the "
          f"perfect-client bound; waiting at the server: at most {st['most_waiting']}, "
          f"mean {st['waiting_area'] / span:.1f}; window {concurrency.get('window_range', concurrency['final'])} "
          f"({concurrency['mode']})")
    return {"throughput": measured, "mean_waiting": st["waiting_area"] / span, "most_waiting": st["most_waiting"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=6000)
    args = parser.parse_args()
    steered, fixed = one(args.requests, True), one(args.requests, False)
    print(f"metrics/fixed throughput {steered['throughput'] / fixed['throughput']:.3f}; mean queue "
          f"{steered['mean_waiting']:.1f} vs {fixed['mean_waiting']:.1f}")


if __name__ == "__main__":
    main()
