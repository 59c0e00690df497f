"""The request journal: every completed teacher request, keyed by a content hash.

A rerun looks each request up before sending it, so a run stopped by Ctrl-C,
`kill -9` or a crash resumes where it was, and nothing completed is paid for twice.
SQLite in WAL mode with synchronous=NORMAL: each completion is committed as it
arrives (a process crash loses nothing committed; only a power cut can drop the
last few), and readers never block the writer.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable


def request_key(payload: dict[str, Any]) -> str:
    """Hash of the canonical JSON form: key order and whitespace do not matter."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _v1(db: sqlite3.Connection) -> None:
    db.execute(
        "CREATE TABLE completions ("
        " key TEXT PRIMARY KEY,"
        " value TEXT NOT NULL,"
        " created REAL NOT NULL"
        ") WITHOUT ROWID"
    )


# Each migration runs once, in order; PRAGMA user_version remembers how far we got.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1]


class Journal:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self._migrate()
        self.hits = 0
        self.stored = 0

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        for number, migration in enumerate(MIGRATIONS[version:], version + 1):
            self.db.execute("BEGIN IMMEDIATE")
            migration(self.db)
            self.db.execute(f"PRAGMA user_version={number}")
            self.db.execute("COMMIT")

    def lookup(self, key: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT value FROM completions WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        self.hits += 1
        return json.loads(row[0])

    def store(self, key: str, value: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO completions (key, value, created) VALUES (?, ?, ?)",
            (key, json.dumps(value, ensure_ascii=False), time.time()),
        )
        self.stored += 1

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]

    def close(self) -> None:
        self.db.close()
