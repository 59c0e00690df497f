"""Engine throughput against the loopback teacher, as ratios measured in one run.

1. Saturation: 64 decode slots, lognormal service times (median 0.5 s, sigma 0.6),
   2,000 Q&A requests at default settings. Throughput from the first request to the
   last answer, as a fraction of the ideal (slots / mean service time), next to the
   best any client could do with the same service times (a greedy 64-slot schedule
   of the times the server actually drew, so the unavoidable drain at the end counts
   against the schedule, not the engine): saturation is that schedule's makespan over
   the run's first request to last answer, and the whole command (launch to exit) is
   given as a multiple of it. Also the start-up time: process launch to the first request.
2. Overhead: near-zero service time, requests per second through the whole engine
   (render, journal, parse, write) against bare loops of the openai client: the same
   concurrency (`teacher.max_concurrency` pinned, the server's /metrics off so nothing
   resizes the window), the same transport (raw post on aiohttp), timed the same way (at
   the server, first request to last answer). The bare loop with and without durability
   (a SQLite commit per answer, or an fsynced append per answer; factory's store
   group-commits with synchronous=FULL), and with typed `create` for reference.

Run: python tests/benchmarks/bench_engine.py [--requests 2000] [--fast-requests 10000] [--concurrency 256]
     [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import math
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from factory.loopback.process import loopback_process
from factory.loopback.process import server_stats as stats


def write_pipeline(folder: Path, count: int) -> Path:
    (folder / "prompts" / "qa").mkdir(parents=True)
    (folder / "prompts" / "qa" / "user.j2").write_text("Write {{ k }} question about {{ topic }} (variant {{ n }}).")
    path = folder / "bench.yaml"
    path.write_text(textwrap.dedent(f"""
        name: bench
        teacher: {{backend: openai, model: bench, base_url: http://127.0.0.1:1/v1}}
        seeds: {{topic: [bees, soil, tides, glass], n: {list(range(50))}}}
        generate: {{task: qa, count: {count}, pairs_per_request: 1, templates: {{user: qa/user.j2}}}}
    """))
    return path


def run_factory(pipeline: Path, url: str, out: Path, *sets: str) -> tuple[float, dict]:
    launched = time.time()
    subprocess.run(
        [sys.executable, "-m", "factory", "run", str(pipeline), "--out", str(out), "--quiet",
         "--set", f"teacher.base_url={url}", *(arg for kv in sets for arg in ("--set", kv))],
        check=True, stdout=subprocess.DEVNULL,
    )
    return launched, json.loads((out / "run.json").read_text())


def greedy_makespan(service_times: list[float], slots: int) -> float:
    """Makespan of serving the times in order on `slots` servers, each starting when one frees."""
    free = [0.0] * slots
    end = 0.0
    for s in service_times:
        start = heapq.heappop(free)
        heapq.heappush(free, start + s)
        end = max(end, start + s)
    return end


def saturation(requests: int) -> None:
    slots, median, sigma = 64, 0.5, 0.6
    with tempfile.TemporaryDirectory() as tmp, loopback_process(
        "--slots", str(slots), "--latency-median", str(median), "--latency-sigma", str(sigma), "--seed", "1"
    ) as url:
        tmp = Path(tmp)
        launched, info = run_factory(write_pipeline(tmp, requests), url, tmp / "out")
        finished = time.time()
        st = stats(url)
    span = st["last_answer"] - st["first_request"]
    throughput = st["served"] / span
    mean_theory = median * math.exp(sigma**2 / 2)
    mean_drawn = st["busy_time"] / st["served"]
    ideal = slots / mean_theory
    # Same distribution, same count: what a perfect client would get (drain included).
    import random

    rng = random.Random(1)
    draws = [median * math.exp(sigma * rng.gauss(0, 1)) for _ in range(st["served"])]
    best = st["served"] / greedy_makespan(draws, slots)
    print(f"saturation: {st['served']} requests in {span:.2f}s = {throughput:.1f} req/s")
    print(f"  ideal slots/mean = {slots}/{mean_theory:.3f}s = {ideal:.1f} req/s "
          f"(drawn mean {mean_drawn:.3f}s -> {slots / mean_drawn:.1f} req/s)")
    print(f"  fraction of ideal: {throughput / ideal:.3f}  (of the drawn-mean ideal: {throughput / (slots / mean_drawn):.3f})")
    print(f"  perfect client with an end-of-run drain: {best:.1f} req/s = {best / ideal:.3f} of ideal; "
          f"engine reaches {throughput / best:.3f} of that")
    # The same bound on the service times this server actually drew for this run: nothing
    # but the client (start-up, a probe that holds the window, gaps) separates the two.
    bound = greedy_makespan([end - start for start, end in sorted(st["intervals"])], slots)
    print(f"  perfect client on the same service times: {bound:.2f}s first request to last answer; "
          f"saturation {bound / span:.3f} of it")
    print(f"  whole command (launch to exit) {finished - launched:.2f}s = {(finished - launched) / bound:.3f}x "
          f"that bound")
    t0 = st["first_request"]
    t1 = max(start for start, _ in st["intervals"])  # the last request entered a slot
    busy = sum(max(0.0, min(end, t1) - max(start, t0)) for start, end in st["intervals"])
    print(f"  slot utilisation while work was queued (first request to last start, {t1 - t0:.1f}s): "
          f"{busy / (slots * (t1 - t0)):.3f}")
    print(f"  start-up, process launch to first request: {st['first_request'] - launched:.2f}s")
    print(f"  kept {info['funnel']['kept']} of {info['funnel']['requested']}")


async def bare_client(url: str, n: int, concurrency: int, raw: bool = True, durable: str = "", folder: Path | None = None) -> None:
    """What a user would write instead of the engine: the openai client over aiohttp, `n`
    requests under a semaphore of `concurrency`. `raw` posts the body and gets JSON back, as
    the engine does (no typed response objects); typed uses `chat.completions.create`.
    `durable` keeps each answer before its slot frees, as a careful user keeps answers they
    paid for: "sqlite" commits it (WAL, synchronous=FULL, the run store's settings: one
    commit, so one fsync, per answer); "append" writes a JSON line and fsyncs the file.
    The caller times it the way the engine is timed: at the server."""
    import hashlib
    import sqlite3

    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key="x", http_client=openai.DefaultAioHttpClient())
    sem = asyncio.Semaphore(concurrency)
    if durable == "sqlite":
        db = sqlite3.connect(folder / "answers.sqlite", isolation_level=None)  # autocommit: a transaction per INSERT
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE answers (key TEXT PRIMARY KEY, answer TEXT)")

        def keep(body: dict, answer) -> None:
            db.execute("INSERT INTO answers VALUES (?, ?)",
                       (hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest(), json.dumps(answer)))
    elif durable == "append":
        log = open(folder / "answers.jsonl", "a", encoding="utf-8")

        def keep(body: dict, answer) -> None:
            log.write(json.dumps({"request": body, "answer": answer}) + "\n")
            log.flush()
            os.fsync(log.fileno())
    else:
        def keep(body: dict, answer) -> None:
            pass

    async def one(i: int) -> None:
        body = dict(model="bench", messages=[{"role": "user", "content": f"Write 1 question about bees (variant {i})."}],
                    max_tokens=64, seed=i)
        async with sem:
            if raw:
                answer = await client.post("/chat/completions", cast_to=object, body=body)
            else:
                answer = (await client.chat.completions.create(**body)).model_dump()
            keep(body, answer)

    await asyncio.gather(*(one(i) for i in range(n)))
    await client.close()


def served_rate(url: str) -> float:
    """Requests per second at the server, first request to last answer."""
    st = stats(url)
    return st["served"] / (st["last_answer"] - st["first_request"])


def overhead(requests: int, concurrency: int, rounds: int) -> None:
    """Each side against a fresh loopback teacher without /metrics (so nothing resizes the
    engine's window), at the same concurrency, over the same transport (the openai client's
    raw post on aiohttp), timed the same way: by the server, first request to last answer.
    The sides take turns for `rounds` rounds and each one's best counts (as timeit takes
    the minimum): on a shared machine a busy spell, or a slow fsync, hurts no side alone."""
    server = ("--slots", "100000", "--no-metrics")

    def loop(raw: bool, durable: str) -> tuple[float, float]:
        with tempfile.TemporaryDirectory() as tmp, loopback_process(*server) as url:
            asyncio.run(bare_client(url, requests, concurrency, raw=raw, durable=durable, folder=Path(tmp)))
            return served_rate(url), 0.0

    def engine() -> tuple[float, float]:
        with tempfile.TemporaryDirectory() as tmp, loopback_process(*server) as url:
            tmp = Path(tmp)
            launched, _ = run_factory(write_pipeline(tmp, requests), url, tmp / "out",
                                      f"teacher.max_concurrency={concurrency}", "teacher.server_metrics=false")
            return served_rate(url), time.time() - launched

    sides = {"factory engine": engine,
             "bare loop, raw post, nothing stored": lambda: loop(True, ""),
             "bare loop, raw post, SQLite commit per answer": lambda: loop(True, "sqlite"),
             "bare loop, raw post, fsynced append per answer": lambda: loop(True, "append"),
             "bare loop, typed create, nothing stored": lambda: loop(False, "")}
    best: dict[str, tuple[float, float]] = {}
    for _ in range(rounds):
        for name, side in sides.items():
            measured = side()
            if measured[0] > best.get(name, (0.0, 0.0))[0]:
                best[name] = measured
    rate, whole = best.pop("factory engine")
    print(f"overhead: {requests} requests, near-zero service time, {concurrency} in flight on every side, "
          f"openai client on aiohttp, each timed at the server (first request to last answer), best of {rounds}")
    print(f"  factory engine (render, journal with group commit, parse, records): {rate:.0f} req/s")
    for name, (loop_rate, _) in best.items():
        print(f"  {name + ':':48} {loop_rate:.0f} req/s (engine/this = {rate / loop_rate:.3f})")
    print(f"  factory whole command incl. start-up and export (its best round): {requests / whole:.0f} req/s ({whole:.1f}s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--fast-requests", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=256, help="requests in flight in the overhead part, both sides")
    parser.add_argument("--rounds", type=int, default=3, help="turns each side of the overhead part takes; its best counts")
    parser.add_argument("--only", choices=["saturation", "overhead"])
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.only != "overhead":
        saturation(args.requests)
    if args.only != "saturation":
        overhead(args.fast_requests, args.concurrency, args.rounds)
