"""The in-process teacher: batched generation against one request at a time, same run.

A small Llama (random weights, a BPE tokenizer trained on the spot) is built in a
temporary folder; the same requests (prompts of several lengths, greedy, a fixed
number of new tokens) are answered by the transformers teacher with batch_size 1
and with larger batches, through the engine-facing `complete` calls the pipeline
uses. Prints requests/s for each and the ratio to one at a time, and checks the
batched answers are the same text.

Run: python tests/benchmarks/bench_transformers.py [--requests 64] [--hidden 256] [--layers 4]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.helpers.tiny_models import build_tiny_chat_model  # noqa: E402

from factory.config.pipeline import TeacherConfig  # noqa: E402
from factory.teachers.base import Request  # noqa: E402
from factory.teachers.in_process.transformers_teacher import TransformersTeacher  # noqa: E402


def requests(n: int) -> list[Request]:
    words = "tides volcanoes glaciers coral reefs question answer pairs about".split()
    return [Request([{"role": "user", "content": f"{i}: " + " ".join(words[: 2 + i % 8])}]) for i in range(n)]


async def answer(model: Path, batch: int, reqs: list[Request], new_tokens: int):
    # Greedy: a random model rarely emits the end token, so every request generates
    # about `new_tokens` tokens and the comparison is like for like.
    teacher = TransformersTeacher(TeacherConfig(model=str(model), batch_size=batch,
                                                sampling={"max_tokens": new_tokens, "temperature": 0.0}))
    await teacher.start()
    try:
        began = time.perf_counter()
        done = await asyncio.gather(*[teacher.complete(r) for r in reqs])
        return time.perf_counter() - began, done, teacher.batching()
    finally:
        await teacher.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_chat_model(Path(tmp), hidden_size=args.hidden, layers=args.layers)
        reqs = requests(args.requests)
        base_s, base, _ = asyncio.run(answer(model, 1, reqs, args.new_tokens))
        tokens = sum(c.completion_tokens for c in base)
        print(f"model: Llama, hidden {args.hidden}, {args.layers} layers; {args.requests} requests, "
              f"{tokens} new tokens in all")
        print(f"batch 1 : {args.requests / base_s:7.1f} req/s ({base_s:.2f} s)")
        for batch in (8, 16, 32):
            took, done, batching = asyncio.run(answer(model, batch, reqs, args.new_tokens))
            same = sum(a.text == b.text for a, b in zip(done, base))
            print(f"batch {batch:<2}: {args.requests / took:7.1f} req/s ({took:.2f} s) -> {base_s / took:.2f}x one "
                  f"at a time; mean batch {batching['mean_batch']}; same text as batch 1: {same}/{len(done)}")


if __name__ == "__main__":
    main()
