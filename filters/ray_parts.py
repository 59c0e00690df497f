"""Records in part files on disk, for filter stages that must not hold their input.

Each part is a spool (factory/core/spool.py) of PART_RECORDS records. The driver
streams a stage's records into parts once (`spill`), Ray tasks read the
parts they are given (on a filesystem every node shares), and the driver reads the
parts back in order to keep or drop each record: it never holds the records, only a
few numbers per record. The diversity stage spills its input the same way, in one
process or on Ray.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from factory.core import jsonlines
from factory.core.record import Record
from factory.core.spool import Spool, read_lines, read_records
from filters.base import field_value

PART_RECORDS = 50_000  # records a task reads


def spill(records: Iterable[Record], work: Path, part_records: int, scored: bool,
           fields: Iterable[str], each: Callable[[Record], None] | None = None) -> tuple[int, list, list[Record]]:
    """Write the records into parts; returns their count, their judge scores (when the
    walk needs them) and, for the field check, the first record and the first record
    having each of `fields` (no witness for a field: no record has it). `each` sees every
    record on its way (a stage taking what it needs of them in the same pass)."""
    count, scores, witnesses, missing = 0, [], [], set(fields)
    out: Spool | None = None
    try:
        for record in records:
            if each is not None:
                each(record)
            if not witnesses:
                witnesses.append(record)
            for path in [p for p in missing if field_value(record.metadata, p) is not None]:
                missing.discard(path)
                witnesses.append(record)
            if count % part_records == 0:
                if out:
                    out.seal()
                out = Spool(part_path(work, count // part_records))
            out.add(record.to_row())
            if scored:
                scores.append(record.metadata.get("judge_score"))
            count += 1
    finally:
        if out:
            out.seal()
    return count, scores, witnesses


@contextlib.contextmanager
def work_folder(stage, name: str) -> Iterator[Path]:
    """A fresh folder for a stage's parts, removed after: in the run folder (which one run
    holds at a time) when the stage runs in one, else a temporary folder (a stage on a
    Dataset, or called on records by itself)."""
    if stage.context is None:
        with tempfile.TemporaryDirectory(prefix=f"factory-{name}-") as work:
            yield Path(work)
        return
    work = stage.context.out_dir / f".{name}-{stage.position or 0}"
    shutil.rmtree(work, ignore_errors=True)  # what a killed run left
    work.mkdir(parents=True)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def part_path(work: Path, part: int) -> Path:
    return work / f"part-{part}.jsonl"


def read_part(work: Path, part: int) -> Iterator[Record]:
    return read_records(part_path(work, part))


def read_back(work: Path, parts: int) -> Iterator[Record]:
    for p in range(parts):
        yield from read_part(work, p)


def ids(work: Path, parts: int, wanted: np.ndarray) -> dict[int, str]:
    """The ids of the records at `wanted` indexes (the ones drops name)."""
    wanted_set, ids, index = set(wanted.tolist()), {}, 0
    for p in range(parts):
        for line in read_lines(part_path(work, p)):  # only the lines wanted are parsed
            if index in wanted_set:
                ids[index] = jsonlines.loads(line)["id"]
            index += 1
    return ids


def memory() -> dict:
    """A task's worker process and its peak resident memory so far, in bytes."""
    import os
    import resource

    return {"pid": os.getpid(), "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def note_memory(stage, reports: list[dict]) -> None:
    """The peak RSS of each worker process the stage used, on the stage (`worker_memory`)."""
    memory = getattr(stage, "worker_memory", {})
    for report in reports:
        memory[report["pid"]] = max(memory.get(report["pid"], 0), report["peak_rss"])
    stage.worker_memory = memory


def save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    tmp.replace(path)

