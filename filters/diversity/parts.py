"""The diversity stage's input on disk, so that its driver does not hold it.

The records stream into part files (filters/ray_parts.py) and, in the same pass, their
texts are embedded a chunk at a time (from the cache where it has them) into one file
of float32 rows, memory-mapped afterwards: the selection reads the rows it works on,
and what the process holds per record is its judge score and a few numbers of the
selection, not the record and its 1.5 KiB vector. At 10M records the vectors are 15
GiB of a file the page cache serves, not of the heap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from factory.core.record import Record
from filters.ray_parts import PART_RECORDS, spill

EMBED_CHUNK = 8192  # texts looked up in the cache, and embedded, at a time


@dataclass
class Spilled:
    count: int
    parts: int
    scores: list              # each record's judge score (None when it has none)
    witnesses: list[Record]   # for the field check (ray_parts.spill)
    vectors: np.ndarray       # (count, dim) float32, memory-mapped (copy on write)
    embedded: int             # vectors computed, not found in the cache


def spill_and_embed(records: Iterable[Record], work: Path, text: Callable[[Record], str],
                    embed: Callable[[list[str]], tuple[np.ndarray, int]], fields: Iterable[str],
                    part_records: int = PART_RECORDS) -> Spilled:
    """`records` into parts under `work`, and `embed(texts) -> (vectors, computed)` of
    their texts into `work/vectors.f32`, in one pass."""
    path = work / "vectors.f32"
    texts: list[str] = []
    dim, embedded = 0, 0
    with open(path, "wb") as out:
        def flush() -> None:
            nonlocal dim, embedded
            if texts:
                vectors, computed = embed(texts)
                out.write(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
                dim, embedded = vectors.shape[1], embedded + computed
                texts.clear()

        def each(record: Record) -> None:
            texts.append(text(record))
            if len(texts) >= EMBED_CHUNK:
                flush()

        count, scores, witnesses = spill(records, work, part_records, True, fields, each)
        flush()
    vectors = (np.memmap(path, dtype=np.float32, mode="c", shape=(count, dim)) if count
               else np.empty((0, 0), dtype=np.float32))
    return Spilled(count, -(-count // part_records), scores, witnesses, vectors, embedded)
