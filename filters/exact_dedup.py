"""Exact duplicates: the same text once case, whitespace and punctuation are folded."""

from __future__ import annotations

import hashlib
from typing import Iterable, Iterator

from factory.record import Record
from filters.base import Stage, record_text
from filters.minhash_signing import normalise


class ExactDedup(Stage):
    name = "exact_dedup"

    class Config(Stage.Config):
        roles: list[str] | None = None

    def process(self, records: Iterable[Record]) -> Iterator[Record]:
        first: dict[bytes, str] = {}
        for record in records:
            digest = hashlib.blake2b(normalise(record_text(record, self.config.roles)).encode(), digest_size=16).digest()
            kept = first.setdefault(digest, record.id)
            if kept == record.id:
                yield record
            else:
                self.drop(record, "exact_duplicate", f"same text as {kept}", duplicate_of=kept)
