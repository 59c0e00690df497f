"""Exact dedup on a Ray cluster by hash partitioning, with the single-process decisions.

The records go into parts (filters/ray_parts.py); a Ray task per part writes each
record's text digest into one of P partitions chosen by the digest; a task per
partition finds, for every digest, its first record (the smallest index) and writes
the copies with their first; the driver, holding one number per record, reads the
parts back in order and keeps the first of each text. Equal texts meet in one
partition, so each partition decides alone and the decisions are the one-process ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from factory.core.record import Record
from filters.dedup.minhash_signing import digest
from filters.ray_parts import (
    PART_RECORDS,
    ids,
    memory,
    note_memory,
    read_back,
    read_part,
    save,
    spill,
)


def exact_dedup_on_ray(stage, records: Iterable[Record], work: Path, ray: Any,
                       part_records: int = PART_RECORDS) -> Iterator[Record]:
    import shutil

    c = stage.config
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        count, _, witnesses = spill(records, work, part_records, False, c.fields or ())
        c.check_fields(witnesses, stage.where)
        if not count:
            return
        parts = -(-count // part_records)
        partitions = max(1, parts)
        hashing = ray.remote(num_cpus=1)(digest_part)
        note_memory(stage, ray.get([hashing.remote(str(work), p, part_records, c, partitions) for p in range(parts)]))
        firsts = ray.remote(num_cpus=1)(first_of_partition)
        note_memory(stage, ray.get([firsts.remote(str(work), b, parts) for b in range(partitions)]))
        kept_as = np.arange(count, dtype=np.int64)
        for b in range(partitions):
            copies = np.load(work / f"copies-{b}.npy")
            kept_as[copies[0]] = copies[1]
        yield from stage.apply_decisions(read_back(work, parts), kept_as,
                                  ids(work, parts, np.unique(kept_as[kept_as != np.arange(count)])).__getitem__)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def digest_part(work: str, part: int, part_records: int, config, partitions: int) -> dict:
    """A Ray task: each record's digest (two 64-bit halves) and index, by partition."""
    work_dir = Path(work)
    halves = digest_halves(b"".join(digest(config.text(r)) for r in read_part(work_dir, part)))
    index = np.arange(part * part_records, part * part_records + len(halves), dtype=np.int64)
    partition = halves[:, 0].view(np.uint64) % np.uint64(partitions)
    for b in range(partitions):
        mine = partition == b
        save(work_dir / f"digests-{part}-{b}.npy", np.stack([halves[mine, 0], halves[mine, 1], index[mine]]))
    return memory()


def first_of_partition(work: str, partition: int, parts: int) -> dict:
    """A Ray task: the records of one partition whose text an earlier record has, with
    that first record's index, to `copies-B.npy` (2 x copies)."""
    work_dir = Path(work)
    both = np.concatenate([np.load(work_dir / f"digests-{p}-{partition}.npy") for p in range(parts)], axis=1)
    save(work_dir / f"copies-{partition}.npy", copies_of(*both))
    return memory()


def digest_halves(raw: bytes) -> np.ndarray:
    """Records' 16-byte digests, end to end, as two signed 64-bit halves a row."""
    return np.frombuffer(raw, dtype=np.uint64).reshape(-1, 2).view(np.int64)


def copies_of(high: np.ndarray, low: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Of the records `index` with digests (`high`, `low`), those whose digest an earlier
    record has: 2 x copies, their indexes and the first (smallest) index with their digest."""
    order = np.lexsort((index, low, high))  # by digest, then index: each group's first is its smallest
    high, low, index = high[order], low[order], index[order]
    starts = np.ones(len(index), dtype=bool)
    starts[1:] = (high[1:] != high[:-1]) | (low[1:] != low[:-1])
    group_first = index[np.flatnonzero(starts)][np.cumsum(starts) - 1]
    copies = group_first != index
    return np.stack([index[copies], group_first[copies]])
