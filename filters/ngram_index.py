"""Word n-grams of benchmark items as sorted 64-bit hashes, and the records that share one.

Texts are read as `normalise` reads them (case folded, punctuation and whitespace
collapsed), words hashed in bulk by filters/minhash_signing.py, and each n-gram is the
same polynomial combination of its word hashes wherever it occurs; so a record
shares an n-gram with an item exactly when their hashes meet (up to a 2**-64 chance).

The n of a benchmark follows the GPT-3 paper's rule (Brown et al. 2020, appendix C,
used by lm-evaluation-harness): the 5th percentile of its items' lengths in words,
kept between `min_ngram` and `ngram` (8 and 13 by default). An item shorter than that
n is matched whole: a record must contain all its words in order. An item shorter
than `min_ngram` words is not checked at all (a five-word item matches ordinary
prose); the stage counts those.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from filters.benchmarks import Benchmark
from filters.minhash_signing import shingle_hashes, text_batches, word_hashes

INDEX_VERSION = 1  # part of the cache key: a change to hashing or the rule builds anew
TEXTS_PER_BATCH = 2048
CHARS_PER_BATCH = 1 << 22


@dataclass
class Match:
    item: int  # index into NgramIndex.owners' item space (see `locate`)
    position: int  # the record's first matching word
    length: int  # words matched


class NgramIndex:
    """For each n-gram length in use: sorted hashes and the item each belongs to."""

    def __init__(self, tables: dict[int, tuple[np.ndarray, np.ndarray]], starts: list[int], ngram_of: list[int],
                 too_short: list[int]):
        self.tables = tables
        self.starts = starts  # item number where each benchmark's items begin
        self.ngram_of = ngram_of  # each benchmark's n
        self.too_short = too_short  # each benchmark's items not checked

    @classmethod
    def build(cls, benchmarks: Sequence[Benchmark], ngram: int, min_ngram: int) -> "NgramIndex":
        per_length: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        starts, ngram_of, too_short, first = [], [], [], 0
        for bench in benchmarks:
            words, counts = _words(bench.texts)
            checked = counts[counts >= min_ngram]
            n = int(np.clip(np.percentile(checked, 5, method="lower"), min_ngram, ngram)) if len(checked) else ngram
            hashes, offsets = shingle_hashes(words, counts, n)
            per_item = np.diff(np.append(offsets, len(hashes)))
            owner = np.repeat(np.arange(first, first + len(bench.texts), dtype=np.int64), per_item)
            length = np.repeat(np.minimum(counts, n), per_item)  # a short item's one hash covers all its words
            keep = length >= min_ngram
            for size in np.unique(length[keep]):
                chosen = keep & (length == size)
                per_length.setdefault(int(size), []).append((hashes[chosen], owner[chosen]))
            starts.append(first)
            ngram_of.append(n)
            too_short.append(int((counts < min_ngram).sum()))
            first += len(bench.texts)
        tables = {}
        for size, parts in per_length.items():
            hashes = np.concatenate([h for h, _ in parts])
            owners = np.concatenate([o for _, o in parts])
            order = np.argsort(hashes, kind="stable")  # stable: a shared n-gram names its first item
            tables[size] = (hashes[order], owners[order])
        return cls(tables, starts, ngram_of, too_short)

    def locate(self, item: int) -> tuple[int, int]:
        """(benchmark number, item number within it) of a global item number."""
        bench = int(np.searchsorted(self.starts, item, side="right")) - 1
        return bench, item - self.starts[bench]

    def match(self, texts: Sequence[str]) -> list[Match | None]:
        """For each text, its first n-gram (in text order, longest length first) found in
        the index, or None."""
        out: list[Match | None] = [None] * len(texts)
        for start, end in text_batches(texts, TEXTS_PER_BATCH, CHARS_PER_BATCH):
            words, counts = _words(texts[start:end])
            for size in sorted(self.tables, reverse=True):
                table, owners = self.tables[size]
                hashes, offsets = shingle_hashes(words, counts, size)
                at = np.minimum(np.searchsorted(table, hashes), len(table) - 1)
                hit = table[at] == hashes
                # A text shorter than `size` has one hash of fewer words: never a `size`-gram.
                hit &= np.repeat(counts >= size, np.diff(np.append(offsets, len(hashes))))
                hits = np.flatnonzero(hit)
                docs = np.searchsorted(offsets, hits, side="right") - 1
                docs, first = np.unique(docs, return_index=True)  # each text's first hit
                for doc, i in zip(docs.tolist(), hits[first].tolist()):
                    if out[start + doc] is None:
                        out[start + doc] = Match(int(owners[at[i]]), i - int(offsets[doc]), size)
        return out

    # -- cache --------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for size, (hashes, owners) in self.tables.items():
            arrays[f"h{size}"], arrays[f"o{size}"] = hashes, owners
        meta = {"starts": self.starts, "ngram_of": self.ngram_of, "too_short": self.too_short}
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "NgramIndex":
        with np.load(path) as data:
            meta = json.loads(data["meta"].tobytes())
            tables = {int(k[1:]): (data[k], data[f"o{k[1:]}"]) for k in data.files if k.startswith("h")}
        return cls(tables, meta["starts"], meta["ngram_of"], meta["too_short"])


def cache_key(benchmarks: Sequence[Benchmark], ngram: int, min_ngram: int) -> str:
    parts = [str(INDEX_VERSION), str(ngram), str(min_ngram), *(b.digest() for b in benchmarks)]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]


def _words(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Word hashes and counts of `texts`, hashed in batches (word_hashes' arrays grow
    with the characters of one call)."""
    if not texts:
        return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64)
    parts = [word_hashes(texts[start:end]) for start, end in text_batches(texts, TEXTS_PER_BATCH, CHARS_PER_BATCH)]
    return np.concatenate([w for w, _ in parts]), np.concatenate([c for _, c in parts])
