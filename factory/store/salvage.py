"""`factory salvage OUTPUT_DIR`: everything still readable of a damaged run store, in a fresh one.

A store can be damaged by a disk that failed, a file truncated by a copy, or a stray
write over it. What it holds was paid for (answers) or decides what a rerun does
(units, filter verdicts, settings, invocations, provider batches), so all of it is
copied: every table this version's schema has, row by row as far as SQLite can still
read it (factory/store/recover.py), then a scan of the raw bytes of the file and its
write-ahead log for journal entries (a 64-character key beside a JSON answer), which
finds the answers on intact pages even when the pages that lead to them are gone. The
damaged file is kept beside the new one; a rerun of the same command then replays what
was salvaged and sends only what was lost.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Iterator

from factory.core.errors import InputDataError
from factory.store.recover import DamagedFile
from factory.store.run_store import LEGACY_JOURNAL, STORE_FILE, RunStore, lock_folder

# A journal row's key and the start of its value, as SQLite lays them out in a page:
# the key's text, then (after the record header) the value's JSON text.
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
        aside = _set_aside(damaged)
    except BaseException:
        os.close(lock)
        raise
    journal = "requests" if damaged.name == STORE_FILE else "completions"
    with RunStore.open(out_dir, lock_fd=lock) as store:
        source = DamagedFile(aside)
        try:
            copied = _copy_tables(source, store)
        finally:
            source.close()
        if journal not in source.complete:
            _copy_scanned(aside, store, journal)
        # A stage's marker (settings verdicts/<key>) says all its decisions are stored, and
        # a rerun replays them instead of running the stage: with verdicts missing it would
        # replay nothing. Unless every verdict was read, the stages run again (a judge asks
        # through the journal, so nothing it graded is paid twice).
        redo_filters = "verdicts" in source.tables and "verdicts" not in source.complete
        if redo_filters:
            store.keep_verdicts([])
        answers = store.rows_in(journal)
        store.begin_invocation("salvage")  # after the copied invocations: its id follows theirs
        store.end_invocation("salvage", {"salvaged_answers": answers})
    others = ", ".join(f"{table} {n}" for table, n in sorted(copied.items()) if table != journal and n)
    return (f"salvaged {answers} answers into {out_dir / STORE_FILE} ({others or 'nothing else readable'}"
            f"{'; the filters run again: not every verdict was readable' if redo_filters else ''}; the damaged "
            f"file is now {aside.name}); rerun the same command to finish the run")


def _set_aside(damaged: Path) -> Path:
    aside = damaged.with_name(f"{damaged.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{damaged}{suffix}")
        if source.exists():
            source.rename(Path(f"{aside}{suffix}"))
    return aside


def _copy_tables(source: DamagedFile, store: RunStore) -> dict[str, int]:
    """Every table of the fresh store, filled with what `source` holds of it (the columns
    both have: a file from an older version lacks later tables and columns); returns the
    rows read per table."""
    read: dict[str, int] = {}
    for table, columns in store.tables().items():
        shared = [column for column in columns if column in source.columns(table)]
        if shared:
            read[table] = 0
            store.copy_rows(table, shared, _counted(source.rows(table, shared), read, table))
            store.commit()
    return read


def _counted(rows: Iterator[tuple], tally: dict[str, int], table: str) -> Iterator[tuple]:
    for row in rows:
        tally[table] += 1
        yield row


def _copy_scanned(aside: Path, store: RunStore, journal: str) -> None:
    """Journal entries found in the raw bytes; the rows SQLite read already stay as read."""
    rows: dict[str, str] = {}
    for path in (aside, Path(f"{aside}-wal")):
        if path.exists():
            _scan(path.read_bytes(), rows)
    now = time.time()
    if journal == "requests":  # which invocation paid for a scanned answer is not known
        store.copy_rows("requests", ["key", "value", "invocation", "created"],
                        ((key, value, None, now) for key, value in rows.items()))
    else:
        store.copy_rows("completions", ["key", "value", "created"], ((key, value, now) for key, value in rows.items()))
    store.commit()


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
