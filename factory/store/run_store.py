"""The run store: one SQLite database per output folder, the only truth about a run.

- `requests`: the journal, every answered teacher request under the engine's key;
- `units`: each unit's state and results, written in the transaction that also holds
  the request that finished it;
- `invocations`: each start and stop of the run, with its own usage and timeline;
- `verdicts`: each filter stage's decision per record, under the stage's key;
- `settings`: what the run learned once and must not re-learn (a refused json_schema);
- `batches`, `batch_requests`: provider batches (teacher.mode: batch), with the keys in
  each and, once collected, each request's outcome, so a rerun polls what was submitted
  instead of submitting it again.

One process at a time: `RunStore.open` takes an OS advisory lock (flock) on a file
beside the database, so a second run on the folder fails at once and names the holder.
WAL with synchronous=FULL: every commit is durable. Writes collect in one open
transaction that is committed every few milliseconds (a group commit), so a unit's
row and its last request always land together, and nothing committed is lost to a
crash, a kill -9 or a power cut.

A full disk: SQLite rolls the open transaction back, so the store keeps that
transaction's writes (a few milliseconds of answers) until they are committed, folds the
write-ahead log into run.sqlite (on a small disk the log, many copies of the same pages,
is most of the space) and writes them again. The run then stops with one line that says
how much room the store needs: what was received is stored, what was in flight is not.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from factory.core import constants, jsonlines
from factory.core.errors import FactoryError, UserError
from factory.store.recover import quoted, schema

STORE_FILE = "run.sqlite"
LOCK_FILE = "run.lock"
RESERVE_FILE = "run.reserve"  # room held back for the store's last writes when the disk fills
LEGACY_JOURNAL = "journal.sqlite"  # factory 0.1's journal: adopted by the first run that opens the folder


class FolderInUse(UserError):
    """Another process holds the output folder's lock."""


class StoreError(FactoryError):
    """The store cannot be read or written (damaged, disk full); the message says what to do."""


def request_key(payload: dict[str, Any]) -> str:
    """Hash of the canonical JSON form: key order and whitespace do not matter."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _v1(db: sqlite3.Connection) -> None:
    # factory 0.1's journal; later versions read it only to resume a run it began.
    db.execute("CREATE TABLE completions (key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL) WITHOUT ROWID")


def _v2(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE requests (key TEXT PRIMARY KEY, value TEXT NOT NULL, invocation INTEGER,"
               " created REAL NOT NULL) WITHOUT ROWID")
    db.execute("CREATE TABLE units (scope TEXT NOT NULL, unit INTEGER NOT NULL, fingerprint TEXT NOT NULL,"
               " state TEXT NOT NULL, results TEXT NOT NULL, updated REAL NOT NULL,"
               " PRIMARY KEY (scope, unit)) WITHOUT ROWID")
    db.execute("CREATE TABLE invocations (id INTEGER PRIMARY KEY, command TEXT NOT NULL, pid INTEGER NOT NULL,"
               " started REAL NOT NULL, ended REAL, status TEXT NOT NULL, stats TEXT)")
    db.execute("CREATE TABLE verdicts (stage TEXT NOT NULL, position INTEGER NOT NULL, record TEXT NOT NULL,"
               " keep INTEGER NOT NULL, reason TEXT, detail TEXT, changes TEXT,"
               " PRIMARY KEY (stage, position)) WITHOUT ROWID")
    db.execute("CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID")


def _v3(db: sqlite3.Connection) -> None:
    # state: submitting (recorded before the provider was asked), submitted, collected
    # (outcomes stored), lost (the provider no longer knows it).
    db.execute("CREATE TABLE batches (id INTEGER PRIMARY KEY, provider TEXT NOT NULL, remote TEXT, file TEXT,"
               " state TEXT NOT NULL, status TEXT, requests INTEGER NOT NULL, counts TEXT,"
               " submitted REAL NOT NULL, updated REAL NOT NULL)")
    # outcome: null while the batch runs; then {"completion": ...}, {"error", "reason"} or {"missing": why}.
    db.execute("CREATE TABLE batch_requests (key TEXT NOT NULL, batch INTEGER NOT NULL, outcome TEXT,"
               " PRIMARY KEY (key, batch)) WITHOUT ROWID")


# Each migration runs once, in order; PRAGMA user_version remembers how far a file got.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1, _v2, _v3]

UNIT_STATES = ("pending", "done", "rejected", "failed")


class RunStore:
    def __init__(self, folder: Path, db: sqlite3.Connection, lock_fd: int):
        self.folder = folder
        self.path = folder / STORE_FILE
        self.db = db
        self._lock_fd = lock_fd
        self._dirty = False
        self._commit_handle = None
        # The open transaction's writes, (many, sql, args), to write again when a full
        # disk rolls it back; None when one of them cannot be repeated (a stream of rows).
        self._pending: list[tuple[bool, str, Any]] | None = []
        self._pending_rows = 0
        self.invocation: int | None = None
        self.failed: StoreError | None = None  # a group commit that failed, raised by the next write
        self.has_legacy = self._count("completions") > 0
        self.legacy_hits = 0

    # -- opening and closing ------------------------------------------------------------

    @classmethod
    def open(cls, folder: Path, lock_fd: int | None = None) -> "RunStore":
        """Lock `folder` for this process and open (or create, or migrate) its store.
        `lock_fd`: the folder's lock, already taken with `lock_folder` (salvage takes it
        before it moves the damaged file); the store releases it when it closes.

        Raises FolderInUse (exit 2) when another process holds it; StoreError when the
        file is damaged or cannot be written."""
        folder.mkdir(parents=True, exist_ok=True)
        if lock_fd is None:
            lock_fd = lock_folder(folder)
        try:
            db = _connect(folder / STORE_FILE)
            store = cls(folder, db, lock_fd)
            store._adopt_legacy_journal()
            _reserve(folder / RESERVE_FILE)
            return store
        except BaseException:
            os.close(lock_fd)
            raise

    def close(self) -> None:
        """Commit what is open and close. Raises the store's failure (a full disk) if it
        had one, after closing: its writes since then were never made."""
        if self.db is None:
            return
        try:
            self.commit()
        finally:
            self.db.close()
            self.db = None
            os.close(self._lock_fd)

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- transactions ---------------------------------------------------------------------

    def _write(self, sql: str, args: tuple = ()) -> None:
        self._in_transaction(False, sql, args)

    def _write_many(self, sql: str, rows) -> None:
        """`rows`: a list is kept for a repeat after a full disk; any other iterable
        (a whole table, in salvage) is not held in memory, and cannot be repeated."""
        self._in_transaction(True, sql, rows)

    def _in_transaction(self, many: bool, sql: str, args) -> None:
        if self.failed:
            raise self.failed
        try:
            if not self._dirty:
                self.db.execute("BEGIN IMMEDIATE")
                self._dirty = True
            (self.db.executemany if many else self.db.execute)(sql, args)
        except sqlite3.Error as err:
            raise self._failure(err, (many, sql, args)) from err
        if self._pending is not None:
            if many and not isinstance(args, list):
                self._pending = None
            else:
                self._pending.append((many, sql, args))
                self._pending_rows += len(args) if many else 1
                if self._pending_rows >= constants.STORE_PENDING_MAX:
                    self.commit()  # what a repeat would need stays small

    def commit(self) -> None:
        """Make every write so far durable (one fsync for all of them)."""
        self._commit_handle = None
        if self.failed:
            raise self.failed
        if not self._dirty:
            return
        try:
            self.db.execute("COMMIT")
        except sqlite3.Error as err:
            raise self._failure(err) from err
        self._finished()

    def _finished(self) -> None:
        self._dirty = False
        self._pending = []
        self._pending_rows = 0

    def _failure(self, err: sqlite3.Error, current: tuple | None = None) -> StoreError:
        """The error a failed write or commit raises. Any failure ends the transaction
        (SQLite may have rolled it back already); a full disk first writes it again
        into the room that folding the write-ahead log frees, and stops the store."""
        pending = self._pending
        if pending is not None and current is not None:
            pending = [*pending, current]
        self._abandon()
        if not _is_full(err):
            return _store_error(err, self.path)
        kept = pending is not None and self._write_again(pending)
        self.failed = StoreError(self._full_message(kept))
        return self.failed

    def _abandon(self) -> None:
        if self.db.in_transaction:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        self._finished()

    def _write_again(self, writes: list[tuple]) -> bool:
        (self.folder / RESERVE_FILE).unlink(missing_ok=True)  # its room, for folding the log in
        try:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.db.execute("BEGIN IMMEDIATE")
            for many, sql, args in writes:
                (self.db.executemany if many else self.db.execute)(sql, args)
            self.db.execute("COMMIT")
            return True
        except sqlite3.Error:
            self._abandon()
            return False

    def _full_message(self, kept: bool) -> str:
        page, pages = (self.db.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_size", "wal_autocheckpoint"))
        size = sum(Path(f"{self.path}{suffix}").stat().st_size for suffix in ("", "-wal")
                   if Path(f"{self.path}{suffix}").exists())
        need = max(pages, 1) * page + size  # the log grows this far before it is folded in
        lost = "every answer received is stored" if kept else \
            "the answers of its last few milliseconds could not be stored"
        return (f"{self.folder}: the disk is full; the run store needs about {_mb(need)} "
                f"({_mb(size)} now, and its write-ahead log grows by up to {_mb(pages * page)} before it is "
                f"folded in), plus room for the outputs; free some space and rerun the same command: {lost}")

    def commit_soon(self, loop) -> None:
        """Group commit: writes made within the next few milliseconds share one commit."""
        if self._commit_handle is None and self._dirty:
            self._commit_handle = loop.call_later(constants.STORE_GROUP_COMMIT_S, self._commit_from_loop)

    def _commit_from_loop(self) -> None:
        try:
            self.commit()
        except StoreError as err:
            self.failed = self.failed or err  # a callback has no one to raise to: the next write raises it

    # -- the journal ----------------------------------------------------------------------

    def lookup(self, key: str) -> dict[str, Any] | None:
        try:
            row = self.db.execute("SELECT value FROM requests WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as err:
            raise _store_error(err, self.path) from err
        return json.loads(row[0]) if row else None

    def lookup_legacy(self, keys: list[str]) -> dict[str, Any] | None:
        """An answer factory 0.1 journaled under one of its own keys, if any."""
        for key in keys:
            row = self.db.execute("SELECT value FROM completions WHERE key = ?", (key,)).fetchone()
            if row:
                self.legacy_hits += 1
                return json.loads(row[0])
        return None

    def store_request(self, key: str, value: dict[str, Any]) -> None:
        self._write("INSERT OR REPLACE INTO requests (key, value, invocation, created) VALUES (?, ?, ?, ?)",
                    (key, json.dumps(value, ensure_ascii=False), self.invocation, time.time()))

    def adopt_legacy(self, key: str, value: dict[str, Any]) -> None:
        """A 0.1 answer under its new key. It belongs to the migrated invocation, whose
        usage already counts it: not to this one, which did not pay for it."""
        row = self.db.execute("SELECT id FROM invocations WHERE status = 'migrated' ORDER BY id LIMIT 1").fetchone()
        self._write("INSERT OR REPLACE INTO requests (key, value, invocation, created) VALUES (?, ?, ?, ?)",
                    (key, json.dumps(value, ensure_ascii=False), row[0] if row else None, time.time()))

    def copy_request(self, key: str, value: str, invocation: int | None, created: float) -> None:
        """An answer another store journaled (a shard's), kept if this store lacks it."""
        self._write("INSERT OR IGNORE INTO requests (key, value, invocation, created) VALUES (?, ?, ?, ?)",
                    (key, value, invocation, created))

    def request_rows(self, keys: list[str]) -> Iterator[tuple[str, str, float]]:
        """(key, value as stored, created) of those of `keys` the journal holds, to copy
        into another store with `copy_request`."""
        for start in range(0, len(keys), 500):
            part = keys[start:start + 500]
            yield from self.db.execute(f"SELECT key, value, created FROM requests WHERE key IN"
                                       f" ({','.join('?' * len(part))})", part)

    def requests(self) -> int:
        return self._count("requests")

    # -- units ----------------------------------------------------------------------------

    def finish_unit(self, scope: str, unit: int, fingerprint: str, state: str, results: list[dict]) -> None:
        assert state in UNIT_STATES
        self._write("INSERT OR REPLACE INTO units (scope, unit, fingerprint, state, results, updated)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (scope, unit, fingerprint, state, json.dumps(results, ensure_ascii=False), time.time()))

    def settled_units(self, scope: str, fingerprint: str) -> set[int]:
        """Units finished for good under this fingerprint (done or rejected)."""
        rows = self.db.execute("SELECT unit FROM units WHERE scope = ? AND fingerprint = ? AND state IN"
                               " ('done', 'rejected')", (scope, fingerprint))
        return {unit for (unit,) in rows}

    def unit_results(self, scope: str, fingerprint: str, below: int) -> Iterator[tuple[int, str, list[dict]]]:
        """(unit, state, results) in unit order, for units below `below` under this fingerprint."""
        cursor = self.db.execute("SELECT unit, state, results FROM units WHERE scope = ? AND fingerprint = ?"
                                 " AND unit < ? ORDER BY unit", (scope, fingerprint, below))
        for unit, state, results in cursor:
            yield unit, state, json.loads(results)

    def unit_counts(self, scope: str, fingerprint: str, units: set[int]) -> dict[str, int]:
        """How many of these units are in each state."""
        rows = self.db.execute("SELECT unit, state FROM units WHERE scope = ? AND fingerprint = ?",
                               (scope, fingerprint))
        counts: dict[str, int] = {}
        for unit, state in rows:
            if unit in units:
                counts[state] = counts.get(state, 0) + 1
        return counts

    # -- verdicts -------------------------------------------------------------------------

    def verdict_summary(self, stage: str) -> dict | None:
        """A stage key's summary (its funnel beyond the counts), written after its last
        verdict: None means the stage has not run to the end under this key."""
        return self.setting(f"verdicts/{stage}")

    def put_verdict_summary(self, stage: str, summary: dict) -> None:
        self.put_setting(f"verdicts/{stage}", summary)

    def verdicts(self, stage: str) -> Iterator[tuple[str, bool, str | None, str | None, dict]]:
        cursor = self.db.execute("SELECT record, keep, reason, detail, changes FROM verdicts WHERE stage = ?"
                                 " ORDER BY position", (stage,))
        for record, keep, reason, detail, changes in cursor:
            yield record, bool(keep), reason, detail, self.decode_changes(changes)

    @staticmethod
    def encode_changes(changes: dict | None) -> str | None:
        """A verdict's difference as stored (filters/verdicts.py applies it to the input)."""
        return jsonlines.dumps(changes) if changes else None

    @staticmethod
    def decode_changes(text: str | None) -> dict:
        return jsonlines.loads(text) if text else {}

    def clear_verdicts(self, stage: str) -> None:
        self._write("DELETE FROM verdicts WHERE stage = ?", (stage,))
        self._write("DELETE FROM settings WHERE key = ?", (f"verdicts/{stage}",))

    def put_verdicts(self, rows: list[tuple]) -> None:
        """(stage, position, record, keep, reason, detail, changes) rows; `changes` as
        `encode_changes` gave it."""
        if not rows:
            return
        # A copy: the caller refills its list (keep, a bool: sqlite stores it as 1 or 0).
        self._write_many("INSERT OR REPLACE INTO verdicts (stage, position, record, keep, reason, detail,"
                         " changes) VALUES (?, ?, ?, ?, ?, ?, ?)", list(rows))

    def keep_verdicts(self, stages: list[str]) -> None:
        """Forget the verdicts of every stage key but these (configurations no longer run)."""
        marks = ",".join("?" * len(stages))
        self._write(f"DELETE FROM verdicts WHERE stage NOT IN ({marks})", tuple(stages))
        self._write(f"DELETE FROM settings WHERE key LIKE 'verdicts/%' AND substr(key, 10) NOT IN ({marks})",
                    tuple(stages))

    # -- settings -------------------------------------------------------------------------

    def setting(self, key: str) -> Any:
        row = self.db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put_setting(self, key: str, value: Any) -> None:
        self._write("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    # -- provider batches -----------------------------------------------------------------

    def add_batch(self, provider: str, keys: list[str], file: str | None = None) -> int:
        """Record a batch about to be created (durably: a crash after the provider took
        it must not lose it); returns its local id."""
        now = time.time()
        self._write("INSERT INTO batches (provider, file, state, requests, submitted, updated)"
                    " VALUES (?, ?, 'submitting', ?, ?, ?)", (provider, file, len(keys), now, now))
        local = self.db.execute("SELECT last_insert_rowid()").fetchone()[0]
        self._write_many("INSERT OR REPLACE INTO batch_requests (key, batch, outcome) VALUES (?, ?, NULL)",
                         [(key, local) for key in keys])
        self.commit()
        return local

    def update_batch(self, local: int, **fields: Any) -> None:
        """Set `remote`, `state`, `status` or `counts` of a batch, durably."""
        if "counts" in fields:
            fields["counts"] = json.dumps(fields["counts"])
        names = ", ".join(f"{name} = ?" for name in fields)
        self._write(f"UPDATE batches SET {names}, updated = ? WHERE id = ?", (*fields.values(), time.time(), local))
        self.commit()

    def forget_batch(self, local: int) -> None:
        """A batch recorded as submitting that the provider never created."""
        self._write("DELETE FROM batch_requests WHERE batch = ?", (local,))
        self._write("DELETE FROM batches WHERE id = ?", (local,))
        self.commit()

    def batches(self, states: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        sql = "SELECT id, provider, remote, file, state, status, requests, counts, submitted FROM batches"
        args: tuple = ()
        if states:
            sql += f" WHERE state IN ({', '.join('?' * len(states))})"
            args = states
        rows = self.db.execute(sql + " ORDER BY id", args)
        return [{"id": i, "provider": p, "remote": r, "file": f, "state": st, "status": status, "requests": n,
                 "counts": json.loads(counts) if counts else {}, "submitted": submitted}
                for i, p, r, f, st, status, n, counts, submitted in rows]

    def batch_keys(self, local: int) -> list[str]:
        return [k for (k,) in self.db.execute("SELECT key FROM batch_requests WHERE batch = ?", (local,))]

    def collect_batch(self, local: int, outcomes: dict[str, dict[str, Any]], state: str, status: str,
                      counts: dict) -> None:
        """Every request's outcome and the batch's end, in one durable transaction."""
        self._write_many("UPDATE batch_requests SET outcome = ? WHERE key = ? AND batch = ?",
                         [(json.dumps(outcome, ensure_ascii=False), key, local) for key, outcome in outcomes.items()])
        self._write("UPDATE batches SET state = ?, status = ?, counts = ?, updated = ? WHERE id = ?",
                    (state, status, json.dumps(counts), time.time(), local))
        self.commit()

    def batch_outcome(self, key: str) -> tuple[int, str, dict[str, Any] | None] | None:
        """(batch, the batch's state, the request's outcome or None) from the latest batch
        that holds `key`; None when no batch ever held it."""
        row = self.db.execute("SELECT r.batch, b.state, r.outcome FROM batch_requests r JOIN batches b"
                              " ON b.id = r.batch WHERE r.key = ? ORDER BY r.batch DESC LIMIT 1", (key,)).fetchone()
        if row is None:
            return None
        return row[0], row[1], json.loads(row[2]) if row[2] else None

    # -- whole tables (salvage) ----------------------------------------------------------

    def tables(self) -> dict[str, list[str]]:
        """Each table's columns, as this version's migrations made them."""
        return {name: [column for column, _ in columns] for name, columns in schema(self.db).items()}

    def rows_in(self, table: str) -> int:
        return self._count(table)

    def copy_rows(self, table: str, columns: list[str], rows: Iterator[tuple]) -> None:
        """Rows read from another store's `table`; a row whose key is here already stays."""
        names = ", ".join(map(quoted, columns))
        self._write_many(f"INSERT OR IGNORE INTO {quoted(table)} ({names}) VALUES ({', '.join('?' * len(columns))})",
                         rows)

    # -- invocations ----------------------------------------------------------------------

    def begin_invocation(self, command: str) -> int:
        self._write("INSERT INTO invocations (command, pid, started, status) VALUES (?, ?, ?, 'running')",
                    (command, os.getpid(), time.time()))
        self.invocation = self.db.execute("SELECT last_insert_rowid()").fetchone()[0]
        self.commit()
        return self.invocation

    def end_invocation(self, status: str, stats: dict[str, Any]) -> None:
        self._write("UPDATE invocations SET ended = ?, status = ?, stats = ? WHERE id = ?",
                    (time.time(), status, json.dumps(stats, ensure_ascii=False), self.invocation))
        self.commit()

    def invocations(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT id, command, pid, started, ended, status, stats FROM invocations ORDER BY id")
        return [{"id": i, "command": c, "pid": p, "started": s, "ended": e,
                 # One that never ended was killed (kill -9, power cut): its usage died with it.
                 "status": st if st != "running" or i == self.invocation else "killed",
                 **(json.loads(stats) if stats else {})}
                for i, c, p, s, e, st, stats in rows]

    # -- the 0.1 journal ------------------------------------------------------------------

    def _adopt_legacy_journal(self) -> None:
        """Copy a factory 0.1 journal in this folder into the store, so its run resumes."""
        old = self.folder / LEGACY_JOURNAL
        if not old.exists():
            return
        try:
            self.db.execute("ATTACH DATABASE ? AS old", (str(old),))
            try:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.execute("INSERT OR IGNORE INTO completions SELECT key, value, created FROM old.completions")
                paid = self._legacy_usage()
                self.db.execute("INSERT INTO invocations (command, pid, started, ended, status, stats)"
                                " VALUES ('(before the run store: factory 0.1 journal)', 0, ?, ?, 'migrated', ?)",
                                (paid.pop("first"), paid.pop("last"), json.dumps(paid)))
                self.db.execute("COMMIT")
            finally:
                self.db.execute("DETACH DATABASE old")
        except sqlite3.Error as err:
            raise StoreError(f"{old}: cannot read the journal of an earlier factory version ({err}); "
                             f"move it away to start afresh") from err
        for suffix in ("", "-wal", "-shm"):
            Path(f"{old}{suffix}").unlink(missing_ok=True)
        self.has_legacy = True

    def _legacy_usage(self) -> dict[str, Any]:
        requests = prompt = completion = 0
        first = last = None
        for value, created in self.db.execute("SELECT value, created FROM old.completions"):
            done = json.loads(value).get("completion")
            first = created if first is None else min(first, created)
            last = created if last is None else max(last, created)
            if done:
                requests += 1
                prompt += done.get("prompt_tokens", 0)
                completion += done.get("completion_tokens", 0)
        now = time.time()
        return {"first": first or now, "last": last or now,
                "usage": {"requests": requests, "prompt_tokens": prompt, "completion_tokens": completion}}

    def _count(self, table: str) -> int:
        return self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def lock_folder(folder: Path) -> int:
    """Take `folder`'s lock for this process (held until the returned fd is closed).
    Raises FolderInUse, having changed nothing, when another process holds it."""
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise FolderInUse(f"{folder}: in use by another factory process (pid {holder}); wait for it to finish, "
                          f"or stop it, or choose another --out") from None
    # The holder's pid, for the message a second process prints; the lock is the flock,
    # released by the kernel when this process ends however it ends.
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _connect(path: Path) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        # Large pages keep nearly every answer on one page: fewer overflow chains, and a
        # damaged file's answers can be salvaged page by page (factory salvage).
        db.execute("PRAGMA page_size=65536")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        for number, migration in enumerate(MIGRATIONS[version:], version + 1):
            db.execute("BEGIN IMMEDIATE")
            migration(db)
            db.execute(f"PRAGMA user_version={number}")
            db.execute("COMMIT")
        problem = db.execute("PRAGMA quick_check(1)").fetchone()[0]
        if problem != "ok":  # "*** in database main ***" on a line of its own, then the page
            problem = " ".join(problem.replace("*** in database main ***", "").split())
            raise sqlite3.DatabaseError(f"database disk image is malformed ({problem})")
    except sqlite3.Error as err:
        raise _store_error(err, path) from err
    return db


def _store_error(err: sqlite3.Error, path: Path) -> StoreError:
    text = " ".join(str(err).split())  # one line, whatever SQLite's message spans
    if isinstance(err, sqlite3.OperationalError) and ("disk is full" in text or "disk I/O" in text):
        return StoreError(f"{path}: cannot write the run store ({text}); free some space and rerun the same "
                          f"command: everything committed so far is kept")
    if isinstance(err, sqlite3.DatabaseError) and not isinstance(err, sqlite3.OperationalError) or \
            "malformed" in text or "not a database" in text:
        return StoreError(f"{path}: the run store is damaged ({text}); `factory salvage {path.parent}` copies "
                          f"all that is readable into a fresh store, then rerun the same command")
    return StoreError(f"{path}: {text}")


def _is_full(err: sqlite3.Error) -> bool:
    """SQLite's "database or disk is full": no room (ENOSPC, a quota) or a short write."""
    code = getattr(err, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "disk is full" in str(err) or \
        (code is not None and code & 0xFF == sqlite3.SQLITE_IOERR and os.strerror(errno.ENOSPC) in str(err))


def _reserve(path: Path) -> None:
    """Hold back room for `_write_again` (up to a quarter of what is free): folding the
    write-ahead log in grows run.sqlite before the log's own room is freed."""
    if path.exists():
        return
    size = min(constants.STORE_RESERVE_BYTES, shutil.disk_usage(path.parent).free // 4)
    try:
        with open(path, "wb") as f:
            if size:
                os.posix_fallocate(f.fileno(), 0, size)
    except OSError:
        path.unlink(missing_ok=True)  # no room even for that: the disk-full path says so


def _mb(size: float) -> str:
    return f"{size / 2 ** 20:.1f} MB"


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
