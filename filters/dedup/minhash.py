"""Near duplicates: MinHash signatures (signed in bulk), LSH bands, a greedy walk.

Records are taken in order (or best judge score first, when scores exist). A record
sharing an LSH band with a record kept before it is a candidate duplicate of it; it
is dropped when its estimated Jaccard similarity with the closest kept candidate
reaches the threshold, and it names that record (filters/dedup/minhash_decide.py decides,
in whole-array passes, exactly as walking datasketch's MinHashLSH one record at a
time would).
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, Iterator, Literal

import numpy as np
from pydantic import Field, model_validator

from factory.core.record import Record
from filters.base import Stage, TextConfig
from filters.dedup.minhash_decide import decide, lsh_params
from filters.dedup.minhash_signing import signing
from filters.walk_order import walk_order


class MinHashDedup(Stage):
    name = "minhash_dedup"
    adds_metadata = frozenset({"near_duplicates"})

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

    def bands_and_rows(self) -> tuple[int, int]:
        """The LSH bands: as set, or tuned for recall (datasketch's equal weights find only
        ~40% of pairs AT the threshold): a false candidate costs one signature comparison,
        a missed one a duplicate."""
        c = self.config
        return (c.bands, c.rows) if c.bands else lsh_params(c.threshold, c.num_perm, 0.05, 0.95)

    def need(self) -> int:
        """Agreeing slots for a drop."""
        return int(np.ceil(self.config.threshold * self.config.num_perm - 1e-9))

    def process(self, records: Iterable[Record]) -> Iterator[Record]:
        c = self.config
        cluster = self.context.cluster if self.context else None
        if cluster is not None:
            from filters.dedup.minhash_ray import dedup_on_ray

            yield from dedup_on_ray(self, records, self.context.out_dir / ".minhash-work", cluster.ray())
            return
        records = list(records)
        c.check_fields(records, self.where)
        texts = [c.text(r) for r in records]
        workers = c.workers or min(2, os.cpu_count() or 1)
        with signing(texts, c.num_perm, c.ngram, c.seed, workers) as signed:
            sigs = signed()
        del texts
        scores = [r.metadata.get("judge_score") for r in records] if c.keep == "best_score" else []
        bands, rows = self.bands_and_rows()
        named, agree = decide(sigs, np.asarray(walk_order(scores, len(records)), dtype=np.int64), bands, rows, self.need())
        yield from self.apply_decisions(records, named, agree, lambda i: records[i].id)

    def apply_decisions(self, records: Iterable[Record], named: np.ndarray, agree: np.ndarray,
                 id_of: Callable[[int], str]) -> Iterator[Record]:
        """Keep or drop `records` (in index order) by the decisions: `named[i]` is the record
        record i is dropped for (-1: kept), `agree[i]` their agreeing slots."""
        slots = self.config.num_perm
        sizes = np.bincount(named[named >= 0], minlength=len(named)).tolist()  # drops in each one's favour
        named_list, agree_list = named.tolist(), agree.tolist()
        for i, record in enumerate(records):
            kept = named_list[i]
            if kept >= 0:
                similarity = agree_list[i] / slots
                self.drop(record, "near_duplicate", f"estimated Jaccard {similarity:.2f} with {id_of(kept)}",
                          duplicate_of=id_of(kept), jaccard=round(similarity, 4), cluster_size=sizes[kept] + 1)
            else:
                if sizes[i]:
                    record.metadata["near_duplicates"] = sizes[i]
                yield record
