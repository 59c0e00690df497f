"""Near duplicates: MinHash signatures (signed in bulk) in datasketch's MinHashLSH index.

Records are taken in order (or best judge score first, when scores exist); each one
queries the index of records kept so far. A band collision only nominates a
candidate: the record is dropped when its estimated Jaccard similarity with the
closest kept candidate reaches the threshold, and it names that record.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import os
from typing import Iterable, Iterator, Literal

import numpy as np
from pydantic import Field, model_validator

from factory.record import Record
from filters.base import Stage, TextConfig
from filters.minhash_signing import signing


class Signature:
    """What MinHashLSH reads from a MinHash: its hash values and their count."""

    __slots__ = ("hashvalues",)

    def __init__(self, hashvalues: np.ndarray):
        self.hashvalues = hashvalues

    def __len__(self) -> int:
        return len(self.hashvalues)


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(records, bands) 64-bit keys, the band's number mixed in: two records share a key
    exactly when they share that band's bucket (up to a 2^-64 chance of a false match)."""
    multipliers = (np.random.default_rng(7).integers(0, 2**62, size=(rows,), dtype=np.uint64) << np.uint64(1)) | np.uint64(1)
    banded = sigs[:, : bands * rows].reshape(len(sigs), bands, rows).astype(np.uint64)
    with np.errstate(over="ignore"):
        keys = (banded * multipliers).sum(axis=2, dtype=np.uint64)
        return keys * np.uint64(0x9E3779B97F4A7C15) + np.arange(bands, dtype=np.uint64)


def sharing(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each record and band: whether an earlier record has the same key, and whether a later one does."""
    flat = keys.ravel()
    order = np.argsort(flat, kind="stable")  # equal keys stay in record order
    same = flat[order[1:]] == flat[order[:-1]]
    earlier = np.zeros(len(flat), dtype=bool)
    later = np.zeros(len(flat), dtype=bool)
    earlier[order[1:][same]] = True
    later[order[:-1][same]] = True
    return earlier.reshape(keys.shape), later.reshape(keys.shape)


def bucket_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(records, bands) of MinHashLSH's own bucket keys: each band's hash values, byte-swapped,
    as bytes (`MinHashLSH._byteswap`); `.tolist()` gives the bytes objects."""
    swapped = np.ascontiguousarray(sigs[:, : bands * rows]).byteswap()
    return swapped.view(np.dtype((np.void, rows * sigs.itemsize)))


def _cells(mask: np.ndarray, buckets: np.ndarray):
    """A function giving, for a record's position, the bands `mask` marks and their bucket keys."""
    rows, bands = np.nonzero(mask)
    keys, bands = buckets[rows, bands].tolist(), bands.tolist()
    bounds = np.searchsorted(rows, np.arange(len(mask) + 1)).tolist()
    return lambda pos: zip(bands[bounds[pos]: bounds[pos + 1]], keys[bounds[pos]: bounds[pos + 1]])


@contextlib.contextmanager
def _collector_paused():
    """The walk allocates a few hundred thousand small objects (bucket sets, candidate
    sets) that live until the index is dropped; meanwhile the cyclic collector would
    rescan every object in the process, every record included, several times (a third
    of the walk's time on T0), and find no cycle to free."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class MinHashDedup(Stage):
    name = "minhash_dedup"
    adds_metadata = frozenset({"near_duplicates"})
    index = None  # the MinHashLSH of the last run, for inspection

    class Config(TextConfig):
        threshold: float = Field(0.8, gt=0, le=1)
        num_perm: int = Field(128, ge=16, le=1024)
        ngram: int = Field(5, ge=1, le=32)
        bands: int | None = Field(None, ge=2)
        rows: int | None = Field(None, ge=1)
        keep: Literal["first", "best_score"] = "first"
        seed: int = 1
        workers: int | None = Field(None, ge=1)

        @model_validator(mode="after")
        def _bands_and_rows(self):
            if (self.bands is None) != (self.rows is None):
                raise ValueError("set both bands and rows, or neither")
            if self.bands and self.bands * self.rows > self.num_perm:
                raise ValueError(f"bands x rows = {self.bands * self.rows} exceeds num_perm {self.num_perm}")
            return self

    def _decide(self, order, sigs: np.ndarray, lsh, dropped: dict[int, tuple[int, float]]) -> None:
        """Walk `order`; drop a record when a kept one is at least `threshold` similar.

        The index is datasketch's MinHashLSH, but its insert and query spend Python on
        every band of every record. Its bucket keys are computed here for all records at
        once instead, and only the buckets that can matter are touched: a record reads a
        band's bucket only when an earlier record has the same band, and a kept record
        goes into a band's bucket only when a later record has the same band. A later
        record therefore gets exactly the candidates `lsh.query` would give it had every
        kept record gone in with `lsh.insert`.
        """
        need = int(np.ceil(self.config.threshold * sigs.shape[1] - 1e-9))  # agreeing slots for a drop
        order = np.asarray(order, dtype=np.int64)
        ordered = sigs[order]
        earlier, later = sharing(band_keys(ordered, lsh.b, lsh.r))
        buckets = bucket_keys(ordered, lsh.b, lsh.r)
        reads, writes = _cells(earlier, buckets), _cells(later, buckets)
        tables = lsh.hashtables
        walk = np.flatnonzero(earlier.any(axis=1) | later.any(axis=1))
        for pos, i in zip(walk.tolist(), order[walk].tolist()):
            candidates = set()
            for band, key in reads(pos):
                candidates.update(tables[band].get(key))
            if candidates:
                cand = np.fromiter(candidates, dtype=np.int64, count=len(candidates))
                agree = np.count_nonzero(sigs[cand] == sigs[i], axis=1)
                best = int(agree.argmax())
                if agree[best] >= need:
                    dropped[i] = (int(cand[best]), float(agree[best]) / sigs.shape[1])
                    continue
            for band, key in writes(pos):
                tables[band].insert(key, i)

    def process(self, records: Iterable[Record]) -> Iterator[Record]:
        c = self.config
        records = list(records)
        c.check_fields(records, self.where)
        texts = [c.text(r) for r in records]
        workers = c.workers or min(2, os.cpu_count() or 1)
        with signing(texts, c.num_perm, c.ngram, c.seed, workers) as signed:
            from datasketch import MinHashLSH  # its import (scipy) takes half a second: done while the workers sign

            # Bands tuned for recall (datasketch's equal weights find only ~40% of pairs AT the
            # threshold): a false candidate costs one signature comparison, a missed one a duplicate.
            lsh = MinHashLSH(threshold=c.threshold, num_perm=c.num_perm, weights=(0.05, 0.95),
                             params=(c.bands, c.rows) if c.bands else None)
            sigs = signed()
        del texts
        scores = [r.metadata.get("judge_score") for r in records] if c.keep == "best_score" else []
        if any(s is not None for s in scores):
            order = sorted(range(len(records)), key=lambda i: -(scores[i] if scores[i] is not None else float("-inf")))
        else:
            order = range(len(records))
        dropped: dict[int, tuple[int, float]] = {}
        with _collector_paused():
            self._decide(order, sigs, lsh, dropped)
        self.index = lsh
        sizes = collections.Counter(kept for kept, _ in dropped.values())
        for i, record in enumerate(records):
            if i in dropped:
                kept, similarity = dropped[i]
                self.drop(record, "near_duplicate",
                          f"estimated Jaccard {similarity:.2f} with {records[kept].id}",
                          duplicate_of=records[kept].id, jaccard=round(similarity, 4), cluster_size=sizes[kept] + 1)
            else:
                if sizes[i]:
                    record.metadata["near_duplicates"] = sizes[i]  # records dropped in its favour
                yield record
