"""MinHash dedup on a Ray cluster, as disk-based stages with the single-process decisions.

The driver holds a few numbers per record, never the records or their signatures:

1. spill: the records stream into part files (JSON lines) in a work folder on the
   shared filesystem, `PART_RECORDS` a part;
2. sign (a Ray task per part): signatures to `sigs-P.npy`; band keys split by key
   into `buckets` partitions, `band-P-B.npy`; each signature's key to `keys-P.npy`;
3. copies (driver): identical signatures grouped by key (8 bytes a record);
4. buckets (a Ray task per partition): the candidate pairs of first copies, from
   sorted band keys, to `pairs-B.npy`;
5. walk (driver): filters/dedup/minhash_decide.py's rounds over the candidate pairs,
   reading the signatures it compares from the memory-mapped part files;
6. filter: the parts are read back in order and each record kept or dropped.

Every step is the single-process step on a slice, so the decisions are the same.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from factory.core.record import Record
from filters.dedup.minhash_decide import (
    agreement,
    band_keys,
    candidate_pairs,
    first_copies,
    in_index_order,
    resolve,
    run_starts,
    signature_keys,
)
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
from filters.walk_order import walk_order


def dedup_on_ray(stage, records: Iterable[Record], work: Path, ray: Any,
                 part_records: int = PART_RECORDS) -> Iterator[Record]:
    """The MinHashDedup stage's decisions for `records`, computed on Ray; yields the kept
    records in order and drops the rest through the stage (as `process` does)."""
    c = stage.config
    bands, rows = stage.bands_and_rows()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        count, scores, witnesses = spill(records, work, part_records, c.keep == "best_score", c.fields or ())
        c.check_fields(witnesses, stage.where)
        if not count:
            return
        parts = -(-count // part_records)
        order = walk_order(scores, count)
        np.save(work / "rank.npy", np.argsort(order))  # record index -> walk position
        buckets = max(1, parts)
        sign = ray.remote(num_cpus=1)(sign_part)
        note_memory(stage, ray.get([sign.remote(str(work), p, part_records, c, bands, rows, buckets)
                                     for p in range(parts)]))

        signatures = Signatures(work, parts, part_records)
        keys = np.concatenate([np.load(work / f"keys-{p}.npy") for p in range(parts)])[order]
        first = first_copies(keys, lambda a, b: (signatures.rows(order[a]) == signatures.rows(order[b])).all(axis=1))
        del keys
        np.save(work / "leaders.npy", first == np.arange(count))
        pairs = ray.remote(num_cpus=1)(bucket_pairs)
        note_memory(stage, ray.get([pairs.remote(str(work), b, parts) for b in range(buckets)]))
        codes = np.sort(np.concatenate([np.load(work / f"pairs-{b}.npy") for b in range(buckets)]))
        codes = codes[run_starts(codes)]  # a pair sharing bands in two partitions, once
        earlier, later = codes >> 32, codes & 0xFFFFFFFF
        del codes

        def compare(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return agreement(signatures.rows(order[a]), signatures.rows(order[b]), bands, rows)

        named, agree = in_index_order(order, *resolve(first, earlier, later, compare, stage.need(), c.num_perm))
        del earlier, later, first
        named_ids = ids(work, parts, np.unique(named[named >= 0]))
        yield from stage.apply_decisions(read_back(work, parts), named, agree, named_ids.__getitem__)
    finally:
        shutil.rmtree(work, ignore_errors=True)


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
    from filters.dedup.minhash_signing import signatures

    work_dir = Path(work)
    texts = [config.text(r) for r in read_part(work_dir, part)]
    sigs = signatures(texts, config.num_perm, config.ngram, config.seed)
    del texts
    rank = np.load(work_dir / "rank.npy", mmap_mode="r")
    first_index = part * part_records
    positions = np.asarray(rank[first_index: first_index + len(sigs)], dtype=np.int64)
    keys = band_keys(sigs, bands, rows)
    save(work_dir / f"sigs-{part}.npy", sigs)
    save(work_dir / f"keys-{part}.npy", signature_keys(sigs, keys, rows))
    flat_keys, flat_positions = keys.ravel(), np.repeat(positions, bands)
    partition = (flat_keys >> np.uint64(40)) % np.uint64(buckets)
    for b in range(buckets):
        mine = partition == b
        save(work_dir / f"band-{part}-{b}.npy", np.stack([flat_keys[mine].view(np.int64), flat_positions[mine]]))
    return memory()


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
    save(work_dir / f"pairs-{bucket}.npy", earlier << 32 | later)
    return memory()


