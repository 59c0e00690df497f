"""One input of a comparison, read as a stream: what is counted over every row, and a
seeded uniform sample of its texts, which is all that is held.

The sample is a reservoir (Vitter's algorithm R) drawn with a fixed seed, so the same
file in the same order gives the same sample; both sides are then cut to one size.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from factory.compare.text_stats import NGRAM_SIZES, record_distinct, words
from factory.core.errors import InputDataError
from factory.core.record import Record


@dataclass
class Side:
    path: str
    rows: int = 0
    empty: int = 0  # records with no text in the compared roles
    lengths: collections.Counter = field(default_factory=collections.Counter)  # words -> records
    # n -> {a record's distinct-n share, to 2 decimals: records}; records shorter than n are left out
    distinct: dict[int, collections.Counter] = field(
        default_factory=lambda: {n: collections.Counter() for n in NGRAM_SIZES})
    sample: list[tuple[int, str]] = field(default_factory=list)  # (row number, text), in reservoir order

    def add(self, text: str, size: int, rng: random.Random) -> None:
        tokens = words(text)
        self.lengths[len(tokens)] += 1
        self.empty += not tokens
        for n in NGRAM_SIZES:
            share = record_distinct(tokens, n)
            if share is not None:
                self.distinct[n][round(share, 2)] += 1
        if len(self.sample) < size:
            self.sample.append((self.rows, text))
        else:
            slot = rng.randrange(self.rows + 1)
            if slot < size:
                self.sample[slot] = (self.rows, text)
        self.rows += 1

    def texts(self, n: int, seed: int) -> list[str]:
        """`n` texts of the sample, drawn with `seed` when the sample is larger, in row order."""
        chosen = self.sample if n >= len(self.sample) else random.Random(seed).sample(self.sample, n)
        return [text for _, text in sorted(chosen)]


def read_side(path: Path, records: Iterable[tuple[str, Record]], text: Callable[[Record], str], size: int,
              seed: int, roles: str = "every role but system") -> Side:
    side = Side(str(path))
    rng = random.Random(seed)
    for _, record in records:
        side.add(text(record), size, rng)
    if side.rows == 0:
        raise InputDataError(f"{path}: no records to compare")
    if side.empty == side.rows:
        raise InputDataError(f"{path}: no record has any text in the compared roles ({roles})")
    return side
