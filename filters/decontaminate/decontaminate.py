"""Decontamination: drop records that reproduce an item of a benchmark.

A record is dropped when its text (by default every message but the system prompt)
shares a word n-gram with a benchmark item after case, punctuation and whitespace are
normalised, wherever in the record it sits: an item quoted inside a longer answer is
caught like a verbatim copy. The rejection names the benchmark, the item and the
words shared. How n is chosen is in filters/decontaminate/ngram_index.py.

The benchmarks are read when the pipeline is checked (a missing file or dataset is
one line before anything is sent); the index is built once and kept in the run
folder, keyed by the benchmarks' content and the settings, so a rerun loads it.
"""

from __future__ import annotations

import collections
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from pydantic import Field, field_validator, model_validator

from factory.config.pipeline import PipelineFile
from factory.core.constants import DECONTAMINATION_INDEX_DIR
from factory.core.record import Record
from filters.base import Stage, TextConfig
from filters.decontaminate.benchmarks import Benchmark, BenchmarkSource, load_benchmark
from filters.decontaminate.ngram_index import NgramIndex, cache_key, words_at

QUOTE_WORDS = 20  # words of the shared text quoted in a rejection


class Decontaminate(Stage):
    name = "decontaminate"

    class Config(TextConfig):
        # Files (a path, or {file: ..., columns, id_column, name}) or {dataset: ..., config, split, columns}.
        benchmarks: list[BenchmarkSource] = Field(min_length=1)
        ngram: int = Field(13, ge=1)  # the longest n-gram; a benchmark of short items uses shorter
        min_ngram: int = Field(8, ge=1)  # the shortest; items shorter than this are not checked

        @field_validator("benchmarks", mode="before")
        @classmethod
        def _paths_are_files(cls, value: Any) -> Any:
            if isinstance(value, list):
                return [{"file": v} if isinstance(v, str) else v for v in value]
            return value

        @model_validator(mode="after")
        def _ngram_order(self):
            if self.min_ngram > self.ngram:
                raise ValueError(f"min_ngram ({self.min_ngram}) is larger than ngram ({self.ngram})")
            return self

    def __init__(self, config: "Decontaminate.Config | None" = None) -> None:
        super().__init__(config)
        self.loaded: list[Benchmark] = []
        self.index: NgramIndex | None = None
        self.index_source = ""
        self.per_benchmark: collections.Counter[str] = collections.Counter()
        self.match_s = 0.0

    def prepare(self, pipeline: PipelineFile, where: str) -> None:
        self.load(pipeline.base_dir, where)

    def load(self, base_dir: Path, where: str = "decontaminate") -> None:
        self.loaded = [load_benchmark(source, base_dir, f"{where}.benchmarks[{i}]")
                       for i, source in enumerate(self.config.benchmarks)]

    def data_digest(self) -> str:
        # The benchmarks' content: a changed test file must not replay the old verdicts.
        if not self.loaded:
            self.load(Path.cwd())
        return cache_key(self.loaded, self.config.ngram, self.config.min_ngram)

    def build_index(self, cache_dir: Path | None) -> NgramIndex:
        c = self.config
        path = cache_dir / f"{cache_key(self.loaded, c.ngram, c.min_ngram)}.npz" if cache_dir else None
        if path is not None and path.exists():
            try:
                self.index_source = "cached"
                return NgramIndex.load(path)
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache file is built again
        index = NgramIndex.build(self.loaded, c.ngram, c.min_ngram)
        self.index_source = "built"
        if path is not None:
            index.save(path)
        return index

    def process(self, records: Iterable[Record]) -> Iterator[Record]:
        if not self.loaded:
            self.load(Path.cwd())
        records = list(records)
        self.config.check_fields(records, self.where)
        cache_dir = self.context.out_dir / DECONTAMINATION_INDEX_DIR if self.context else None
        self.index = self.build_index(cache_dir)
        began = time.perf_counter()
        texts = [self.config.text(r) for r in records]
        matches = self.index.match(texts)
        self.match_s = time.perf_counter() - began
        for record, text, match in zip(records, texts, matches):
            if match is None:
                yield record
                continue
            bench_no, item_no = self.index.locate(match.item)
            bench = self.loaded[bench_no]
            words = words_at(text, match.position, match.length)
            shared = " ".join(words[:QUOTE_WORDS]) + (" ..." if len(words) > QUOTE_WORDS else "")
            self.per_benchmark[bench.name] += 1
            self.drop(record, "contaminated",
                      f"shares {match.length} words with {bench.name} item {bench.ids[item_no]}: \"{shared}\"",
                      benchmark=bench.name, benchmark_item=bench.ids[item_no], shared_ngram=" ".join(words))

    def funnel(self) -> dict[str, Any]:
        benchmarks = []
        for i, bench in enumerate(self.loaded):
            entry = {"name": bench.name, "items": len(bench.texts), "dropped": self.per_benchmark.get(bench.name, 0)}
            if self.index is not None:
                entry |= {"ngram": self.index.ngram_of[i], "items_too_short": self.index.too_short[i]}
            benchmarks.append(entry)
        return {**super().funnel(), "benchmarks": benchmarks, "index": self.index_source,
                "match_s": round(self.match_s, 3)}
