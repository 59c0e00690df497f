"""`factory filter`: the pipeline's filter stages on a dataset that already exists.

The output folder is a run folder like any other: locked while the command works in
it, with a run store (a judge's requests are journaled there, so a rerun pays only
for what was not graded), and outputs swapped in only when the command completes.
"""

from __future__ import annotations

import gc
import time
from contextlib import ExitStack
from pathlib import Path

from factory.core import constants
from factory.config.pipeline import PipelineFile
from factory.core.cost import Budget, BudgetReached, cost_entry
from factory.engine.engine import RunStats
from factory.executors.on_ray import cluster_for
from factory.outputs.formats import check_formats
from factory.compare.reference import check_reference
from factory.inputs.records import is_pair, read_records
from factory.core.path_hiding import shown_path
from factory.core.quiet_libraries import library_progress_off
from factory.outputs.report import Summaries
from factory.run.export import apply_stages, write_rejected
from factory.run.finish import RunResult, compare_with_reference, now, run_record, shared_text, write_reports
from factory.store.run_folder import RunFolder, whole_run_usage
from factory.inputs.pipeline_files import SNAPSHOT_DIR, copy_files, pipeline_name
from factory.core.stopping import RunStopping, Stop, StopNow, Stopped, handling_signals
from factory.inputs.templates import with_includes
from filters.base import StageContext


def filter_dataset(pipeline: PipelineFile, input_path: Path, out_dir: Path, show_progress: bool = True,
                   grace: float = constants.DRAIN_GRACE_S) -> RunResult:
    from filters import build_stages, check_fields, check_models

    began = time.perf_counter()
    started_at = now()
    # Both checks come before anything is written or sent: a bad filter entry or a bad
    # input row ends the command with exit 2 and no output folder.
    stages = build_stages(pipeline.config.filters, pipeline)
    records = read_records(input_path)
    check_fields(stages, records)
    check_reference(pipeline)
    check_models(stages)
    multi_turn = any(sum(m["role"] == "user" for m in r.messages) > 1 for r in records)
    # Preference pairs (read from prompt/chosen/rejected rows) are written back as pairs.
    pairs = bool(records) and all(is_pair(r) for r in records)
    check_formats(pipeline.config.output.formats, multi_turn, f"{input_path}: output.formats", pairs)
    redact = shared_text(pipeline, out_dir)
    cfg = pipeline.config
    stop = Stop(grace)
    with handling_signals(stop), library_progress_off(), ExitStack() as stack:
        # The input lives as long as the command and holds no cycles: the collector is kept
        # from walking it again at every full collection the stages' own objects set off.
        gc.freeze()
        stack.callback(gc.unfreeze)
        folder = stack.enter_context(RunFolder(out_dir, "filter"))
        store = folder.store
        before, _ = whole_run_usage(store)
        budget = Budget(cfg.max_cost, already=before.get("cost", 0.0))
        staging = folder.staging()
        copy_files(pipeline, with_includes(t for stage in stages for t in stage.templates()), staging / SNAPSHOT_DIR,
                   0, redact)
        context = StageContext(pipeline, out_dir, show_progress, budget, store=store, stop=stop,
                               cluster=cluster_for(cfg.executor))
        seen = Summaries()
        try:
            kept, examples, filter_rejects = apply_stages(stages, iter(records), context, staging, redact, pairs,
                                                          held=True, seen=seen)
        except (RunStopping, StopNow) as err:
            store.commit()
            folder.unfinished(run_record(pipeline, out_dir, stop.status if stop.requested else "stopped",
                                         {"input": {"path": shown_path(input_path)}}, reason=stop.reason or str(err)))
            code = stop.exit_code or 130
            raise Stopped(f"stopped: {stop.reason or err}; rerun the same command to finish "
                          "(grades already made are replayed, not paid again)", code,
                          stop.status if stop.requested else "stopped") from None
        except BudgetReached as err:
            store.commit()
            folder.unfinished(run_record(pipeline, out_dir, "incomplete", {"input": {"path": shown_path(input_path)}},
                                         reason=str(err)))
            raise Stopped(str(err), 1, "incomplete") from None
        funnel_stages = [stage.outcome() for stage in stages]
        write_rejected(staging / "rejected.jsonl", [], filter_rejects, redact, seen)
        rejected = sum(sum(s["dropped"].values()) for s in funnel_stages)
        usage, invocations = whole_run_usage(store, "complete")
        info = run_record(pipeline, out_dir, "complete", {
            "pipeline_file": f"{SNAPSHOT_DIR}/{pipeline_name(pipeline)}",
            "input": {"path": shown_path(input_path), "rows": len(records)},
            "started_at": started_at,
            "timings": {"filter_and_export_s": time.perf_counter() - began},
            "usage": usage,
            "invocations": invocations,
            "funnel": {"requested": len(records), "stages": funnel_stages, "kept": kept, "rejected": rejected},
            **cost_entry(budget, cfg, usage.get("cost", 0.0)),
        })
        compare_with_reference(info, pipeline, staging, out_dir, kept, redact)
        write_reports(staging, info, examples, redact, seen)
        folder.publish(staging)
    return RunResult(out_dir, len(records), kept, rejected, RunStats(), info["funnel"], usage)
