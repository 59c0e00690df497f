"""Each filter stage's decisions, kept in the run store and replayed.

A stage's verdicts are stored under a key made of the stage's type, its options and
a digest of exactly the records that reached it, in order. A rerun whose key matches
replays the stored decisions instead of running the stage; a changed threshold
changes that stage's key (it runs again) and, through what it keeps, the input
digest of the stages after it, while the stages before it replay. A judge that runs
again asks through the journal, so nothing it graded is paid twice.

Every stage's output is its input with the decisions applied: the first time, the
stage runs over a spool of its input and each decision is written to the store as it
is made (a kept record's changes are stored as a difference from its input, not a
copy), and what passes on is the spooled record with that difference applied, just
as a replay rebuilds it from the store; so a replayed run cannot differ from a
computed one. Memory stays flat: the input goes to a file, and only an id -> offset
index of 16 bytes a record is held, in numpy arrays (unless the caller holds every record anyway, `held`: then the records and
their lines stay in memory, which saves writing and parsing them again).
"""

from __future__ import annotations

import array
import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from factory.core import jsonlines
from factory.core.record import Record, Rejection
from factory.core.spool import Spool, read_lines
from filters.base import Stage

# Part of every stage key: bump it when a stage's decisions change meaning.
VERDICTS_VERSION = 1
BASE_FUNNEL = ("stage", "seen", "kept", "dropped")


def through_stages(stages: list[Stage], records: Iterator[Record], store, work: Path,
                   held: bool = False) -> Iterator[Record]:
    """`records` through every stage, each one replayed from the store when it can be.
    Verdicts of stage configurations no longer in the pipeline are dropped at the end.
    `held`: the caller holds every record in memory anyway (`factory filter` reads its
    input whole), so each stage is handed the records themselves, not copies parsed
    back from its spool."""
    keys: list[str] = []
    for position, stage in enumerate(stages):
        records = _through(stage, position, records, store, work, keys, held)
    yield from records
    store.keep_verdicts(keys)
    store.commit()


def _through(stage: Stage, position: int, records: Iterator[Record], store, work: Path,
             keys: list[str], held: bool) -> Iterator[Record]:
    spool = _StageInput(work / f"stage-{position}.jsonl", held)
    try:
        for record in records:
            spool.add(record)
        spool.seal()
        key = stage_key(stage, spool.digest())
        keys.append(key)
        summary = store.verdict_summary(key)
        if summary is None:
            yield from _compute(stage, spool, store, key)
        else:
            yield from _replay(stage, spool, store, key, summary)
    finally:
        spool.close()


def stage_key(stage: Stage, inputs: str) -> str:
    options = stage.config.model_dump(mode="json")
    text = json.dumps([VERDICTS_VERSION, stage.name, options, inputs, stage.data_digest()], sort_keys=True,
                      ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _compute(stage: Stage, spool: "_StageInput", store, key: str) -> Iterator[Record]:
    """Run the stage over its spooled input, storing each decision as it is made, and
    pass on what a replay of those decisions would give: the input record from the spool
    with the stored difference applied (the difference taken through the store's own
    encoding), so a computed run and a replayed one cannot differ."""
    store.clear_verdicts(key)  # what an interrupted earlier attempt left
    position = 0
    rows: list[tuple] = []
    seen, kept = spool.count, 0
    dropped: dict[str, int] = {}

    def decided(record_id: str, keep: bool, reason: str | None, detail: str | None, record: Record) -> Record:
        nonlocal position
        before = spool.raw(record_id)
        # Most kept records are unchanged: equal bytes say so, and then the record is exactly
        # what a replay parses back. A rejection mostly carries what the stage adds (which
        # record it duplicates, say): its difference is taken at once.
        if keep and _line(record_id, record.messages, record.metadata) == before:
            changes = None
        else:
            rebuilt = _record(before)
            changes = store.encode_changes(_difference(rebuilt, record.messages, record.metadata))
            record = _apply(rebuilt, store.decode_changes(changes))
        rows.append((key, position, record_id, keep, reason, detail, changes))
        position += 1
        if len(rows) >= 1000:
            store.put_verdicts(rows)
            rows.clear()
        return record

    def rejected(rejection: Rejection) -> None:
        record = decided(rejection.id, False, rejection.reason, rejection.detail,
                         Record(rejection.id, rejection.messages, rejection.metadata))
        dropped[rejection.reason] = dropped.get(rejection.reason, 0) + 1
        reject(Rejection(record.id, stage.name, rejection.reason, rejection.detail or "", record.messages,
                         record.metadata))

    stage.expected = spool.count
    reject = stage._reject
    stage._reject = rejected
    try:
        for record in stage(spool.records()):
            kept += 1
            yield decided(record.id, True, None, None, record)
    finally:
        stage._reject = reject
    store.put_verdicts(rows)
    funnel = stage.funnel()
    summary = {k: v for k, v in funnel.items() if k not in BASE_FUNNEL}
    store.put_verdict_summary(key, summary)  # last: a summary means every decision is stored
    store.commit()
    stage.summary = {"stage": stage.name, "seen": seen, "kept": kept, "dropped": dropped, **summary,
                     "verdicts": "computed"}


def _replay(stage: Stage, spool: "_StageInput", store, key: str, summary: dict[str, Any]) -> Iterator[Record]:
    seen, kept = spool.count, 0
    dropped: dict[str, int] = {}
    for record_id, keep, reason, detail, changes in store.verdicts(key):
        record = _apply(spool.get(record_id), changes)
        if keep:
            kept += 1
            yield record
        else:
            dropped[reason] = dropped.get(reason, 0) + 1
            stage._reject(Rejection(record.id, stage.name, reason, detail or "", record.messages, record.metadata))
    stage.summary = {"stage": stage.name, "seen": seen, "kept": kept, "dropped": dropped, **summary,
                     "verdicts": "replayed"}


def _difference(before: Record, messages, metadata: dict[str, Any]) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    if messages is not None and messages != before.messages:
        out["messages"] = messages
    changed = {k: v for k, v in metadata.items() if k not in before.metadata or before.metadata[k] != v}
    if changed:
        out["set"] = changed
    removed = [k for k in before.metadata if k not in metadata]
    if removed:
        out["unset"] = removed
    return out or None


def _apply(record: Record, changes: dict[str, Any]) -> Record:
    if not changes:
        return record
    if "messages" in changes:
        record.messages = changes["messages"]
    record.metadata.update(changes.get("set", {}))
    for k in changes.get("unset", ()):
        record.metadata.pop(k, None)
    return record


class _StageInput:
    """A stage's input, in order, readable again by record id: a spool on disk
    (factory/core/spool.py), with an id -> offset map in memory. With `held` (the caller
    holds every record anyway) the records themselves and their lines stay in memory
    instead: the records are handed back as they are, and their lines only tell what
    they were before the stage ran. Its lines are [id, messages, metadata], not
    `Record.to_row()`: stage keys stored by earlier runs hash these bytes."""

    def __init__(self, path: Path, held: bool = False):
        self.held: list[Record] | None = [] if held else None
        self.lines: dict[str, bytes] = {}
        self.spool = None if held else Spool(path)
        # Each line's id hash and offset, in writing order; sorted by hash when sealed.
        self.id_hashes, self.offsets = array.array("q"), array.array("q")
        self.hash = hashlib.sha256()
        self.count = 0

    def add(self, record: Record) -> None:
        line = _line(record.id, record.messages, record.metadata)
        self.hash.update(line)
        self.count += 1
        if self.held is not None:
            self.held.append(record)
            self.lines[record.id] = line
        else:
            self.id_hashes.append(_id_hash(_id_prefix(record.id)))
            self.offsets.append(self.spool.add_line(line))

    def seal(self) -> None:
        if self.spool is not None:
            self.spool.seal()
            hashes = np.frombuffer(self.id_hashes, dtype=np.int64)
            order = np.argsort(hashes, kind="stable")  # equal hashes stay in writing order
            self.id_hashes, self.offsets = hashes[order], np.frombuffer(self.offsets, dtype=np.int64)[order]

    def digest(self) -> str:
        return self.hash.hexdigest()

    def records(self) -> Iterator[Record]:
        if self.held is not None:
            return iter(self.held)
        return map(_record, read_lines(self.spool.path))

    def raw(self, record_id: str) -> bytes:
        if self.held is not None:
            return self.lines[record_id]
        # The last line written with this id (as a dict by id would give), among those
        # whose id hash is the same: their first bytes name their id.
        prefix = _id_prefix(record_id)
        h = _id_hash(prefix)
        first, end = (int(self.id_hashes.searchsorted(h, side)) for side in ("left", "right"))
        for j in range(end - 1, first - 1, -1):
            line = self.spool.line_at(int(self.offsets[j]))
            if line.startswith(prefix) or jsonlines.loads(line)[0] == record_id:
                return line
        raise KeyError(record_id)

    def get(self, record_id: str) -> Record:
        return _record(self.raw(record_id))

    def close(self) -> None:
        if self.spool is not None:
            self.spool.remove()
        self.held, self.lines = None, {}


def _line(record_id: str, messages, metadata: dict[str, Any]) -> bytes:
    """One record as JSON, keys in their order: equal bytes mean equal values in the same
    order, so a record whose line did not change through a stage is exactly the record a
    replay parses back from the spool."""
    return jsonlines.dumpb([record_id, messages, metadata])


def _id_prefix(record_id: str) -> bytes:
    """How a line of `_line` starts: `["<id>",` (the standard library's fallback writes a
    space after the comma: `raw` parses such a line to be sure)."""
    return jsonlines.dumpb([record_id])[:-2] + b","


def _id_hash(prefix: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(prefix, digest_size=8).digest(), "little", signed=True)


def _record(line: bytes) -> Record:
    record_id, messages, metadata = jsonlines.loads(line)
    return Record(record_id, messages, metadata)
