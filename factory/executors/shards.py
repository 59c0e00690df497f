"""Work in shards: the same engine over slices of the units, each with a run store of its
own, merged into the run's store in unit order. Generation shards its units here; the
judge shards the records it has to grade the same way (filters/judge/judge_ray.py).

A shard is a contiguous slice of the run's unit list. It runs `engine.generate.generate_units` (the
engine, its window, limits, endpoint pool and journal) against
`<output>/shards/<k>/run.sqlite`, so a shard that dies resumes from its own journal
and sends only what it had not stored. When every unit of a shard is settled it
writes `done.json` beside its store and is never run again. The driver copies each
finished shard's units and answered requests into the run's store (idempotent: a
merge interrupted half-way is simply done again), and from there the run goes on as
a single-process one: filters, export, card. Unit results do not depend on which
process made them, so the dataset is the single-process dataset.

Limits are split, not shared: each of N shards gets 1/N of `teacher.rpm`, `tpm`,
`max_concurrency` and of what `max_cost` has left, so the whole run never exceeds
them (a shard that finishes early does not hand its share on).

Where shards run is the executor's business (factory/executors/on_ray.py); this module
needs no Ray.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factory.config.pipeline import PipelineFile
from factory.core.cost import Budget
from factory.engine.engine import RunStats
from factory.engine.generate import GENERATE, generate_units
from factory.core.files import atomic_write_text
from factory.engine.progress import Progress
from factory.store.run_folder import RunFolder, whole_run_usage
from factory.core.stopping import RunStopping, Stop, handling_signals
from factory.store.run_store import RunStore

SHARDS_DIR = "shards"
DONE_FILE = "done.json"


@dataclass(frozen=True)
class Shard:
    index: int
    units: tuple[int, ...]  # a contiguous slice of the run's unit list (or of the records a judge grades)
    folder: Path
    noun: str = "units"  # what `units` count, for messages

    @property
    def label(self) -> str:
        return f"{self.noun} {self.units[0]}-{self.units[-1]}"

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.units).encode()).hexdigest()[:16]

    def done(self, fingerprint: str) -> bool:
        marker = self.folder / DONE_FILE
        if not marker.exists():
            return False
        info = json.loads(marker.read_text())
        return info.get("fingerprint") == fingerprint and info.get("units") == self.digest()


def plan(root: Path, units: list[int], shards: int, noun: str = "units") -> list[Shard]:
    """`units` (the run's: the first round's, then any top-up rounds') in `shards`
    contiguous slices of nearly equal size (none empty), in folders under `root`."""
    total = len(units)
    shards = max(1, min(shards, total))
    bounds = [round(k * total / shards) for k in range(shards + 1)]
    return [Shard(k, tuple(units[bounds[k]: bounds[k + 1]]), root / f"{k:05d}", noun) for k in range(shards)]


# A teacher's limits that are global (a provider's account, a server's queue): divided among shards.
SHARED_LIMITS = ("rpm", "tpm", "max_concurrency")


def share_limits(teacher: dict[str, Any], shards: int) -> dict[str, Any]:
    """`teacher` (a teacher's keys, as a judge's overrides give them) with each limit
    divided by `shards` (at least 1 each), so N shards together stay within it."""
    return {name: max(1, value // shards) if name in SHARED_LIMITS and value is not None else value
            for name, value in teacher.items()}


def shard_pipeline(pipeline: PipelineFile, shards: int, cost_left: float | None) -> PipelineFile:
    """The pipeline a shard runs: the teacher's limits and the cost cap divided by
    `shards`, and the executor local (a shard is itself one process)."""
    mine = copy.copy(pipeline)
    mine.config = pipeline.config.model_copy(deep=True)
    teacher = mine.config.teacher
    for name, value in share_limits({name: getattr(teacher, name) for name in SHARED_LIMITS}, shards).items():
        setattr(teacher, name, value)
    # A teacher a task derives with limits of its own (a dialogue role's, a preference
    # candidate's or judge's) is divided too: the rest it takes from the divided one above.
    for overrides in _teacher_overrides(mine.config.generate):
        overrides.update(share_limits(overrides, shards))
    if cost_left is not None:
        mine.config.max_cost = max(cost_left / shards, 1e-9)
    mine.config.executor = mine.config.executor.model_copy(update={"type": "local"})
    return mine


def _teacher_overrides(generate) -> list[dict[str, Any]]:
    """The `teacher:` keys a generate section changes for a role, a candidate or its judge."""
    judge = getattr(generate, "judge", None)
    return [*getattr(generate, "teachers", {}).values(), *getattr(generate, "candidates", []),
            *([judge.teacher] if isinstance(getattr(judge, "teacher", None), dict) else [])]


@dataclass
class ShardOutcome:
    index: int
    status: str  # complete, incomplete, stopped
    reason: str
    exit_code: int
    stats: dict[str, Any]


# The work a shard does in its own store: returns how many of its units it left
# unfinished (0: the shard is done). It may raise RunStopping once `stop` is requested.
ShardWork = Callable[[RunStore, Stop, Budget, RunStats], int]


def in_shard(shard: Shard, pipeline: PipelineFile, fingerprint: str, grace: float, kind: str,
             work: ShardWork) -> ShardOutcome:
    """Do `work` against the shard's own run store, as an invocation of its own; mark the
    shard done when it leaves nothing unfinished.

    Runs wherever the executor puts it (this process, a Ray worker); needs the
    pipeline's files and the output folder at the same paths (a shared filesystem)."""
    stop = Stop(grace)
    # The driver stops a shard by cancelling its task, which Ray delivers as SIGINT: it
    # drains as a local run does, then ends.
    with handling_signals(stop), RunFolder(shard.folder, "shard") as folder:
        store = folder.store
        # What the shard itself paid before (its own invocations'), not answers it was given.
        _, invocations = whole_run_usage(store)
        budget = Budget(pipeline.config.max_cost, already=sum(i["usage"].get("cost", 0.0) for i in invocations))
        stats = RunStats()
        left = len(shard.units)
        try:
            left = work(store, stop, budget, stats)
        except RunStopping:  # the stop below says why
            if not stop.requested:
                raise
        finally:
            folder.stats = {"kind": "shard", kind: stats.as_dict()}
        if stop.requested:
            folder.stats["status"] = stop.status
            return ShardOutcome(shard.index, stop.status, stop.reason, stop.exit_code, stats.as_dict())
        if not left:
            atomic_write_text(shard.folder / DONE_FILE, json.dumps(
                {"fingerprint": fingerprint, "units": shard.digest(), "label": shard.label}) + "\n")
            return ShardOutcome(shard.index, "complete", "", 0, stats.as_dict())
        return ShardOutcome(shard.index, "incomplete", f"{left} {shard.noun} not finished", 3, stats.as_dict())


def run_shard(pipeline: PipelineFile, shard: Shard, fingerprint: str, grace: float) -> ShardOutcome:
    """Generate the shard's units not settled in its own store; mark it done when all are."""
    from factory.tasks import make_task

    task = make_task(pipeline)
    mine = set(shard.units)

    def generate(store: RunStore, stop: Stop, budget: Budget, stats: RunStats) -> int:
        settled = store.settled_units(GENERATE, fingerprint) & mine
        stats.units_done = stats.units_before = len(settled)
        pending = [u for u in shard.units if u not in settled]
        progress = Progress(len(mine), stats, enabled=False)
        asyncio.run(generate_units(task, pipeline, store, stats, stop, fingerprint, pending, progress, budget))
        # Finished as a local run finishes them: done, rejected, or failed (a request the
        # teacher refused for good, journaled: asking again replays the same refusal).
        finished = {u for u, state, _ in store.unit_results(GENERATE, fingerprint, max(mine) + 1)
                    if u in mine and state != "pending"}
        return len(mine) - len(finished)

    return in_shard(shard, pipeline, fingerprint, grace, "generate", generate)


def merge(store: RunStore, shard: Shard, fingerprint: str, since: float) -> int:
    """Copy a finished shard's units and answered requests into the run's store; returns
    the units copied."""
    with RunStore.open(shard.folder) as source:
        units = 0
        mine = set(shard.units)
        for unit, state, results in source.unit_results(GENERATE, fingerprint, max(mine) + 1):
            if unit in mine:
                store.finish_unit(GENERATE, unit, fingerprint, state, results)
                units += 1
        merge_requests(store, source, since)
    store.put_setting(_MERGED + shard.folder.name, _mark(shard, fingerprint))
    store.commit()
    return units


def merge_requests(store: RunStore, source: RunStore, since: float) -> None:
    """Copy every answered request of a shard's store into the run's (the ones it lacks).
    Requests answered after `since` (this invocation's start) count as this invocation's;
    older ones as paid by an earlier one (still in the run's total)."""
    for key, value, created in source.db.execute("SELECT key, value, created FROM requests"):
        store.copy_request(key, value, store.invocation if created >= since else None, created)


def cost_left(pipeline: PipelineFile, store: RunStore, shards: list[Shard], fingerprint: str) -> float | None:
    """What max_cost leaves after everything the run and its shards have paid."""
    cap = pipeline.config.max_cost
    if cap is None:
        return None
    spent = whole_run_usage(store)[0].get("cost", 0.0)
    for shard in shards:
        if (shard.folder / "run.sqlite").exists() and not merged(store, shard, fingerprint):
            with RunStore.open(shard.folder) as source:
                spent += whole_run_usage(source)[0].get("cost", 0.0)
    return max(cap - spent, 0.0)


def merged(store: RunStore, shard: Shard, fingerprint: str) -> bool:
    """Whether the shard's units and requests are in the run's store already."""
    return store.setting(_MERGED + shard.folder.name) == _mark(shard, fingerprint)


def seed(store: RunStore, shard: Shard, fingerprint: str) -> None:
    """Give a shard the units of its range the run's store has settled already (a run
    begun with the local executor): the shard skips them instead of generating them again."""
    mine = set(shard.units)
    known = [(u, state, rows) for u, state, rows in store.unit_results(GENERATE, fingerprint, max(mine) + 1)
             if u in mine and state in ("done", "rejected")]
    if not known:
        return
    with RunStore.open(shard.folder) as target:
        have = target.settled_units(GENERATE, fingerprint)
        for unit, state, rows in known:
            if unit not in have:
                target.finish_unit(GENERATE, unit, fingerprint, state, rows)


def _mark(shard: Shard, fingerprint: str) -> str:
    return f"{fingerprint}:{shard.digest()}"


_MERGED = "shard-merged:"
