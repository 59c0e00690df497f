"""MinHash dedup on a Ray cluster, as disk-based stages with the single-process decisions.

The driver holds a few numbers per record, never the records or their signatures:

1. spill: the records stream into part files (JSON lines) in a work folder on the
   shared filesystem, `PART_RECORDS` a part;
2. sign (a Ray task per part): signatures to `sigs-P.npy`; band keys split by key
   into `buckets` partitions, `band-P-B.npy`; each signature's key to `keys-P.npy`;
3. copies (driver): identical signatures grouped by key (8 bytes a record);
4. buckets (a Ray task per partition): the candidate pairs of first copies, from
   sorted band keys, to `pairs-B.npy`;
5. walk (driver): filters/minhash_decide.py's rounds over the candidate pairs,
   reading the signatures it compares from the memory-mapped part files;
6. filter: the parts are read back in order and each record kept or dropped.

Every step is the single-process step on a slice, so the decisions are the same.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from factory.record import Record
from filters.base import field_value
from filters.minhash_decide import (agreement, band_keys, candidate_pairs, first_copies, in_index_order, resolve,
                                    run_starts, signature_keys)

PART_RECORDS = 50_000  # records a signing task reads (~25 MiB of signatures at 128 slots)


def dedup_on_ray(stage, records: Iterable[Record], work: Path, ray: Any,
                 part_records: int = PART_RECORDS) -> Iterator[Record]:
    """The MinHashDedup stage's decisions for `records`, computed on Ray; yields the kept
    records in order and drops the rest through the stage (as `process` does)."""
    c = stage.config
    bands, rows = stage.bands_and_rows()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        count, scores, witnesses = _spill(records, work, part_records, c.keep == "best_score", c.fields or ())
        c.check_fields(witnesses, stage.where)
        if not count:
            return
        parts = -(-count // part_records)
        order = _walk_order(scores, count)
        np.save(work / "rank.npy", np.argsort(order))  # record index -> walk position
        buckets = max(1, parts)
        sign = ray.remote(num_cpus=1)(sign_part)
        _note_memory(stage, ray.get([sign.remote(str(work), p, part_records, c, bands, rows, buckets)
                                     for p in range(parts)]))

        signatures = Signatures(work, parts, part_records)
        keys = np.concatenate([np.load(work / f"keys-{p}.npy") for p in range(parts)])[order]
        first = first_copies(keys, lambda a, b: (signatures.rows(order[a]) == signatures.rows(order[b])).all(axis=1))
        del keys
        np.save(work / "leaders.npy", first == np.arange(count))
        pairs = ray.remote(num_cpus=1)(bucket_pairs)
        _note_memory(stage, ray.get([pairs.remote(str(work), b, parts) for b in range(buckets)]))
        codes = np.sort(np.concatenate([np.load(work / f"pairs-{b}.npy") for b in range(buckets)]))
        codes = codes[run_starts(codes)]  # a pair sharing bands in two partitions, once
        earlier, later = codes >> 32, codes & 0xFFFFFFFF
        del codes

        def compare(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return agreement(signatures.rows(order[a]), signatures.rows(order[b]), bands, rows)

        named, agree = in_index_order(order, *resolve(first, earlier, later, compare, stage.need(), c.num_perm))
        del earlier, later, first
        named_ids = _ids(work, parts, np.unique(named[named >= 0]))
        yield from stage.verdicts(_read_back(work, parts), named, agree, named_ids.__getitem__)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _spill(records: Iterable[Record], work: Path, part_records: int, scored: bool,
           fields: Iterable[str]) -> tuple[int, list, list[Record]]:
    """Write the records into parts; returns their count, their judge scores (when the
    walk needs them) and, for the field check, the first record and the first record
    having each of `fields` (no witness for a field: no record has it)."""
    count, scores, out, witnesses, missing = 0, [], None, [], set(fields)
    try:
        for record in records:
            if not witnesses:
                witnesses.append(record)
            for path in [p for p in missing if field_value(record.metadata, p) is not None]:
                missing.discard(path)
                witnesses.append(record)
            if count % part_records == 0:
                if out:
                    out.close()
                out = open(work / f"part-{count // part_records}.jsonl", "w", encoding="utf-8")
            out.write(json.dumps(record.to_row(), ensure_ascii=False) + "\n")
            if scored:
                scores.append(record.metadata.get("judge_score"))
            count += 1
    finally:
        if out:
            out.close()
    return count, scores, witnesses


def _walk_order(scores: list, count: int) -> np.ndarray:
    """Record indexes in walk order: as they came, or best judge score first (stable)."""
    if any(s is not None for s in scores):
        values = np.array([-(s if s is not None else -np.inf) for s in scores], dtype=float)
        return np.argsort(values, kind="stable")
    return np.arange(count)


def _read_part(path: Path) -> Iterator[Record]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield Record.from_row(json.loads(line))


def _read_back(work: Path, parts: int) -> Iterator[Record]:
    for p in range(parts):
        yield from _read_part(work / f"part-{p}.jsonl")


def _ids(work: Path, parts: int, wanted: np.ndarray) -> dict[int, str]:
    """The ids of the records at `wanted` indexes (the ones drops name)."""
    wanted_set, ids, index = set(wanted.tolist()), {}, 0
    for p in range(parts):
        with open(work / f"part-{p}.jsonl", encoding="utf-8") as f:
            for line in f:
                if index in wanted_set:
                    ids[index] = json.loads(line)["id"]
                index += 1
    return ids


class Signatures:
    """Rows of the signature part files, memory-mapped: only the rows asked for are read."""

    def __init__(self, work: Path, parts: int, part_records: int):
        self.maps = [np.load(work / f"sigs-{p}.npy", mmap_mode="r") for p in range(parts)]
        self.part_records = part_records

    def rows(self, index: np.ndarray) -> np.ndarray:
        out = np.empty((len(index), self.maps[0].shape[1]), dtype=np.uint32)
        part, offset = np.divmod(index, self.part_records)
        for p in np.unique(part).tolist():
            mine = part == p
            out[mine] = self.maps[p][offset[mine]]
        return out


def sign_part(work: str, part: int, part_records: int, config, bands: int, rows: int, buckets: int) -> dict:
    """A Ray task: sign one part; write its signatures, signature keys and band keys by
    bucket partition (positions are walk positions)."""
    from filters.minhash_signing import signatures

    work_dir = Path(work)
    texts = [config.text(r) for r in _read_part(work_dir / f"part-{part}.jsonl")]
    sigs = signatures(texts, config.num_perm, config.ngram, config.seed)
    del texts
    rank = np.load(work_dir / "rank.npy", mmap_mode="r")
    first_index = part * part_records
    positions = np.asarray(rank[first_index: first_index + len(sigs)], dtype=np.int64)
    keys = band_keys(sigs, bands, rows)
    _save(work_dir / f"sigs-{part}.npy", sigs)
    _save(work_dir / f"keys-{part}.npy", signature_keys(sigs, keys, rows))
    flat_keys, flat_positions = keys.ravel(), np.repeat(positions, bands)
    partition = (flat_keys >> np.uint64(40)) % np.uint64(buckets)
    for b in range(buckets):
        mine = partition == b
        _save(work_dir / f"band-{part}-{b}.npy", np.stack([flat_keys[mine].view(np.int64), flat_positions[mine]]))
    return _memory()


def bucket_pairs(work: str, bucket: int, parts: int) -> dict:
    """A Ray task: the candidate pairs (earlier << 32 | later, walk positions) of first
    copies sharing a band key in one partition, to `pairs-B.npy`."""
    work_dir = Path(work)
    leaders = np.load(work_dir / "leaders.npy", mmap_mode="r")
    blocks = [np.load(work_dir / f"band-{p}-{bucket}.npy") for p in range(parts)]
    both = np.concatenate(blocks, axis=1) if blocks else np.empty((2, 0), dtype=np.int64)
    keys, positions = both[0], both[1]
    mine = np.asarray(leaders[positions], dtype=bool)
    keys, positions = keys[mine], positions[mine]
    by_position = np.argsort(positions, kind="stable")  # candidate_pairs wants positions ascending
    earlier, later = candidate_pairs(keys[by_position], positions[by_position])
    _save(work_dir / f"pairs-{bucket}.npy", earlier << 32 | later)
    return _memory()


def _memory() -> dict:
    """A task's worker process and its peak resident memory so far, in bytes."""
    import os
    import resource

    return {"pid": os.getpid(), "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def _note_memory(stage, reports: list[dict]) -> None:
    """The peak RSS of each worker process the stage used, on the stage (`worker_memory`)."""
    memory = getattr(stage, "worker_memory", {})
    for report in reports:
        memory[report["pid"]] = max(memory.get(report["pid"], 0), report["peak_rss"])
    stage.worker_memory = memory


def _save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    tmp.replace(path)
