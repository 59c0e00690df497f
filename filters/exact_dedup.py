"""Exact duplicates: the same text once case, whitespace and punctuation are folded."""

from __future__ import annotations

import collections
import hashlib
from typing import Iterable, Iterator

from factory.record import Record
from filters.base import Stage, TextConfig
from filters.minhash_signing import normalise


class ExactDedup(Stage):
    name = "exact_dedup"
    adds_metadata = frozenset({"exact_duplicates"})

    class Config(TextConfig):
        pass

    def process(self, records: Iterable[Record]) -> Iterator[Record]:
        # Decided in one pass, dropped after it: each drop names its cluster's size.
        records = list(records)
        self.config.check_fields(records, self.where)
        first: dict[bytes, str] = {}
        kept_as = []
        for record in records:
            digest = hashlib.blake2b(normalise(self.config.text(record)).encode(), digest_size=16).digest()
            kept_as.append(first.setdefault(digest, record.id))
        sizes = collections.Counter(kept_as)
        for record, kept in zip(records, kept_as):
            if kept == record.id:
                if sizes[kept] > 1:
                    record.metadata["exact_duplicates"] = sizes[kept] - 1  # copies dropped in its favour
                yield record
            else:
                self.drop(record, "exact_duplicate", f"same text as {kept}", duplicate_of=kept, cluster_size=sizes[kept])
