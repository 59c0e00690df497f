"""Batch mode's client-side cost, as ratios measured in one run.

N Q&A requests (default 20,000) through the whole pipeline against the loopback
teacher, whose batches end the moment they are looked at and whose online endpoint
answers at once: so what is measured is factory, not a provider.

1. Batch mode end to end (queue, one JSONL file, upload, poll, download, journal),
   next to online mode on the same requests: requests per second of each and their ratio.
2. The batch teacher alone (no tasks, no export): N requests through complete(), from
   the queue to the answers, next to the floor any batch client pays (serialising the
   bodies to JSONL and parsing result lines of the same size, in a bare loop). The
   teacher's time includes the loopback building its result file in its own process.

Run: python tests/benchmarks/bench_batch.py [--requests 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from factory.loopback.process import loopback_process
from factory.loopback.process import server_stats as stats


def write_pipeline(folder: Path, count: int, mode: str) -> Path:
    (folder / "prompts" / "qa").mkdir(parents=True)
    (folder / "prompts" / "qa" / "user.j2").write_text("Write {{ k }} question about {{ topic }} (variant {{ n }}).")
    path = folder / "bench.yaml"
    path.write_text(textwrap.dedent(f"""
        name: bench
        teacher: {{backend: openai, model: bench, base_url: http://127.0.0.1:1/v1, mode: {mode},
                   batch: {{poll_interval: 0.2, gather: 0.5}}}}
        seeds: {{topic: [bees, soil, tides, glass], n: {list(range(50))}}}
        generate: {{task: qa, count: {count}, pairs_per_request: 1, templates: {{user: qa/user.j2}}}}
    """))
    return path


def generate_seconds(folder: Path, url: str, count: int, mode: str) -> float:
    pipeline = write_pipeline(folder, count, mode)
    out = folder / "out"
    subprocess.run([sys.executable, "-m", "factory", "run", str(pipeline), "--out", str(out), "--quiet",
                    "--set", f"teacher.base_url={url}"], check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "run.json").read_text())["timings"]["generate_s"]


def bare_floor(count: int) -> float:
    """Seconds to write `count` request lines and read `count` result lines, nothing else."""
    body = {"model": "bench", "temperature": 0.8, "top_p": 0.95, "max_tokens": 1024, "seed": 1,
            "messages": [{"role": "user", "content": "Write 1 question about bees (variant 7)."}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": {
                "type": "object", "properties": {"pairs": {"type": "array"}}, "required": ["pairs"]}}}}
    result = {"id": "batch_req_1", "custom_id": "0" * 64, "error": None, "response": {"status_code": 200, "body": {
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant",
                                                                       "content": json.dumps({"pairs": []})}}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 40}}}}
    line = json.dumps(result)
    began = time.perf_counter()
    data = "\n".join(json.dumps({"custom_id": f"{i:064d}", "method": "POST", "url": "/v1/chat/completions",
                                 "body": {**body, "seed": i}}) for i in range(count))
    for _ in range(count):
        json.loads(line)
    assert data
    return time.perf_counter() - began


async def teacher_only(url: str, count: int, folder: Path) -> float:
    from factory.config.pipeline import TeacherConfig
    from factory.store.run_store import RunStore
    from factory.core.structured import list_answer
    from factory.teachers.base import Request
    from factory.teachers.batch.batch_teacher import BatchTeacher

    config = TeacherConfig(backend="openai", model="bench", base_url=url, mode="batch",
                           batch={"poll_interval": 0.05, "gather": 0.05})
    schema = list_answer("pairs", {"type": "object", "properties": {"q": {"type": "string"}}}, 1, 1)
    requests = [Request([{"role": "user", "content": f"Write 1 question about bees (variant {i})."}], schema,
                        seed=i, key=f"{i:064x}") for i in range(count)]
    with RunStore.open(folder) as store:
        store.begin_invocation("bench")
        teacher = BatchTeacher(config, store)
        await teacher.start()
        try:
            began = time.perf_counter()
            answers = await asyncio.gather(*(teacher.complete(r) for r in requests))
            elapsed = time.perf_counter() - began
        finally:
            await teacher.close()
    assert len(answers) == count
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    n = parser.parse_args().requests
    with loopback_process() as url:
        with tempfile.TemporaryDirectory() as tmp:
            online = generate_seconds(Path(tmp), url, n, "online")
        with tempfile.TemporaryDirectory() as tmp:
            batch = generate_seconds(Path(tmp), url, n, "batch")
        batches = stats(url)["batches"]["created"]
        with tempfile.TemporaryDirectory() as tmp:
            alone = asyncio.run(teacher_only(url, n, Path(tmp)))
    floor = bare_floor(n)
    print(f"{n:,} requests; batch mode used {batches} batch(es)")
    print(f"online: {n / online:,.0f} req/s ({online:.1f} s)")
    print(f"batch:  {n / batch:,.0f} req/s ({batch:.1f} s, of which up to 0.5 s gather and 0.2 s poll wait)")
    print(f"batch / online time: {batch / online:.2f}")
    print(f"batch teacher alone: {alone:.2f} s ({1e6 * alone / n:.0f} us a request, 0.05 s gather and poll)")
    print(f"bare JSONL write + result parse: {floor:.2f} s; the batch teacher alone is {alone / floor:.1f}x that floor")


if __name__ == "__main__":
    main()
