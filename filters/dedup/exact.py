"""Exact duplicates: the same text once case, whitespace and punctuation are folded.

Decided in one pass over the whole input: the records stream into part files on disk
(filters/ray_parts.py) while their text digests collect, 16 bytes a record; the
digests give each record the first record with its text; the parts are read back to
keep or drop each one. Memory holds a few numbers per record, never the records.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np

from factory.core.record import Record
from filters.base import Stage, TextConfig
from filters.dedup.exact_ray import copies_of, digest_halves, exact_dedup_on_ray
from filters.dedup.minhash_signing import digest
from filters.ray_parts import PART_RECORDS, ids, read_back, spill, work_folder


class ExactDedup(Stage):
    name = "exact_dedup"
    adds_metadata = frozenset({"exact_duplicates"})

    class Config(TextConfig):
        pass

    def process(self, records: Iterable[Record]) -> Iterator[Record]:
        cluster = self.context.cluster if self.context else None
        if cluster is not None:
            yield from exact_dedup_on_ray(self, records, self.context.out_dir / ".exact-work", cluster.ray())
            return
        c = self.config
        with work_folder(self, "exact") as work:
            digests = bytearray()
            count, _, witnesses = spill(records, work, PART_RECORDS, False, c.fields or (),
                                        each=lambda r: digests.extend(digest(c.text(r))))
            c.check_fields(witnesses, self.where)
            halves = digest_halves(bytes(digests))
            digests.clear()  # the halves hold them now
            kept_as = np.arange(count, dtype=np.int64)
            copies, firsts = copies_of(halves[:, 0], halves[:, 1], np.arange(count, dtype=np.int64))
            kept_as[copies] = firsts
            parts = -(-count // PART_RECORDS)
            yield from self.apply_decisions(read_back(work, parts), kept_as,
                                            ids(work, parts, np.unique(firsts)).__getitem__)

    def apply_decisions(self, records: Iterable[Record], kept_as: np.ndarray, id_of: Callable[[int], str]) -> Iterator[Record]:
        """Keep or drop `records` (in index order): `kept_as[i]` is the first record with
        record i's text (i itself for the first)."""
        sizes = np.bincount(kept_as, minlength=len(kept_as))
        for i, record in enumerate(records):
            kept = int(kept_as[i])
            if kept == i:
                if sizes[i] > 1:
                    record.metadata["exact_duplicates"] = int(sizes[i]) - 1  # copies dropped in its favour
                yield record
            else:
                name = id_of(kept)
                self.drop(record, "exact_duplicate", f"same text as {name}", duplicate_of=name,
                          cluster_size=int(sizes[kept]))

