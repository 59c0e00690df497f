"""What SQLite can still read of a damaged database, table by table, row by row.

In the spirit of sqlite3's `.recover`, within what Python's sqlite3 module offers: every
table the file's schema names is read in key order until a damaged page stops the walk,
then from the other end of the key order back to the damage, so only the rows on the
pages between are lost. Rows are streamed, never held all at once. A table whose walk
met no damage is marked complete: a caller may trust what it says as a whole (salvage
keeps filter verdicts only then).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Iterator


def schema(db: sqlite3.Connection) -> dict[str, list[tuple[str, int]]]:
    """Each table's (column, position in the primary key or 0), the schema's own tables aside."""
    names = [n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                                      " AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    return {name: [(row[1], row[5]) for row in db.execute(f"PRAGMA table_info({quoted(name)})")] for name in names}


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class DamagedFile:
    """A database opened read-only to read what it still can. `tables` is empty when not
    even its schema can be read (a header overwritten, say)."""

    def __init__(self, path: Path):
        self.tables: dict[str, list[tuple[str, int]]] = {}
        self.complete: set[str] = set()  # tables read to the end without an error
        self.db: sqlite3.Connection | None = None
        try:
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            self.tables = schema(self.db)
        except sqlite3.Error:
            pass

    def columns(self, table: str) -> list[str]:
        return [column for column, _ in self.tables.get(table, [])]

    def rows(self, table: str, columns: list[str]) -> Iterator[tuple]:
        """The `columns` of the rows of `table` that can be read; the same row may come
        twice (the copy keeps one per key)."""
        key = [quoted(c) for c, at in sorted(self.tables[table], key=lambda c: c[1]) if at] or ["rowid"]
        select = f"SELECT {', '.join(map(quoted, columns))} FROM {quoted(table)} ORDER BY "
        if (yield from _walk(self.db, select + ", ".join(key))):
            self.complete.add(table)
        else:
            # The walk stopped at a damaged page: walk back from the far end to the damage.
            yield from _walk(self.db, select + ", ".join(f"{k} DESC" for k in key))

    def close(self) -> None:
        if self.db is not None:
            self.db.close()


def _walk(db: sqlite3.Connection, select: str) -> Iterator[tuple]:
    """The rows of `select` up to the first error; returns True when there was none."""
    try:
        yield from db.execute(select)
    except sqlite3.Error:
        return False
    return True
