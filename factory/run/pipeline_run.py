"""One run of a pipeline: prepare (sends nothing), generate, filter, export.

Everything the run learns goes to the run store first; the outputs are views of it,
built only when every unit is settled. A run stopped any way (a signal, a teacher
outage, max_cost, a crash, kill -9) leaves its store consistent, and the same command
finishes it, replaying what was answered and sending only the rest.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import os
import platform
import shutil
import time
from collections import Counter
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator

from factory.core import constants, jsonlines
from factory.config.pipeline import PipelineFile, TeacherConfig
from factory.core.cost import Budget, BudgetReached, cost_entry
from factory.engine.engine import RunStats, run_task
from factory.core.errors import TemplateError
from factory.core.files import atomic_write_text
from factory.core.path_hiding import local_replacements, shown_path
from factory.core.quiet_libraries import library_progress_off
from factory.engine.progress import Progress
from factory.run.quota import Quotas, Surplus, build_quotas, kept_by_cell, plan_round
from factory.core.record import Record, Rejection
from factory.outputs.report import RejectedSummary, Summaries
from factory.store.run_folder import RunFolder, whole_run_timeline, whole_run_usage
from factory.core.redaction import Redactor
from factory.engine.open_engine import open_engine
from factory.inputs.pipeline_files import SNAPSHOT_DATA_BYTES, SNAPSHOT_DIR, copy_files, pipeline_name
from factory.core.stopping import RunStopping, Stop, StopNow, Stopped, handling_signals
from factory.store.run_store import RunStore
from factory.tasks.base import RoleAsker, Task
from factory.teachers.base import Teacher
from factory.inputs.templates import Template, with_includes
from filters.base import Stage, StageContext

GENERATE = "generate"  # the units table's scope for generation units
REFUSED = "refused"  # the rejection reason of a unit whose request the teacher refused for good


@dataclass
class Prepared:
    pipeline: PipelineFile
    task: Task
    stages: list[Stage]
    examples: list[dict[str, Any]]

    def templates(self) -> dict[str, Template]:
        """name -> every template the pipeline names or renders: the task's (those of
        another mode too), the stages' (a judge's rubric), and what they include."""
        found = list(self.task.templates.values())
        for name in self.pipeline.config.generate.templates.values():
            if name not in {t.name for t in found}:
                try:
                    found.append(self.task.library.peek(name))
                except TemplateError:
                    pass  # another mode's template that cannot load: not this run's
        for stage in self.stages:
            found.extend(stage.templates())
        return with_includes(found)


def prepare(pipeline: PipelineFile) -> Prepared:
    """Everything that can be checked without a teacher: seeds, templates, filters.

    Raises a UserError (exit 2) on the first problem; sends nothing, writes nothing.
    """
    from factory.compare.reference import check_reference
    from factory.outputs.formats import check_formats
    from factory.tasks import make_task
    from filters import build_stages, check_models, check_stage_inputs

    task = make_task(pipeline)
    check_formats(pipeline.config.output.formats, task.multi_turn, f"{pipeline.path}: output.formats", task.pairs)
    examples = task.check()
    stages = build_stages(pipeline.config.filters, pipeline)
    check_stage_inputs(stages, task.roles(), task.metadata_fields(), f"the {task.name} task writes")
    build_quotas(pipeline.config.generate, task.seeds, str(pipeline.path))  # a bad balance is exit 2 here
    check_reference(pipeline)
    check_models(stages)
    return Prepared(pipeline, task, stages, examples)


@dataclass
class RunResult:
    out_dir: Path
    requested: int
    kept: int
    rejected: int
    stats: RunStats
    funnel: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)


def run_pipeline(prepared: Prepared, out_dir: Path, show_progress: bool = True,
                 grace: float = constants.DRAIN_GRACE_S, stop: Stop | None = None) -> RunResult:
    """Generate, filter and export into `out_dir`; returns what was kept.

    Raises Stopped (exit 3, 130, 143) when the run ended before it was complete, with
    run.json saying so and no other output; FolderInUse (exit 2) when another process
    works in `out_dir`. `stop`: the caller's own, when it stops the run some other way
    than by a signal to this thread (the Python API running it on a worker thread)."""
    stop = stop or Stop(grace)
    teacher = prepared.pipeline.config.teacher
    with handling_signals(stop), library_progress_off(), ExitStack() as stack:
        folder = stack.enter_context(RunFolder(out_dir, "run"))
        if teacher.launch is not None:
            # The server lives for the whole run: generation and any filter that asks the teacher.
            on_exit = lambda why: stop.request("server", 3, why)  # noqa: E731
            executor = prepared.pipeline.config.executor
            if executor.type == "ray":  # one per GPU node of the cluster, all in the endpoint pool
                from factory.executors.on_ray import connect
                from factory.teachers.launch_ray import launched_on_ray

                urls = stack.enter_context(launched_on_ray(teacher, out_dir, connect(executor.address), on_exit))
                teacher.base_url = urls[0] if len(urls) == 1 else urls
            else:
                from factory.teachers.launch import launched

                teacher.base_url = stack.enter_context(launched(teacher, out_dir, on_exit=on_exit))
        try:
            return _run(prepared, folder, stop, show_progress)
        except StopNow:
            # A second signal, or one while filters or the export ran: what completed is
            # stored; say so in run.json and leave.
            task = prepared.task
            fingerprint = generation_fingerprint(prepared.pipeline, task)
            raise _stopped(folder, prepared.pipeline, task, fingerprint, RunStats(), stop) from None


def generation_fingerprint(pipeline: PipelineFile, task: Task) -> str:
    """What decides a unit's results, but the count: a stored unit with another
    fingerprint is stale (it is generated again, its requests replayed when unchanged)."""
    cfg = pipeline.config
    generate = cfg.generate.model_dump(mode="json")
    generate.pop("count", None)
    teachers = {"": cfg.teacher, **task.role_teachers(pipeline)}
    parts = {
        "name": cfg.name, "seed": cfg.seed, "generate": generate, "data": task.data_digest(),
        "templates": {role: t.sha256 for role, t in task.templates.items()},
        "teachers": {role: teacher_identity(t) for role, t in teachers.items()},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def teacher_identity(config: TeacherConfig) -> dict[str, Any]:
    """The teacher settings that change answers (not where it is served or how fast)."""
    identity = {"backend": config.backend, "model": config.model, "sampling": config.sampling.model_dump(),
                "structured_output": config.structured_output, "send_seed": config.send_seed, "dtype": config.dtype}
    if config.extra_body:  # absent when empty: runs from before it existed stay current
        identity["extra_body"] = config.extra_body
    return identity


def _run(prepared: Prepared, folder: RunFolder, stop: Stop, show_progress: bool) -> RunResult:
    pipeline, task = prepared.pipeline, prepared.task
    cfg = pipeline.config
    store = folder.store
    redact = shared_text(pipeline, folder.out_dir)
    fingerprint = generation_fingerprint(pipeline, task)
    quotas = build_quotas(cfg.generate, task.seeds, str(pipeline.path))
    rounds_key = f"generate/rounds/{fingerprint}"
    rounds: list[list[int]] = store.setting(rounds_key) or []
    task.extra_units = [u for r in rounds for u in r]
    stats = RunStats()
    started_at = now()
    before, _ = whole_run_usage(store)
    budget = Budget(cfg.max_cost, already=before.get("cost", 0.0))
    context = StageContext(pipeline, folder.out_dir, show_progress, budget, store=store, stop=stop)
    folder.stats = {"kind": "run"}
    teachers: dict = {}
    concurrency: dict = {}
    while True:
        units = task.unit_list()
        wanted = set(units)
        settled = store.settled_units(GENERATE, fingerprint) & wanted
        stats.units_done = stats.units_before = len(settled)
        progress = Progress(len(units), stats, enabled=show_progress)
        try:
            if cfg.executor.type == "ray":
                from factory.executors.on_ray import generate_on_ray

                generate_on_ray(pipeline, folder, stats, stop, fingerprint, units, progress, budget)
            else:
                teachers, concurrency = asyncio.run(generate_units(
                    task, pipeline, store, stats, stop, fingerprint, [u for u in units if u not in settled], progress,
                    budget))
        except BudgetReached as err:
            _unfinished(folder, pipeline, task, fingerprint, stats, "incomplete", str(err))
            raise Stopped(str(err), 1, "incomplete") from None
        finally:
            folder.stats = {"kind": "run", "generate": stats.as_dict()}
        if stop.requested:
            raise _stopped(folder, pipeline, task, fingerprint, stats, stop)
        if quotas is None:
            break
        try:
            kept_cells = _kept_by_cell(prepared, quotas, store, fingerprint, units, context)
        except (RunStopping, StopNow):
            if not stop.requested:
                raise
            raise _stopped(folder, pipeline, task, fingerprint, stats, stop) from None
        if not quotas.short(kept_cells):
            break
        new = _next_round(task, quotas, kept_cells, units, len(rounds) + 1, cfg.generate.max_rounds)
        if not new:
            message = _short_message(quotas, kept_cells, len(rounds) + 1, cfg.generate.max_rounds)
            _unfinished(folder, pipeline, task, fingerprint, stats, "incomplete", message)
            raise Stopped(message, 1, "incomplete")
        rounds.append(new)
        store.put_setting(rounds_key, rounds)
        store.commit()
        task.extra_units = [*task.extra_units, *new]
    generated_at = time.perf_counter()

    staging = folder.staging()
    left_out = copy_files(pipeline, prepared.templates(), staging / SNAPSHOT_DIR, SNAPSHOT_DATA_BYTES, redact,
                          exclude=folder.out_dir)
    requested = task.requested_total()
    generated = _generation_funnel(store, fingerprint, units, requested)
    stages = prepared.stages + ([Surplus(quotas)] if quotas is not None else [])
    seen = Summaries()
    try:
        kept, examples, filter_rejects = apply_stages(stages, records_from_store(store, fingerprint, units),
                                                      context, staging, redact, pairs=task.pairs, seen=seen)
    except (RunStopping, StopNow):  # a signal or an outage while a filter stage asked the teacher
        shutil.rmtree(staging, ignore_errors=True)
        if not stop.requested:
            raise
        raise _stopped(folder, pipeline, task, fingerprint, stats, stop) from None
    funnel_stages = [generated] + [stage.outcome() for stage in stages]
    write_rejected(staging / "rejected.jsonl", [rejections_from_store(store, fingerprint, units)],
                   filter_rejects, redact, seen)
    rejected = sum(sum(s["dropped"].values()) for s in funnel_stages)
    usage, invocations = whole_run_usage(store, "complete")
    info = {
        "name": cfg.name,
        "status": "complete",
        **({"dry_run": True} if pipeline.dry_run else {}),
        "pipeline_file": f"{SNAPSHOT_DIR}/{pipeline_name(pipeline)}",
        **({"not_copied": left_out} if left_out else {}),
        "config": config_summary(pipeline, folder.out_dir),
        "teacher": teachers.pop(None).describe() if None in teachers else teacher_identity(cfg.teacher),
        **({"role_teachers": {role: t.describe() for role, t in teachers.items()}} if teachers else {}),
        "sampling": cfg.teacher.sampling.model_dump(),
        "task": task.describe(),
        "templates": [{"name": t.name, "sha256": t.sha256} for t in task.templates.values()],
        "seed_space": task.seeds.describe(),
        "versions": versions(),
        "started_at": started_at,
        "finished_at": now(),
        "timings": {
            "startup_s": stats.as_dict()["startup_s"],
            "generate_s": generated_at - stats.started,
            "filter_and_export_s": time.perf_counter() - generated_at,
        },
        "usage": {**usage, "replayed_from_journal": stats.replayed},
        "invocations": invocations,
        **cost_entry(budget, cfg, usage.get("cost", 0.0)),
        "engine": {**stats.as_dict(), "throttled": concurrency.get("throttled", 0), "concurrency": concurrency,
                   "timeline": whole_run_timeline(store)},
        "funnel": {"requested": requested, "stages": funnel_stages, "kept": kept, "rejected": rejected},
        **({"quota": _quota_summary(task, quotas, stages[-1], units, len(rounds) + 1)} if quotas else {}),
    }
    compare_with_reference(info, pipeline, staging, folder.out_dir, kept, redact)
    write_reports(staging, info, examples, redact, seen)
    folder.publish(staging)
    return RunResult(folder.out_dir, requested, kept, rejected, stats, info["funnel"], info["usage"])


def _stopped(folder: RunFolder, pipeline: PipelineFile, task: Task, fingerprint: str, stats: RunStats,
             stop: Stop) -> Stopped:
    """run.json for a run that stopped early, and the one line that says so."""
    counts = _unfinished(folder, pipeline, task, fingerprint, stats, stop.status, stop.reason)
    total = len(task.unit_list())
    pending = total - counts["settled"]
    if stop.kind == "signal":
        message = f"stopped: {counts['settled']} done, {pending} pending; rerun to resume"
    else:
        message = (f"incomplete: {pending} of {total} units pending ({stop.reason}); "
                   f"rerun the same command to finish")
    return Stopped(message, stop.exit_code, stop.status)


def _unfinished(folder: RunFolder, pipeline: PipelineFile, task: Task, fingerprint: str, stats: RunStats,
                status: str, reason: str) -> dict[str, int]:
    store = folder.store
    store.commit()
    units = task.unit_list()
    counts = store.unit_counts(GENERATE, fingerprint, set(units))
    settled = counts.get("done", 0) + counts.get("rejected", 0)
    usage, invocations = whole_run_usage(store, status)
    folder.unfinished({
        "name": pipeline.config.name, "status": status, "reason": reason,
        **({"dry_run": True} if pipeline.dry_run else {}),
        "pipeline_file": shown_path(pipeline.path), "config": config_summary(pipeline, folder.out_dir),
        "units": {"total": len(units), "done": counts.get("done", 0), "rejected": counts.get("rejected", 0),
                  "failed": counts.get("failed", 0), "pending": len(units) - settled - counts.get("failed", 0)},
        "usage": {**usage, "replayed_from_journal": stats.replayed}, "invocations": invocations,
        "versions": versions(), "finished_at": now(),
    })
    return {**counts, "settled": settled}


async def generate_units(task: Task, pipeline: PipelineFile, store: RunStore, stats: RunStats, stop: Stop,
                         fingerprint: str, pending: list[int], progress: Progress,
                         budget: Budget) -> tuple[dict[str | None, Teacher], dict]:
    """Generate the `pending` units; returns the teachers used (None: the pipeline's) and
    how the in-flight window was sized."""
    main = pipeline.config.teacher

    def sink(unit: int, results: list[Record | Rejection]) -> None:
        rows = [_result_row(r) for r in results]
        if any(isinstance(r, Record) for r in results):
            state = "done"
        elif results and all(r.reason == REFUSED for r in results):
            state = "failed"
        else:
            state = "rejected"
        store.finish_unit(GENERATE, unit, fingerprint, state, rows)
        store.commit_soon(asyncio.get_running_loop())

    async with open_engine(main, store, stats, stop, budget) as engine, AsyncExitStack() as stack:
        by_role = {}
        for role, config in task.role_teachers(pipeline).items():
            if config != main:  # a role that changes nothing shares the pipeline's engine
                by_role[role] = await stack.enter_async_context(open_engine(config, store, stats, stop, budget))
        for opened in (engine, *by_role.values()):
            if hasattr(opened.teacher, "progress_part"):  # batch mode: batches and the requests in them
                progress.parts.append(opened.teacher.progress_part)
                opened.teacher.on_event = progress.event
        try:
            progress.start()
            if pending:
                await run_task(task, engine, sink, progress.update, asker=RoleAsker(engine, by_role),
                               units=iter(pending))
        finally:
            progress.close()
            store.commit()
        teachers = {None: engine.teacher, **{role: e.teacher for role, e in by_role.items()}}
        return teachers, engine.concurrency()


def _result_row(item: Record | Rejection) -> dict[str, Any]:
    if isinstance(item, Record):
        return {"id": item.id, "messages": item.messages, "metadata": item.metadata}
    return {"id": item.id, "stage": item.stage, "reason": item.reason, "detail": item.detail,
            "messages": item.messages, "metadata": item.metadata}


def _unit_rows(store: RunStore, fingerprint: str, units: list[int]) -> Iterator[dict]:
    """The stored rows of these units, in unit order: the same dataset whatever the timing."""
    wanted = set(units)
    for unit, _, rows in store.unit_results(GENERATE, fingerprint, max(units, default=-1) + 1):
        if unit in wanted:
            yield from rows


def records_from_store(store: RunStore, fingerprint: str, units: list[int]) -> Iterator[Record]:
    for row in _unit_rows(store, fingerprint, units):
        if "reason" not in row:
            yield Record(row["id"], row["messages"], row["metadata"])


def rejections_from_store(store: RunStore, fingerprint: str, units: list[int]) -> Iterator[dict]:
    for row in _unit_rows(store, fingerprint, units):
        if "reason" in row:
            yield row


def _generation_funnel(store: RunStore, fingerprint: str, units: list[int], requested: int) -> dict[str, Any]:
    kept = 0
    reasons: dict[str, int] = {}
    for row in _unit_rows(store, fingerprint, units):
        if "reason" in row:
            reasons[row["reason"]] = reasons.get(row["reason"], 0) + 1
        else:
            kept += 1
    return {"stage": "generate", "seen": requested, "kept": kept, "dropped": reasons}


# -- generate.keep: top-up rounds -----------------------------------------------------------

def _kept_by_cell(prepared: Prepared, quotas: Quotas, store: RunStore, fingerprint: str, units: list[int],
                  context: StageContext) -> Counter:
    """What the filters keep of the units so far, per cell. The stages' verdicts are
    stored, so the final pass over the same records replays them."""
    from filters import build_stages
    from filters.verdicts import through_stages

    stages = build_stages(prepared.pipeline.config.filters, prepared.pipeline)  # fresh counters
    for stage in stages:
        stage.bind(lambda rejection: None, context)
    work = context.out_dir / f".rounds-{os.getpid()}"
    work.mkdir(exist_ok=True)
    try:
        return kept_by_cell(quotas, through_stages(stages, records_from_store(store, fingerprint, units),
                                                   store, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _next_round(task: Task, quotas: Quotas, kept: Counter, units: list[int], done_rounds: int,
                max_rounds: int) -> list[int]:
    """The next top-up round's units; [] when max_rounds is reached or no unit can fill a short cell."""
    if done_rounds >= max_rounds:
        return []
    requested: Counter = Counter()
    for unit in units:
        requested[quotas.cell(task.unit_seed(unit))] += len(task.sample_ids(unit))
    start = max(units, default=-1) + 1
    per_unit = max(1, len(task.sample_ids(start)))
    short = sum(quotas.short(kept).values())
    scan = min(constants.TOP_UP_SCAN_LIMIT, 1000 * short + 10 * task.seeds.size)
    return plan_round(quotas, kept, requested, per_unit, task.unit_seed, start, scan)


def _short_message(quotas: Quotas, kept: Counter, rounds: int, max_rounds: int) -> str:
    short = quotas.short(kept)
    cells = "; ".join(f"{quotas.label(c)}: {n} short" for c, n in list(short.items())[:5])
    got = sum(min(kept[c], t) for c, t in quotas.targets.items())
    why = (f"generate.max_rounds ({max_rounds}) reached" if rounds >= max_rounds
           else "no seed combination left for the short cells")
    return (f"incomplete: kept {got} of generate.keep {quotas.keep} after {rounds} round(s): {why} ({cells}); "
            "raise generate.max_rounds (or lower keep) and rerun the same command: nothing answered is paid again")


def _quota_summary(task: Task, quotas: Quotas, surplus: Surplus, units: list[int], rounds: int) -> dict[str, Any]:
    requested: Counter = Counter()
    for unit in units:
        requested[quotas.cell(task.unit_seed(unit))] += len(task.sample_ids(unit))
    kept = surplus.outcome().get("cells", {})
    return {"keep": quotas.keep, "rounds": rounds, "variables": quotas.variables,
            "cells": [{"cell": quotas.label(c), "quota": t, "requested": requested[c], "kept": kept.get(quotas.label(c), 0)}
                      for c, t in quotas.targets.items()]}


def compare_with_reference(info: dict[str, Any], pipeline: PipelineFile, staging: Path, out_dir: Path, kept: int,
                           redact: Redactor) -> None:
    """With output.reference set: compare.json in `staging` (the report draws it) and its
    headline numbers in run.json; embeddings cached in the run folder, as the diversity stage's."""
    from factory.compare.reference import compare_kept

    began = time.perf_counter()
    summary = compare_kept(pipeline, staging, out_dir, kept, redact)
    if summary is not None:
        info["reference"] = summary
        info["timings"]["compare_s"] = time.perf_counter() - began


def write_reports(out_dir: Path, info: dict[str, Any], examples: list[dict], redact: Redactor,
                  seen: Summaries | None = None) -> None:
    """The dataset card, run.json and report.html, all redacted, all written atomically
    (`seen`: the report's summaries, made while the outputs were written)."""
    from factory.outputs.card import local_place, render_card
    from factory.outputs.report import build_report

    output = info["config"]["output"]
    place = local_place(output["dir"], output["formats"])
    atomic_write_text(out_dir / "README.md", redact(render_card(info, examples, place)))
    atomic_write_text(out_dir / "run.json", redact(json.dumps(info, indent=2, ensure_ascii=False, default=str)) + "\n")
    build_report(out_dir, seen)


def apply_stages(stages: list[Stage], records: Iterator[Record], context: StageContext, staging: Path,
                 redact: Redactor, pairs: bool = False, held: bool = False,
                 seen: Summaries | None = None) -> tuple[int, list[dict], Path]:
    """Run `records` through the filter stages and write the kept ones as the dataset in `staging`
    (as preference rows when `pairs`; `held`: the caller holds all of `records` in memory;
    `seen`: the report's summaries, fed as rows are written).

    Returns the kept count, a few example records for the card, and the file the
    stages' rejections went to.
    """
    from factory.outputs.dataset import write_dataset
    from filters.verdicts import through_stages

    work = staging / ".work"
    work.mkdir(parents=True, exist_ok=True)
    filter_rejects = work / "rejected.filters.jsonl"
    with open(filter_rejects, "w", encoding="utf-8") as rej:
        def rejected(r: Rejection) -> None:
            line = redact(r.to_json())
            rej.write(line + "\n")
            if seen is not None:
                seen.rejected.note(r.stage, r.reason, line)

        for stage in stages:
            stage.bind(rejected, context)
        records = through_stages(stages, records, context.store, work, held)
        examples: list[dict] = []
        output = context.pipeline.config.output
        kept = write_dataset(_sample(records, examples), staging, work, output.formats, pairs=pairs,
                             reasoning_in_messages=output.reasoning == "messages", held=held,
                             each_row=seen.kept.add if seen is not None else None)
    return kept, examples, filter_rejects


def _sample(records: Iterator[Record], examples: list[dict]) -> Iterator[Record]:
    for record in records:
        if len(examples) < 3:
            examples.append({"messages": record.messages})
        yield record


def write_rejected(path: Path, earlier: list[Iterable[dict]], filtered: Path, redact: Redactor,
                   seen: Summaries | None = None) -> None:
    """rejected.jsonl: the `earlier` rejections (generation's), then the filter stages' from
    `filtered`, which is moved in whole when there are no earlier ones. `seen.rejected`
    (the filter stages' rows) becomes the summary of the whole file."""
    if not earlier:
        filtered.replace(path)
    else:
        tmp = path.with_name(f".{path.name}.tmp")
        first = RejectedSummary()
        with open(tmp, "w", encoding="utf-8") as out:
            for rows in earlier:
                for row in rows:
                    line = redact(jsonlines.dumps(row))
                    out.write(line + "\n")
                    first.note(row.get("stage", "?"), row.get("reason", "?"), line)
        if seen is not None:
            seen.rejected = first.then(seen.rejected)
        with open(tmp, "ab") as out, open(filtered, "rb") as f:
            shutil.copyfileobj(f, out)
        tmp.replace(path)
    shutil.rmtree(filtered.parent, ignore_errors=True)


def config_summary(pipeline: PipelineFile, out_dir: Path) -> dict[str, Any]:
    from factory.teachers.openai_teacher import redact_url

    data = pipeline.config.model_dump(mode="json")
    url = data["teacher"].get("base_url")
    if url:
        data["teacher"]["base_url"] = [redact_url(u) for u in url] if isinstance(url, list) else redact_url(url)
    data["output"]["dir"] = shown_path(out_dir)
    return data


def shared_text(pipeline: PipelineFile, out_dir: Path) -> Redactor:
    """What every output meant to be shared goes through: no key value, no local path."""
    return Redactor.for_config(pipeline.raw).with_replacements(local_replacements(out_dir, pipeline.base_dir))


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("factory", "openai", "datasets", "transformers", "torch", "jinja2", "pydantic", "aiohttp"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


