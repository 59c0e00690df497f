"""What a run's store (run.sqlite) holds, read while the run goes on or after it."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def stored(out_dir: Path) -> int:
    """Answers in the run's store."""
    db = sqlite3.connect(str(out_dir / "run.sqlite"))
    try:
        return db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
    finally:
        db.close()


def invocations(out_dir: Path) -> list[tuple[int, str]]:
    """(pid, status) of each invocation of a run: "unended" while it runs, or when it was killed."""
    db = sqlite3.connect(str(out_dir / "run.sqlite"))
    try:
        rows = db.execute("SELECT pid, status, ended FROM invocations ORDER BY id").fetchall()
        return [(pid, "unended" if ended is None else status) for pid, status, ended in rows]
    finally:
        db.close()
