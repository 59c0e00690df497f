"""Near duplicates: MinHash signatures (signed in bulk) in datasketch's MinHashLSH index.

Records are taken in order (or best judge score first, when scores exist); each one
queries the index of records kept so far. A band collision only nominates a
candidate: the record is dropped when its estimated Jaccard similarity with the
closest kept candidate reaches the threshold, and it names that record.
"""

from __future__ import annotations

import os
from typing import Iterable, Iterator, Literal

import numpy as np
from pydantic import Field, model_validator

from factory.record import Record
from filters.base import Stage, record_text
from filters.minhash_signing import signatures_parallel


class _Signature:
    """What MinHashLSH reads from a MinHash: its hash values and their count."""

    __slots__ = ("hashvalues",)

    def __init__(self, hashvalues: np.ndarray):
        self.hashvalues = hashvalues

    def __len__(self) -> int:
        return len(self.hashvalues)


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> list[tuple[int, ...]]:
    """One 64-bit key per band of each signature, the band's number mixed in.

    Two records share a key exactly when datasketch would put them in the same bucket
    of that band (up to a 2^-64 chance of a false match, which only costs a query).
    """
    multipliers = (np.random.default_rng(7).integers(0, 2**62, size=(rows,), dtype=np.uint64) << np.uint64(1)) | np.uint64(1)
    banded = sigs[:, : bands * rows].reshape(len(sigs), bands, rows).astype(np.uint64)
    with np.errstate(over="ignore"):
        keys = (banded * multipliers).sum(axis=2, dtype=np.uint64)
        keys = keys * np.uint64(0x9E3779B97F4A7C15) + np.arange(bands, dtype=np.uint64)
    return list(map(tuple, keys.tolist()))


class MinHashDedup(Stage):
    name = "minhash_dedup"

    class Config(Stage.Config):
        threshold: float = Field(0.8, gt=0, le=1)
        num_perm: int = Field(128, ge=16, le=1024)
        ngram: int = Field(5, ge=1, le=32)
        bands: int | None = Field(None, ge=2)
        rows: int | None = Field(None, ge=1)
        roles: list[str] | None = None
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

    def _decide(self, order, sigs: np.ndarray, lsh, dropped: dict[int, tuple[int, float]], owners: dict) -> None:
        """Walk `order`; drop a record when a kept one is at least `threshold` similar.

        `owners` maps each band key of a kept record to the kept records holding it. A
        record none of whose bands any kept record shares cannot have a candidate, so it
        skips the index query; and a kept record enters the index only when a later
        record shares one of its bands, since no query could return it before then.
        The index (datasketch's MinHashLSH) answers every query that can find anything.
        """
        need = int(np.ceil(self.config.threshold * sigs.shape[1] - 1e-9))  # agreeing slots for a drop
        order = np.asarray(order, dtype=np.int64)
        keys = band_keys(sigs[order], lsh.b, lsh.r)
        indexed = self._indexed
        held = owners.keys()
        for i, record_keys in zip(order.tolist(), keys):
            if not held.isdisjoint(record_keys):
                for k in record_keys:
                    for d in owners.get(k, ()):
                        if d not in indexed:
                            lsh.insert(d, _Signature(sigs[d]), check_duplication=False)
                            indexed.add(d)
                sig = sigs[i]
                candidates = lsh.query(_Signature(sig))
                if candidates:
                    cand = np.fromiter(candidates, dtype=np.int64, count=len(candidates))
                    agree = np.count_nonzero(sigs[cand] == sig, axis=1)
                    best = int(np.argmax(agree))
                    if agree[best] >= need:
                        dropped[i] = (int(cand[best]), float(agree[best]) / sigs.shape[1])
                        continue
            for k in record_keys:
                owners.setdefault(k, []).append(i)

    def process(self, records: Iterable[Record]) -> Iterator[Record]:
        from datasketch import MinHashLSH

        c = self.config
        records = list(records)
        texts = [record_text(r, c.roles) for r in records]
        workers = c.workers or min(2, os.cpu_count() or 1)
        sigs = np.empty((len(records), c.num_perm), dtype=np.uint32)
        # Bands tuned for recall (datasketch's equal weights find only ~40% of pairs AT the
        # threshold): a false candidate costs one signature comparison, a missed one a duplicate.
        lsh = MinHashLSH(threshold=c.threshold, num_perm=c.num_perm, weights=(0.05, 0.95),
                         params=(c.bands, c.rows) if c.bands else None)
        dropped: dict[int, tuple[int, float]] = {}
        owners: dict[int, list[int]] = {}
        self._indexed: set[int] = set()
        scores = [r.metadata.get("judge_score") for r in records] if c.keep == "best_score" else []
        by_score = any(s is not None for s in scores)
        for start, chunk in signatures_parallel(texts, c.num_perm, c.ngram, c.seed, workers):
            sigs[start: start + len(chunk)] = chunk
            if not by_score:  # index this chunk while the workers sign the next ones
                self._decide(range(start, start + len(chunk)), sigs, lsh, dropped, owners)
        del texts
        if by_score:
            order = sorted(range(len(records)), key=lambda i: -(scores[i] if scores[i] is not None else float("-inf")))
            self._decide(order, sigs, lsh, dropped, owners)
        for i, record in enumerate(records):
            if i in dropped:
                kept, similarity = dropped[i]
                self.drop(record, "near_duplicate",
                          f"estimated Jaccard {similarity:.2f} with {records[kept].id}",
                          duplicate_of=records[kept].id, jaccard=round(similarity, 4))
            else:
                yield record
