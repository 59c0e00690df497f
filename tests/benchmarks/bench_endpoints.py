"""Two replicas behind one teacher: throughput against the sum of their ideals, and a kill.

1. Two loopback teachers in processes of their own, 32 decode slots each, lognormal
   service times. Throughput from the first request (at either) to the last answer,
   as a fraction of the sum of both ideals (slots / mean service time the server
   actually drew), next to the best a perfect client could do with the same service
   times (each server's drawn times on a greedy 32-slot schedule, so the drain at
   the end counts against the schedule, not the client).
2. The same, with one replica killed a third of the way through: the run completes,
   and every requested sample is in the dataset.

Run: python tests/benchmarks/bench_endpoints.py [--requests 6000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from factory.loopback.process import loopback_process
from factory.loopback.process import server_stats as stats
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import greedy_makespan, write_pipeline  # noqa: E402

SLOTS, MEDIAN, SIGMA = 32, 0.2, 0.5


def servers(seed: int):
    return loopback_process("--slots", str(SLOTS), "--latency-median", str(MEDIAN), "--latency-sigma", str(SIGMA),
                            "--seed", str(seed))


def run(pipeline: Path, urls: list[str], out: Path) -> None:
    subprocess.run([sys.executable, "-m", "factory", "run", str(pipeline), "--out", str(out), "--quiet",
                    "--set", f"teacher.base_url={json.dumps(urls)}"], stdout=subprocess.DEVNULL, check=True)


def throughput(requests: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, servers(1) as a, servers(2) as b:
        tmp = Path(tmp)
        run(write_pipeline(tmp, requests), [a, b], tmp / "out")
        sa, sb = stats(a), stats(b)
    first = min(sa["first_request"], sb["first_request"])
    last = max(sa["last_answer"], sb["last_answer"])
    served = sa["served"] + sb["served"]
    measured = served / (last - first)
    ideal = sum(s["slots"] * s["served"] / s["busy_time"] for s in (sa, sb))
    # The perfect client: each server's own drawn times, back to back on its slots.
    bound = served / max(greedy_makespan([e - s for s, e in st["intervals"]], SLOTS) for st in (sa, sb))
    print(f"two replicas x {SLOTS} slots, {requests} requests: {measured:.1f} req/s; "
          f"ideal {ideal:.1f} req/s -> {measured / ideal:.3f} of ideal; "
          f"perfect-client bound {bound:.1f} req/s -> {measured / bound:.3f} of the bound; "
          f"split {sa['served']}/{sb['served']}")


def killed(requests: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, servers(3) as survivor:
        tmp = Path(tmp)
        pipeline = write_pipeline(tmp, requests)
        with servers(4) as victim:
            proc = subprocess.Popen([sys.executable, "-m", "factory", "run", str(pipeline), "--out", str(tmp / "out"),
                                     "--quiet", "--set", f"teacher.base_url={json.dumps([victim, survivor])}"],
                                    stdout=subprocess.DEVNULL)
            # Leaving this block kills the victim: a third of the way into the run.
            time.sleep(requests / (2 * SLOTS / (MEDIAN * 1.13)) / 3)
        proc.wait()
        info = json.loads((tmp / "out" / "run.json").read_text())
    funnel = info["funnel"]
    print(f"one of two replicas killed a third of the way: exit {proc.returncode}, kept {funnel['kept']} of "
          f"{funnel['requested']}, rejected {funnel['rejected']}; served {info['teacher']['served']}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=6000)
    args = parser.parse_args()
    throughput(args.requests)
    killed(args.requests // 2)


if __name__ == "__main__":
    main()
