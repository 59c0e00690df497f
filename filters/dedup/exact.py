"""Exact duplicates: the same text once case, whitespace and punctuation are folded."""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np

from factory.core.record import Record
from filters.base import Stage, TextConfig
from filters.dedup.minhash_signing import digest


class ExactDedup(Stage):
    name = "exact_dedup"
    adds_metadata = frozenset({"exact_duplicates"})

    class Config(TextConfig):
        pass

    def process(self, records: Iterable[Record]) -> Iterator[Record]:
        cluster = self.context.cluster if self.context else None
        if cluster is not None:
            from filters.dedup.exact_ray import exact_dedup_on_ray

            yield from exact_dedup_on_ray(self, records, self.context.out_dir / ".exact-work", cluster.ray())
            return
        # Decided in one pass, dropped after it: each drop names its cluster's size.
        records = list(records)
        self.config.check_fields(records, self.where)
        first: dict[bytes, int] = {}
        kept_as = np.array([first.setdefault(digest(self.config.text(r)), i) for i, r in enumerate(records)],
                           dtype=np.int64)
        yield from self.apply_decisions(records, kept_as, lambda i: records[i].id)

    def apply_decisions(self, records: Iterable[Record], kept_as: np.ndarray, id_of: Callable[[int], str]) -> Iterator[Record]:
        """Keep or drop `records` (in index order): `kept_as[i]` is the first record with
        record i's text (i itself for the first)."""
        sizes = np.bincount(kept_as, minlength=len(kept_as)).tolist()
        kept_list = kept_as.tolist()
        for i, record in enumerate(records):
            kept = kept_list[i]
            if kept == i:
                if sizes[i] > 1:
                    record.metadata["exact_duplicates"] = sizes[i] - 1  # copies dropped in its favour
                yield record
            else:
                name = id_of(kept)
                self.drop(record, "exact_duplicate", f"same text as {name}", duplicate_of=name, cluster_size=sizes[kept])
