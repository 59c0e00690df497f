"""`factory salvage OUTPUT_DIR`: every intact answer of a damaged run store, in a fresh one.

A store can be damaged by a disk that failed, a file truncated by a copy, or a stray
write over it. The answers in it were paid for, so they are worth recovering: first
every row SQLite can still read, then a scan of the raw bytes of the file and its
write-ahead log for journal entries (a 64-character key beside a JSON answer), which
finds the rows on intact pages even when the pages that lead to them are gone. The
damaged file is kept beside the new one; a rerun of the same command then replays the
salvaged answers and sends only what was lost.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from pathlib import Path

from factory.core.errors import InputDataError
from factory.store.run_store import LEGACY_JOURNAL, STORE_FILE, RunStore, lock_folder

# A journal row's key and the start of its value, as SQLite lays them out in a page:
# the key's text, then (after the record header) the value's JSON text.
BATCH_COLUMNS = "id, provider, remote, file, state, status, requests, counts, submitted, updated"
_ROW = re.compile(rb"([0-9a-f]{64})(?:[\x00-\xff]{0,16}?)(\{\"(?:completion|error)\")")


def salvage(out_dir: Path) -> str:
    damaged = next((out_dir / name for name in (STORE_FILE, LEGACY_JOURNAL) if (out_dir / name).exists()), None)
    if damaged is None:
        raise InputDataError(f"{out_dir}: no run store here ({STORE_FILE})")
    # The folder's lock before anything moves: a run that holds it writes to this very
    # file, and would go on writing into it after it was set aside. Refused (FolderInUse,
    # exit 2) with nothing touched.
    lock = lock_folder(out_dir)
    try:
        rows: dict[str, str] = {}
        settings: dict[str, str] = {}
        table = "requests" if damaged.name == STORE_FILE else "completions"
        _readable(damaged, table, rows)
        _readable(damaged, "settings", settings)
        # Batches at the provider were paid for, or will be: salvaged too, so a rerun polls
        # them instead of submitting their requests again.
        batches = _rows(damaged, f"SELECT {BATCH_COLUMNS} FROM batches") if table == "requests" else []
        members = _rows(damaged, "SELECT key, batch, outcome FROM batch_requests") if table == "requests" else []
        for path in (damaged, Path(f"{damaged}-wal")):
            if path.exists():
                _scan(path.read_bytes(), rows)

        aside = damaged.with_name(f"{damaged.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{damaged}{suffix}")
            if source.exists():
                source.rename(Path(f"{aside}{suffix}"))
    except BaseException:
        os.close(lock)
        raise
    store = RunStore.open(out_dir, lock_fd=lock)
    try:
        store.begin_invocation("salvage")
        target = "completions" if table == "completions" else "requests"
        for key, value in rows.items():
            store._write(f"INSERT OR REPLACE INTO {target} (key, value, created{', invocation' if target == 'requests' else ''})"
                         f" VALUES (?, ?, ?{', NULL' if target == 'requests' else ''})", (key, value, time.time()))
        for key, value in settings.items():
            store._write("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, value))
        for row in batches:
            store._write(f"INSERT OR REPLACE INTO batches ({BATCH_COLUMNS}) VALUES ({', '.join('?' * len(row))})", row)
        for row in members:
            store._write("INSERT OR REPLACE INTO batch_requests (key, batch, outcome) VALUES (?, ?, ?)", row)
        store.end_invocation("salvage", {"salvaged_answers": len(rows)})
    finally:
        store.close()
    return (f"salvaged {len(rows)} answers into {out_dir / STORE_FILE} (the damaged file is now {aside.name}); "
            f"rerun the same command to finish the run")


def _readable(path: Path, table: str, into: dict[str, str]) -> None:
    """Rows SQLite itself can still read, in key order, up to the first damaged page."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return
    try:
        for key, value in db.execute(f"SELECT key, value FROM {table}"):
            into[key] = value
    except sqlite3.Error:
        pass
    finally:
        db.close()


def _rows(path: Path, sql: str) -> list[tuple]:
    """The rows `sql` can still read, up to the first damaged page."""
    rows: list[tuple] = []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return rows
    try:
        for row in db.execute(sql):
            rows.append(row)
    except sqlite3.Error:
        pass
    finally:
        db.close()
    return rows


def _scan(data: bytes, into: dict[str, str]) -> None:
    decoder = json.JSONDecoder()
    for match in _ROW.finditer(data):
        key = match.group(1).decode()
        if key in into:
            continue
        start = match.start(2)
        try:
            text = data[start:start + 1_000_000].decode("utf-8", errors="strict")
        except UnicodeDecodeError as err:
            text = data[start:start + err.start].decode("utf-8")
        try:
            value, end = decoder.raw_decode(text)
        except ValueError:
            continue  # split over pages that are gone: lost
        if isinstance(value, dict) and ("completion" in value or "error" in value):
            into[key] = text[:end]
