"""Self-Instruct's novelty check: each new instruction against the whole pool by ROUGE-L.

A pool starts from the 175 seed tasks and grows as Self-Instruct's does: a candidate is
scored against every instruction in it and joins when its best ROUGE-L F1 is under 0.7.
Candidates are the 252 user-oriented instructions, then the first 30 words of T0
prompts. Ours (tasks/rouge.py: one rapidfuzz `cdist` call per candidate) runs next to
the paper's own way (rouge-score's `RougeScorer(["rougeL"]).score` for each pair, as
its generation script does, here on one process), on the same candidates in one run;
both must take the same decisions.

Run: python -m tests.benchmarks.bench_rouge_pool [--candidates 1500] [--data ../shared/data]
(the peer needs rouge-score: pip install 'factory[bench]')
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

from factory.tasks.rouge import RougePool

DEFAULT = Path(__file__).resolve().parents[3] / "shared" / "data"


def load(data: Path, n: int) -> tuple[list[str], list[str]]:
    seeds = [json.loads(line)["instruction"] for line in (data / "self-instruct-seed-tasks.jsonl").open()]
    candidates = [json.loads(line)["instruction"]
                  for line in (data / "self-instruct-human-eval" / "user_oriented_instructions.jsonl").open()]
    with gzip.open(data / "t0-prompts-55k.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            if len(candidates) >= n:
                break
            candidates.append(" ".join(json.loads(line)["prompt"].split()[:30]))
    return seeds, candidates[:n]


def ours(seeds: list[str], candidates: list[str]) -> tuple[float, list[bool]]:
    start = time.perf_counter()
    pool = RougePool(seeds)
    decisions = []
    for text in candidates:
        score, _ = pool.nearest(text)
        decisions.append(score < 0.7)
        if decisions[-1]:
            pool.add(text)
    return time.perf_counter() - start, decisions


def paper(seeds: list[str], candidates: list[str]) -> tuple[float, list[bool]]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    start = time.perf_counter()
    pool = list(seeds)
    decisions = []
    for text in candidates:
        best = max(scorer.score(text, other)["rougeL"].fmeasure for other in pool)
        decisions.append(best < 0.7)
        if decisions[-1]:
            pool.append(text)
    return time.perf_counter() - start, decisions


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=DEFAULT)
    parser.add_argument("--candidates", type=int, default=1500)
    args = parser.parse_args()
    seeds, candidates = load(args.data, args.candidates)
    ours_s, ours_d = ours(seeds, candidates)
    paper_s, paper_d = paper(seeds, candidates)
    agree = sum(a == b for a, b in zip(ours_d, paper_d))
    print(f"{len(candidates)} candidates against a pool growing from {len(seeds)} to {len(seeds) + sum(ours_d)}")
    print(f"ours (rapidfuzz cdist):       {ours_s:8.3f} s  {len(candidates) / ours_s:10.0f} candidates/s")
    print(f"paper (rouge-score per pair): {paper_s:8.3f} s  {len(candidates) / paper_s:10.0f} candidates/s")
    print(f"speed-up {paper_s / ours_s:.1f}x; decisions agree on {agree} of {len(candidates)}")


if __name__ == "__main__":
    main()
