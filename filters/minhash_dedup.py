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

    def _decide(self, order, sigs: np.ndarray, lsh, dropped: dict[int, tuple[int, float]]) -> None:
        threshold = self.config.threshold
        for i in order:
            sig = sigs[i]
            candidates = lsh.query(_Signature(sig))
            if candidates:
                cand = np.fromiter(candidates, dtype=np.int64, count=len(candidates))
                similarity = (sigs[cand] == sig).mean(axis=1)
                best = int(np.argmax(similarity))
                if similarity[best] >= threshold:
                    dropped[i] = (int(cand[best]), float(similarity[best]))
                    continue
            lsh.insert(i, _Signature(sig), check_duplication=False)

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
        scores = [r.metadata.get("judge_score") for r in records] if c.keep == "best_score" else []
        by_score = any(s is not None for s in scores)
        for start, chunk in signatures_parallel(texts, c.num_perm, c.ngram, c.seed, workers):
            sigs[start: start + len(chunk)] = chunk
            if not by_score:  # index this chunk while the workers sign the next ones
                self._decide(range(start, start + len(chunk)), sigs, lsh, dropped)
        del texts
        if by_score:
            order = sorted(range(len(records)), key=lambda i: -(scores[i] if scores[i] is not None else float("-inf")))
            self._decide(order, sigs, lsh, dropped)
        for i, record in enumerate(records):
            if i in dropped:
                kept, similarity = dropped[i]
                self.drop(record, "near_duplicate",
                          f"estimated Jaccard {similarity:.2f} with {records[kept].id}",
                          duplicate_of=records[kept].id, jaccard=round(similarity, 4))
            else:
                yield record
