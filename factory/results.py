"""Where generated records and rejections go while a run is in progress.

Results arrive in completion order and are appended to JSONL files in the run's
work folder, so memory stays flat however many samples are asked for. `in_order`
reads them back sorted by sample index (an index of offsets, not the rows, is held
in memory), which makes the final dataset independent of timing.
"""

from __future__ import annotations

import json
from array import array
from pathlib import Path
from typing import Iterator

from factory.record import Record, Rejection


class ResultFiles:
    def __init__(self, work_dir: Path):
        work_dir.mkdir(parents=True, exist_ok=True)
        self.records_path = work_dir / "generated.jsonl"
        self.rejected_path = work_dir / "rejected.generate.jsonl"
        # A fresh start each run: the journal, not these files, is what makes a resume.
        self._records = open(self.records_path, "w", encoding="utf-8")
        self._rejected = open(self.rejected_path, "w", encoding="utf-8")
        self.kept = 0
        self.rejected = 0
        self.reasons: dict[str, int] = {}

    def __call__(self, results: list[Record | Rejection]) -> None:
        for item in results:
            if isinstance(item, Record):
                row = item.to_row()
                row["_index"] = item.metadata["sample_index"]
                self._records.write(json.dumps(row, ensure_ascii=False) + "\n")
                self.kept += 1
            else:
                self._rejected.write(item.to_json() + "\n")
                self.rejected += 1
                self.reasons[item.reason] = self.reasons.get(item.reason, 0) + 1

    def close(self) -> None:
        self._records.close()
        self._rejected.close()


def in_order(path: Path, key=lambda row: row["_index"]) -> Iterator[dict]:
    """Rows of a JSONL file sorted by `key`, holding only (key, offset) pairs in memory."""
    keys, offsets = array("q"), array("q")
    with open(path, "rb") as f:
        offset = 0
        for line in f:
            if line.strip():
                keys.append(key(json.loads(line)))
                offsets.append(offset)
            offset += len(line)
        order = sorted(range(len(keys)), key=keys.__getitem__)
        for i in order:
            f.seek(offsets[i])
            yield json.loads(f.readline())


def records_in_order(path: Path) -> Iterator[Record]:
    for row in in_order(path):
        row.pop("_index", None)
        yield Record.from_row(row)


def rejections_in_order(path: Path) -> Iterator[dict]:
    yield from in_order(path, key=lambda row: row.get("metadata", {}).get("sample_index", 0))
