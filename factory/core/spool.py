"""Values spooled to disk as JSON lines, for a step that must not hold what passes through it.

One value a line, as `jsonlines.dumpb` writes it, written once in order and then read
back: whole, in order (`read_values`, `read_records`), or a line at a time by the offset its
writing returned. It holds a filter stage's input (filters/verdicts.py), the part files
of the Ray and diversity stages (filters/ray_parts.py), the judge's records for its
shards (filters/judge/judge_ray.py) and the rows between an export's two passes
(factory/outputs/dataset.py).

The bytes are part of what resume compares: a stage's verdicts are keyed by a digest of
its spooled input, and a judge shard's done.json by a digest of its records' lines. A
change to how a value is written makes those run again (say so in VERDICTS_VERSION).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from factory.core import jsonlines
from factory.core.record import Record


class Spool:
    """A file of JSON lines being written (`add`); `seal` ends the writing (leaving the
    `with` block does too), `remove` closes and deletes it."""

    def __init__(self, path: Path):
        self.path = path
        self.count = 0
        self.size = 0
        self._out = open(path, "wb")
        self._in = None

    def add(self, value: Any) -> int:
        """Write `value` as one line; returns the line's offset."""
        return self.add_line(jsonlines.dumpb(value))

    def add_line(self, line: bytes) -> int:
        """Write a line made already (one JSON value and its newline); returns its offset."""
        offset = self.size
        self._out.write(line)
        self.size += len(line)
        self.count += 1
        return offset

    def seal(self) -> None:
        self._out.close()

    def line_at(self, offset: int) -> bytes:
        """The line written at `offset` (sealed first)."""
        if self._in is None:
            self._in = open(self.path, "rb")
        # Reads mostly follow the writing's order: a seek inside the read buffer costs no system call.
        self._in.seek(offset)
        return self._in.readline()

    def values(self) -> Iterator[Any]:
        return read_values(self.path)

    def remove(self) -> None:
        for f in (self._out, self._in):
            if f is not None:
                f.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> "Spool":
        return self

    def __exit__(self, *exc) -> None:
        self.seal()


def read_lines(path: Path) -> Iterator[bytes]:
    """The lines of a spool file, as written."""
    with open(path, "rb") as f:
        yield from f


def read_values(path: Path) -> Iterator[Any]:
    """The values of a spool file, in order."""
    return map(jsonlines.loads, read_lines(path))


def read_records(path: Path) -> Iterator[Record]:
    """The records of a spool file of `Record.to_row()` rows, in order."""
    return map(Record.from_row, read_values(path))
