"""Decontamination: recall on planted benchmark items, false positives, and speed, on the
T0 sample (55k prompt/completion pairs).

How the sets are built (fixed seed). T0 renders each source dataset under several
templates, so rows of one source share passages and template text; the split is by
source (the id's first word: `adversarial`, `ag`, `amazon` ...). Sources are shuffled
and taken for the benchmark until they hold 10,000 rows; those rows are the benchmark
(a JSONL file, each item a row's `prompt` and `completion`, named by `id`), and every
row of the other sources is a dataset record (user: prompt, assistant: completion).
Into records chosen at random among those that share nothing with the benchmark (by
the exact reference below), a benchmark item's prompt (one of 40 words or more) is
planted in one of five ways, 400 records each:
- verbatim: the record's answer becomes the item's prompt;
- reformatted: the same words in random case, punctuation after some, spaced anyhow;
- embedded: the prompt in the middle of the record's own answer, repeated around it;
- head: the item's first 30 words only, appended to the answer;
- near-miss: 12 consecutive words of the item appended to the answer (below 13: must stay).

The exact reference applies the same rule with Python sets of word tuples (per
benchmark n, short items whole) over `normalise`d text: its drops on the unplanted
records are the natural overlap between sources, which the stage must also find.
Recall: planted records dropped, and naming the planted item. False positives: drops
that neither planting nor the reference explains (near-misses included).

Speed: the stage end to end (read the benchmark file, build or load the index, hash
and look up every record, decide) against the reference on the same records, both
measured in this run.

Run: python tests/benchmarks/bench_decontaminate.py [--data ../shared/data/t0-prompts-55k.jsonl.gz]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from factory.core.record import Record
from filters.base import StageContext
from filters.decontaminate.decontaminate import Decontaminate
from filters.dedup.minhash_signing import normalise

DEFAULT = Path(__file__).resolve().parents[3] / "shared" / "data" / "t0-prompts-55k.jsonl.gz"
BENCHMARK_ITEMS = 10_000
PER_VARIANT = 400
VARIANTS = ("verbatim", "reformatted", "embedded", "head", "near-miss")


def split(path: Path) -> tuple[list[dict], list[dict]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    rng = random.Random(0)
    sources = sorted({r["id"].split("_")[0] for r in rows})
    rng.shuffle(sources)
    chosen, size = set(), 0
    for source in sources:
        if size >= BENCHMARK_ITEMS:
            break
        chosen.add(source)
        size += sum(r["id"].split("_")[0] == source for r in rows)
    items = [r for r in rows if r["id"].split("_")[0] in chosen][:BENCHMARK_ITEMS]
    rest = [r for r in rows if r["id"].split("_")[0] not in chosen]
    return items, rest


def reformat(text: str, rng: random.Random) -> str:
    words = [rng.choice([w.upper(), w.capitalize(), w]) + rng.choice(["", "", ",", " -", ";"])
             for w in normalise(text).split()]
    return "".join(w + rng.choice([" ", "  ", "\n"]) for w in words) + "?!"


def plant(items: list[dict], records: list[Record], clean: list[int]) -> dict[str, tuple[str, str]]:
    rng = random.Random(1)
    long_items = [r for r in items if len(normalise(r["prompt"]).split()) >= 40]
    planted = {}
    for k, index in enumerate(rng.sample(clean, PER_VARIANT * len(VARIANTS))):
        variant = VARIANTS[k // PER_VARIANT]
        item = rng.choice(long_items)
        answer = records[index].messages[1]["content"]
        if variant == "verbatim":
            answer = item["prompt"]
        elif variant == "reformatted":
            answer = reformat(item["prompt"], rng)
        elif variant == "embedded":
            answer = f"{answer}\n\nFor reference: {item['prompt']}\n\n{answer}"
        elif variant == "head":
            answer = f"{answer} {' '.join(item['prompt'].split()[:30])} ..."
        else:
            words = normalise(item["prompt"]).split()
            start = rng.randrange(0, len(words) - 12)
            answer = f"{answer} {' '.join(words[start:start + 12])}"
        records[index].messages[1]["content"] = answer
        planted[records[index].id] = (variant, item["id"])
    return planted


class Reference:
    """The stage's rule with Python sets of word tuples: slow and plainly right."""

    def __init__(self, bench: Path, ngram: int = 13, min_ngram: int = 8):
        texts = [normalise(r["prompt"] + "\n" + r["completion"]).split()
                 for r in map(json.loads, bench.read_text().splitlines())]
        checked = [len(t) for t in texts if len(t) >= min_ngram]
        self.n = int(np.clip(np.percentile(checked, 5, method="lower"), min_ngram, ngram))
        self.grams: set[tuple[str, ...]] = set()
        for words in texts:
            if len(words) >= self.n:
                self.grams.update(tuple(words[i:i + self.n]) for i in range(len(words) - self.n + 1))
            elif len(words) >= min_ngram:
                self.grams.add(tuple(words))
        self.lengths = sorted({len(g) for g in self.grams}, reverse=True)

    def contaminated(self, record: Record) -> bool:
        words = normalise("\n".join(m["content"] for m in record.messages)).split()
        return any(tuple(words[i:i + n]) in self.grams for n in self.lengths for i in range(len(words) - n + 1))


def run_stage(bench: Path, records: list[Record], out_dir: Path) -> tuple[Decontaminate, dict, float]:
    began = time.perf_counter()
    stage = Decontaminate(Decontaminate.Config(benchmarks=[str(bench)]))
    stage.load(bench.parent)
    rejected: list = []
    stage.bind(rejected.append, StageContext(pipeline=None, out_dir=out_dir))  # out_dir: where the index is cached
    for _ in stage(records):
        pass
    return stage, {r.id: r for r in rejected}, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=DEFAULT)
    args = parser.parse_args()
    if not args.data.exists():
        raise SystemExit(f"{args.data} not found: pass --data PATH")
    items, rest = split(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        bench = Path(tmp) / "benchmark.jsonl"
        bench.write_text("".join(json.dumps({"id": r["id"], "prompt": r["prompt"], "completion": r["completion"]}) + "\n"
                                 for r in items))
        records = [Record(r["id"], [{"role": "user", "content": r["prompt"]},
                                    {"role": "assistant", "content": r["completion"]}]) for r in rest]
        reference = Reference(bench)
        natural = {r.id for r in records if reference.contaminated(r)}
        planted = plant(items, records, [i for i, r in enumerate(records) if r.id not in natural])

        stage, dropped, built_s = run_stage(bench, records, Path(tmp) / "run")
        _, _, cached_s = run_stage(bench, records, Path(tmp) / "run")
        began = time.perf_counter()
        reference = Reference(bench)
        expected = {r.id for r in records if reference.contaminated(r)}
        reference_s = time.perf_counter() - began

    print(f"benchmark: {len(items):,} items from {len({i['id'].split('_')[0] for i in items})} T0 sources "
          f"(n = {stage.index.ngram_of[0]}, {stage.index.too_short[0]} items too short to check); "
          f"dataset: {len(records):,} records from the other sources")
    item_words = {r["id"]: f" {normalise(r['prompt'] + ' ' + r['completion'])} " for r in items}
    for variant in VARIANTS:
        ids = [rid for rid, (v, _) in planted.items() if v == variant]
        hit = [dropped[rid] for rid in ids if rid in dropped]
        # T0 repeats a passage under several templates: the item named holds the shared words,
        # and is the planted one or another rendering of the same passage.
        holds = sum(f" {r.metadata['shared_ngram']} " in item_words[r.metadata["benchmark_item"]] for r in hit)
        planted_one = sum(r.metadata["benchmark_item"] == planted[r.id][1] for r in hit)
        label = "dropped (must be 0)" if variant == "near-miss" else "recall"
        print(f"  {variant:11} {label} {len(hit) / len(ids):.3f} ({len(hit)}/{len(ids)}); the item named holds the "
              f"shared words: {holds}/{len(hit)} (the planted item itself: {planted_one})")
    real = {rid for rid, (v, _) in planted.items() if v != "near-miss"}
    found_natural = len(natural & set(dropped))
    false = set(dropped) - real - expected
    missed = expected - set(dropped)
    print(f"  natural overlap between sources (the reference's drops): {len(natural)}, found by the stage: {found_natural}")
    print(f"  false positives: {len(false)} of {len(records) - len(expected):,} clean records; "
          f"missed against the reference: {len(missed)}")
    print(f"speed: stage {built_s:.2f} s with the index built, {cached_s:.2f} s with it cached "
          f"({len(records) / cached_s:,.0f} records/s; matching alone {stage.match_s:.2f} s); "
          f"reference (Python sets) {reference_s:.2f} s: {reference_s / cached_s:.1f}x")


if __name__ == "__main__":
    main()
