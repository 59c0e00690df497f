"""Word n-grams of benchmark items as sorted 64-bit keys, and the records that share one.

Texts are read as `normalise` reads them (case folded, punctuation and whitespace
collapsed) and their words hashed in bulk by filters/dedup/minhash_signing.py. The hash of
the L words from position p is a polynomial in the word hashes, taken from prefix
sums, so every n-gram of a batch of any length costs two array operations; a record
shares an n-gram with an item exactly when their keys meet (up to a 2**-64 chance).
A bitmap over the keys' top bits rules out nearly every record n-gram before the
sorted keys are searched.

The n of a benchmark follows the GPT-3 paper's rule (Brown et al. 2020, appendix C,
also lm-evaluation-harness's): the 5th percentile of its items' lengths in words,
kept between `min_ngram` and `ngram` (8 and 13 by default). An item shorter than that
n is matched whole: a record must contain all its words in order. An item shorter
than `min_ngram` words is not checked at all (a five-word item matches ordinary
prose); the stage counts those.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from filters.decontaminate.benchmarks import Benchmark
from filters.dedup.minhash_signing import cached_powers, text_batches, word_hashes

INDEX_VERSION = 2  # part of the cache key: a change to hashing or the rule builds anew
TEXTS_PER_BATCH = 4096
CHARS_PER_BATCH = 1 << 22
_K = np.uint64(0x9FB21C651E98DF25)  # odd: invertible modulo 2**64
_K_INV = np.uint64(pow(int(_K), -1, 2**64))
_LENGTH_MIX = np.uint64(0x9E3779B97F4A7C15)
BITMAP_LOAD = 8  # bitmap slots per key: about one record n-gram in 8 reaches the sorted search


@dataclass
class Match:
    item: int  # global item number (see NgramIndex.locate)
    position: int  # the record's first matching word
    length: int  # words matched


def ngram_keys(words: np.ndarray, counts: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keys of every run of `length` words inside each text; with each key, its text and
    the run's first word (counted within the text)."""
    total = len(words)
    if total < length:
        return np.empty(0, np.uint64), np.empty(0, np.int64), np.empty(0, np.int64)
    starts = np.cumsum(counts) - counts
    doc = np.repeat(np.arange(len(counts)), counts)
    first = np.flatnonzero(np.arange(total) + length <= (starts + counts)[doc])
    with np.errstate(over="ignore"):
        # prefix[i] = sum_{j<i} w_j K^j, so sum_{j<L} w_{p+j} K^j = (prefix[p+L] - prefix[p]) K^-p.
        prefix = np.zeros(total + 1, dtype=np.uint64)
        np.cumsum(words * cached_powers(_K, total), dtype=np.uint64, out=prefix[1:])
        keys = (prefix[first + length] - prefix[first]) * cached_powers(_K_INV, total)[first]
        keys = _mix(keys ^ (np.uint64(length) * _LENGTH_MIX))
    return keys, doc[first], first - starts[doc[first]]


def _mix(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's finaliser: every bit of the key depends on every bit of the sum."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint64(33))
        h = h * np.uint64(0xFF51AFD7ED558CCD)
        h = h ^ (h >> np.uint64(33))
        h = h * np.uint64(0xC4CEB9FE1A85EC53)
        return h ^ (h >> np.uint64(33))


class NgramIndex:
    def __init__(self, keys: np.ndarray, owners: np.ndarray, lengths: list[int], starts: list[int],
                 ngram_of: list[int], too_short: list[int]):
        self.keys = keys  # sorted
        self.owners = owners  # the global item number of each key
        self.lengths = lengths  # the n-gram lengths in use, longest first
        self.starts = starts  # the global number of each benchmark's first item
        self.ngram_of = ngram_of  # each benchmark's n
        self.too_short = too_short  # each benchmark's items not checked
        self.bits = max(16, int(np.ceil(np.log2(max(1, len(keys)) * BITMAP_LOAD))))
        self.bitmap = np.zeros(1 << self.bits, dtype=bool)
        self.bitmap[keys >> np.uint64(64 - self.bits)] = True

    @classmethod
    def build(cls, benchmarks: Sequence[Benchmark], ngram: int, min_ngram: int) -> "NgramIndex":
        all_keys, all_owners, starts, ngram_of, too_short, first = [], [], [], [], [], 0
        lengths: set[int] = set()
        for bench in benchmarks:
            words, counts = _words(bench.texts)
            checked = counts[counts >= min_ngram]
            n = int(np.clip(np.percentile(checked, 5, method="lower"), min_ngram, ngram)) if len(checked) else ngram
            keys, doc, _ = ngram_keys(words, counts, n)
            all_keys.append(keys)
            all_owners.append(doc + first)
            lengths |= {n} if len(keys) else set()
            # An item shorter than n: one key of all its words.
            short = np.flatnonzero((counts >= min_ngram) & (counts < n))
            for size in np.unique(counts[short]):
                same = short[counts[short] == size]
                keys, doc, position = ngram_keys(words, counts, int(size))
                whole = np.isin(doc, same) & (position == 0)
                all_keys.append(keys[whole])
                all_owners.append(doc[whole] + first)
                lengths.add(int(size))
            starts.append(first)
            ngram_of.append(n)
            too_short.append(int((counts < min_ngram).sum()))
            first += len(bench.texts)
        keys = np.concatenate(all_keys) if all_keys else np.empty(0, np.uint64)
        owners = np.concatenate(all_owners) if all_owners else np.empty(0, np.int64)
        order = np.argsort(keys, kind="stable")  # stable: an n-gram two items share names the first
        return cls(keys[order], owners[order], sorted(lengths, reverse=True), starts, ngram_of, too_short)

    def locate(self, item: int) -> tuple[int, int]:
        """(benchmark number, item number within it) of a global item number."""
        bench = bisect.bisect_right(self.starts, item) - 1
        return bench, item - self.starts[bench]

    def match(self, texts: Sequence[str]) -> list[Match | None]:
        """For each text, the first run of words (longest length first, then in text
        order) that the index holds, or None."""
        out: list[Match | None] = [None] * len(texts)
        if not len(self.keys):
            return out
        shift = np.uint64(64 - self.bits)
        for start, end in text_batches(texts, TEXTS_PER_BATCH, CHARS_PER_BATCH):
            words, counts = word_hashes(texts[start:end])
            for length in self.lengths:
                keys, doc, position = ngram_keys(words, counts, length)
                maybe = np.flatnonzero(self.bitmap[keys >> shift])
                at = np.minimum(np.searchsorted(self.keys, keys[maybe]), len(self.keys) - 1)
                found = self.keys[at] == keys[maybe]
                hits, at = maybe[found], at[found]
                docs, first = np.unique(doc[hits], return_index=True)  # each text's first hit
                for d, i, a in zip(docs.tolist(), hits[first].tolist(), at[first].tolist()):
                    if out[start + d] is None:
                        out[start + d] = Match(int(self.owners[a]), int(position[i]), length)
        return out

    # -- cache --------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"lengths": self.lengths, "starts": self.starts, "ngram_of": self.ngram_of, "too_short": self.too_short}
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, keys=self.keys, owners=self.owners, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "NgramIndex":
        with np.load(path) as data:
            meta = json.loads(data["meta"].tobytes())
            return cls(data["keys"], data["owners"], meta["lengths"], meta["starts"], meta["ngram_of"], meta["too_short"])


_WORD = re.compile(r"[^\W_]+")  # a word as `normalise` and word_hashes read one


def words_at(text: str, position: int, length: int) -> list[str]:
    """The normalised words `position` to `position + length` of `text` (a Match's words)."""
    return [m.group(0) for m in itertools.islice(_WORD.finditer(text.lower()), position, position + length)]


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
