"""The judge's requests in shards on a Ray cluster (`executor: {type: ray}`).

The driver writes the records reaching the judge once to a spool file and asks the
run's journal, sending nothing, which of them it cannot grade yet. Those are split into
N contiguous shards by the executor's own plan (factory/executors/shards.py), each under
`<output>/shards/judge-<i>/<k>/` with its records, a run store and, once every record
is graded, `done.json`. Each shard is a Ray task grading its records with the judge
stage itself, through the same engine (window, limits split N ways, endpoint pool),
against its own store; a shard whose worker dies is retried by Ray and resumes from
its journal. The driver copies every shard's answered requests into the run's store as
the shard ends (and, at the next start, those of a shard that never ended), then the
stage grades the spool as in one process and finds every answer in the journal:
decisions, scores, funnel and usage are those of a single-process run.

A record answered in part before (a retry attempt still to ask) takes its journaled
answers into its shard's store, so the shard replays them instead of paying again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

from factory.core import constants
from factory.config.pipeline import PipelineFile
from factory.engine.engine import Engine, RunStats, stored_answer
from factory.executors.on_ray import RETRIES, add_stats, run_shards
from factory.executors.shards import (
    SHARDS_DIR,
    Shard,
    ShardOutcome,
    in_shard,
    merge_requests,
    plan,
    shard_pipeline,
    share_limits,
)
from factory.engine.progress import Progress
from factory.core.record import Record
from factory.core.spool import Spool, read_lines, read_records
from factory.store.run_folder import answered_since, whole_run_usage
from factory.core.stopping import RunStopping, Stop
from factory.store.run_store import STORE_FILE, RunStore
from factory.teachers.base import Completion
from factory.teachers.identity import teacher_identity
from filters.base import StageContext, chunked

INPUT = "records.jsonl"  # a shard's records, beside its store
_MERGED = "judge-shard-merged:"  # settings key prefix: how far a shard's store was copied in


def shards_root(judge, out_dir: Path) -> Path:
    """Where this judge's shards live: one folder per judge stage of the pipeline."""
    return out_dir / SHARDS_DIR / ("judge" if judge.position is None else f"judge-{judge.position}")


def sharded(judge, context: StageContext) -> bool:
    """Whether the judge goes through its shards: on Ray, or to take in what the shards
    of an earlier run on Ray answered (then this run, local, asks only the rest)."""
    return context.cluster is not None or shards_root(judge, context.out_dir).exists()


def asked_in_shards(judge, records: Iterable[Record], grading, store: RunStore, stop: Stop) -> Iterator[Record]:
    """`records` again, once every request grading them is in the run's journal: asked
    in shards on Ray for the records the journal could not grade. Requests `stop` and
    raises RunStopping when a shard ended early (an outage: exit 3) or on a signal."""
    context = judge.context
    root = shards_root(judge, context.out_dir)
    take_in(store, root)
    if context.cluster is None:
        yield from records
        return
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".records-*.jsonl"):  # a stopped driver's (the run folder's lock is ours)
        stale.unlink()
    spool = root / f".records-{os.getpid()}.jsonl"
    try:
        missing, found = _spool(judge, records, grading, spool)
        if missing:
            _ask(judge, spool, missing, found, store, root, stop)
        yield from read_records(spool)
    finally:
        spool.unlink(missing_ok=True)


def take_in(store: RunStore, root: Path) -> None:
    """Copy into the run's store what any shard under `root` answered since it was last
    copied (a shard killed, or left by a stopped run): nothing answered is asked again."""
    if not root.exists():
        return
    since = time.time()
    for folder in sorted(p.parent for p in root.glob(f"*/{STORE_FILE}")):
        _merge(store, folder, since)


def _merge(store: RunStore, folder: Path, since: float) -> dict[str, float]:
    """Copy the shard's answered requests into the run's store, unless they are there
    already; returns what those it answered since `since` used (see answered_since)."""
    key = f"{_MERGED}{folder.parent.name}/{folder.name}"
    with RunStore.open(folder) as source:
        # The shard's last invocation names its state: the store changes only when it runs.
        last = source.db.execute("SELECT id, ended FROM invocations ORDER BY id DESC LIMIT 1").fetchone()
        mark = list(last) if last else None
        if mark is not None and store.setting(key) == mark:
            return {}
        merge_requests(store, source, since)
        used = answered_since(source, since)
    store.put_setting(key, mark)
    store.commit()
    return used


def _spool(judge, records: Iterable[Record], grading, spool: Path) -> tuple[list[int], dict[int, list[str]]]:
    """Write `records` to `spool`; returns the positions of those the journal cannot grade
    alone, and for those, the keys of the requests it holds of theirs."""
    missing: list[int] = []
    found: dict[int, list[str]] = {}
    position = 0
    with Spool(spool) as out:
        for chunk in chunked(records, constants.JUDGE_CHUNK):
            for record in chunk:
                out.add(record.to_row())
            task = judge.grade_task(chunk)
            units, keys = grading.with_engine(lambda engine, task=task: unanswered(task, engine))
            missing.extend(position + u for u in units)
            found.update((position + u, k) for u, k in keys.items())
            position += len(chunk)
    return missing, found


def _ask(judge, spool: Path, missing: list[int], found: dict[int, list[str]], store: RunStore, root: Path,
         stop: Stop) -> None:
    context = judge.context
    pipeline = context.pipeline
    executor = pipeline.config.executor
    shards = plan(root, missing, executor.shards, noun="records")
    fingerprints = _write_inputs(judge, spool, shards)
    todo = [s for s in shards if not s.done(fingerprints[s.index])]
    for shard in todo:
        _seed(store, shard, found)
    if not todo:
        return
    ray = context.cluster.ray()
    cap = pipeline.config.max_cost
    left = None if cap is None else max(cap - whole_run_usage(store)[0].get("cost", 0.0), 0.0)
    mine = shard_pipeline(pipeline, len(shards), left)
    # The judge's own limits (its `teacher:` keys) are divided as the pipeline's are.
    config = judge.config.model_copy(update={"teacher": share_limits(judge.config.teacher, len(shards))})
    remote = ray.remote(num_cpus=1, max_retries=RETRIES)(grade_shard)
    since = time.time()
    shown = RunStats()  # the shards' own counters, for the progress line
    progress = Progress(len(missing), shown, label="judge shards", enabled=context.show_progress)

    def finished(shard: Shard, outcome: ShardOutcome) -> None:
        add_stats(shown, outcome.stats)
        # An unfinished shard's answers too: paid, so kept. What the shard's store says it
        # answered counts, worker deaths included: the stage's usage, as one process's.
        # The pass that grades from the journal next replays each of those requests, so
        # they are taken off its replays: sent once, never counted as replayed.
        used = _merge(store, shard.folder, since)
        add_stats(judge.stats, {**used, "replayed": -used.get("sent", 0) - used.get("bad_responses", 0)})
        context.budget.spent += used.get("cost", 0.0)
        if outcome.status == "complete":
            shown.units_done += len(shard.units)
            progress.update()

    progress.start()
    try:
        run_shards(ray, lambda shard: remote.remote(mine, type(judge), config, judge.where, shard,
                                                    fingerprints[shard.index], stop.grace), todo, stop, finished)
    finally:
        progress.close()
    if stop.requested:
        raise RunStopping(stop.reason)


def _write_inputs(judge, spool: Path, shards: list[Shard]) -> dict[int, str]:
    """Each shard's records into its folder; returns each shard's fingerprint: what it
    asks (the judge's settings, rubrics and teacher) and its records, for done.json."""
    asking = _asking(judge)
    fingerprints = {}
    with closing(read_lines(spool)) as spooled:
        lines = enumerate(spooled)
        for shard in shards:
            shard.folder.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256(asking.encode())
            tmp = shard.folder / f".{INPUT}.tmp"
            with Spool(tmp) as out:
                for position in shard.units:  # ascending, and the shards follow each other
                    for index, line in lines:
                        if index == position:
                            out.add_line(line)
                            digest.update(line)
                            break
            tmp.replace(shard.folder / INPUT)
            fingerprints[shard.index] = digest.hexdigest()[:32]
    return fingerprints


def _asking(judge) -> str:
    pipeline = judge.context.pipeline
    teacher = judge.teacher_config(pipeline)
    return json.dumps([judge.config.model_dump(mode="json"), {k: t.sha256 for k, t in judge.rubrics.items()},
                       teacher_identity(teacher), pipeline.config.seed], sort_keys=True, default=str)


def _seed(store: RunStore, shard: Shard, found: dict[int, list[str]]) -> None:
    """Give the shard the answers the run's journal holds for its records (an attempt
    already paid for), so it replays them."""
    keys = [key for position in shard.units for key in found.get(position, ())]
    if not keys:
        return
    with RunStore.open(shard.folder) as target:
        for key, value, created in store.request_rows(keys):
            target.copy_request(key, value, None, created)


class NotJournaled(LookupError):
    """The journal has no answer to this request."""


class _JournalOnly:
    """An asker that answers from the journal alone, noting the keys it found."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.found: list[str] = []

    async def ask(self, request, unit, step) -> Completion:
        key, stored = self.engine.journaled(request, unit, step)
        if stored is None:
            raise NotJournaled(key)
        self.found.append(key)
        return stored_answer(stored)


async def unanswered(task, engine: Engine) -> tuple[list[int], dict[int, list[str]]]:
    """The units of the judge's `task` the journal cannot grade alone (a request of theirs
    was never answered), and for each of them the keys of the requests it does hold.
    Asks nothing: every request goes through the journal only."""
    missing: list[int] = []
    found: dict[int, list[str]] = {}
    for unit in range(task.units()):
        asker = _JournalOnly(engine)
        try:
            await task.run_unit(unit, asker)
        except NotJournaled:
            missing.append(unit)
            if asker.found:
                found[unit] = asker.found
    return missing, found


def grade_shard(pipeline: PipelineFile, stage: type, config: Any, where: str, shard: Shard, fingerprint: str,
                grace: float) -> ShardOutcome:
    """Grade the shard's records with a judge (of class `stage`, the driver's) of `config`,
    against the shard's own store (a Ray task); the grades themselves are the driver's to
    make, from the journal."""
    judge = stage(config)
    judge.where = where
    judge.prepare(pipeline, where)

    def grade(store: RunStore, stop: Stop, budget, stats: RunStats) -> int:
        judge.stats = stats
        judge.bind(lambda rejection: None,
                   StageContext(pipeline, shard.folder, show_progress=False, budget=budget, store=store, stop=stop))
        for _ in judge.process(read_records(shard.folder / INPUT)):
            pass
        return 0

    return in_shard(shard, pipeline, fingerprint, grace, "judge", grade)
