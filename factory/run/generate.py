"""One run of a pipeline: prepare (sends nothing), generate, filter, export.

Everything the run learns goes to the run store first; the outputs are views of it,
built only when every unit is settled. A run stopped any way (a signal, a teacher
outage, max_cost, a crash, kill -9) leaves its store consistent, and the same command
finishes it, replaying what was answered and sending only the rest.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from factory.config.pipeline import PipelineFile
from factory.core import constants
from factory.core.cost import Budget, BudgetReached, cost_entry
from factory.core.path_hiding import shown_path
from factory.core.quiet_libraries import library_progress_off
from factory.core.redaction import Redactor
from factory.core.stopping import RunStopping, Stop, StopNow, Stopped, handling_signals
from factory.engine.engine import RunStats
from factory.engine.generate import GENERATE, generate_units, records_from_store, rejections_from_store, unit_rows
from factory.engine.progress import Progress
from factory.executors.on_ray import Cluster, cluster_for, generate_on_ray
from factory.inputs.pipeline_files import SNAPSHOT_DATA_BYTES, SNAPSHOT_DIR, copy_files, pipeline_name
from factory.outputs.report import Summaries
from factory.run.export import apply_stages, write_rejected
from factory.run.finish import RunResult, compare_with_reference, run_record, shared_text, now, write_reports
from factory.run.prepare import Prepared
from factory.run.quota import Surplus, build_quotas
from factory.run.top_up import kept_by_cell_so_far, next_round, quota_summary, short_message
from factory.store.run_folder import RunFolder, whole_run_timeline, whole_run_usage
from factory.store.run_store import RunStore
from factory.tasks.base import Task
from factory.teachers.identity import teacher_identity
from filters.base import StageContext


def run_pipeline(prepared: Prepared, out_dir: Path, show_progress: bool = True,
                 grace: float = constants.DRAIN_GRACE_S, stop: Stop | None = None) -> RunResult:
    """Generate, filter and export into `out_dir`; returns what was kept.

    Raises Stopped (exit 3, 130, 143) when the run ended before it was complete, with
    run.json saying so and no other output; FolderInUse (exit 2) when another process
    works in `out_dir`. `stop`: the caller's own, when it stops the run some other way
    than by a signal to this thread (the Python API running it on a worker thread)."""
    stop = stop or Stop(grace)
    teacher = prepared.pipeline.config.teacher
    cluster = cluster_for(prepared.pipeline.config.executor)
    with handling_signals(stop), library_progress_off(), ExitStack() as stack:
        folder = stack.enter_context(RunFolder(out_dir, "run"))
        if teacher.launch is not None:
            # The server lives for the whole run: generation and any filter that asks the teacher.
            on_exit = lambda why: stop.request("server", 3, why)  # noqa: E731
            if cluster is not None:  # one per GPU node of the cluster, all in the endpoint pool
                from factory.teachers.launch_ray import launched_on_ray

                urls = stack.enter_context(launched_on_ray(teacher, out_dir, cluster.ray(), on_exit))
                teacher.base_url = urls[0] if len(urls) == 1 else urls
            else:
                from factory.teachers.launch import launched

                secrets = Redactor.for_config(prepared.pipeline.raw).secrets  # the judge's key too
                # The run's only server is gone: what is in flight can never be answered (its
                # retries would only back off), so there is nothing to drain: stop at once.
                teacher.base_url = stack.enter_context(launched(
                    teacher, out_dir, on_exit=lambda why: stop.request("server", 3, why, grace=0), secrets=secrets))
        try:
            return _run(prepared, folder, stop, show_progress, cluster)
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


def _run(prepared: Prepared, folder: RunFolder, stop: Stop, show_progress: bool, cluster: Cluster | None) -> RunResult:
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
    context = StageContext(pipeline, folder.out_dir, show_progress, budget, store=store, stop=stop,
                           cluster=cluster)
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
            if cluster is not None:
                generate_on_ray(pipeline, folder, stats, stop, fingerprint, units, progress, budget, cluster)
            else:
                teachers, concurrency = asyncio.run(generate_units(
                    task, pipeline, store, stats, stop, fingerprint, [u for u in units if u not in settled], progress,
                    budget))
        except BudgetReached as err:
            raise _over_budget(folder, pipeline, task, fingerprint, stats, err) from None
        finally:
            folder.stats = {"kind": "run", "generate": stats.as_dict()}
        if stop.requested:
            raise _stopped(folder, pipeline, task, fingerprint, stats, stop)
        if quotas is None:
            break
        try:
            kept_cells = kept_by_cell_so_far(prepared, quotas, store, fingerprint, units, context)
        except (RunStopping, StopNow):
            if not stop.requested:
                raise
            raise _stopped(folder, pipeline, task, fingerprint, stats, stop) from None
        except BudgetReached as err:  # a filter stage asking the teacher (a judge) in a top-up round
            raise _over_budget(folder, pipeline, task, fingerprint, stats, err) from None
        if not quotas.short(kept_cells):
            break
        new = next_round(task, quotas, kept_cells, units, len(rounds) + 1, cfg.generate.max_rounds)
        if not new:
            message = short_message(quotas, kept_cells, len(rounds) + 1, cfg.generate.max_rounds)
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
        if not stop.requested:
            raise
        raise _stopped(folder, pipeline, task, fingerprint, stats, stop) from None
    except BudgetReached as err:  # a filter stage asking the teacher (a judge)
        raise _over_budget(folder, pipeline, task, fingerprint, stats, err) from None
    funnel_stages = [generated] + [stage.outcome() for stage in stages]
    write_rejected(staging / "rejected.jsonl", [rejections_from_store(store, fingerprint, units)],
                   filter_rejects, redact, seen)
    rejected = sum(sum(s["dropped"].values()) for s in funnel_stages)
    usage, invocations = whole_run_usage(store, "complete")
    info = run_record(pipeline, folder.out_dir, "complete", {
        "pipeline_file": f"{SNAPSHOT_DIR}/{pipeline_name(pipeline)}",
        **({"not_copied": left_out} if left_out else {}),
        "teacher": teachers.pop(None).describe() if None in teachers else teacher_identity(cfg.teacher),
        **({"role_teachers": {role: t.describe() for role, t in teachers.items()}} if teachers else {}),
        "sampling": cfg.teacher.sampling.model_dump(),
        "task": task.describe(),
        "templates": [{"name": t.name, "sha256": t.sha256} for t in task.templates.values()],
        "seed_space": task.seeds.describe(),
        "started_at": started_at,
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
        **({"quota": quota_summary(task, quotas, stages[-1], units, len(rounds) + 1)} if quotas else {}),
    })
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


def _over_budget(folder: RunFolder, pipeline: PipelineFile, task: Task, fingerprint: str, stats: RunStats,
                 err: BudgetReached) -> Stopped:
    """run.json for a run that max_cost stopped, in generation or in a filter stage, and its one line."""
    _unfinished(folder, pipeline, task, fingerprint, stats, "incomplete", str(err))
    return Stopped(str(err), 1, "incomplete")


def _unfinished(folder: RunFolder, pipeline: PipelineFile, task: Task, fingerprint: str, stats: RunStats,
                status: str, reason: str) -> dict[str, int]:
    store = folder.store
    store.commit()
    units = task.unit_list()
    counts = store.unit_counts(GENERATE, fingerprint, set(units))
    settled = counts.get("done", 0) + counts.get("rejected", 0)
    usage, invocations = whole_run_usage(store, status)
    folder.unfinished(run_record(pipeline, folder.out_dir, status, {
        "pipeline_file": shown_path(pipeline.path),
        "units": {"total": len(units), "done": counts.get("done", 0), "rejected": counts.get("rejected", 0),
                  "failed": counts.get("failed", 0), "pending": len(units) - settled - counts.get("failed", 0)},
        "usage": {**usage, "replayed_from_journal": stats.replayed}, "invocations": invocations,
    }, reason=reason))
    return {**counts, "settled": settled}


def _generation_funnel(store: RunStore, fingerprint: str, units: list[int], requested: int) -> dict[str, Any]:
    kept = 0
    reasons: dict[str, int] = {}
    for row in unit_rows(store, fingerprint, units):
        if "reason" in row:
            reasons[row["reason"]] = reasons.get(row["reason"], 0) + 1
        else:
            kept += 1
    return {"stage": "generate", "seen": requested, "kept": kept, "dropped": reasons}
