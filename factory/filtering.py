"""`factory filter`: the pipeline's filter stages on a dataset that already exists."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from factory.config import Pipeline
from factory.cost import Budget, cost_entry
from factory.engine import RunStats
from factory.formats import check_formats
from factory.inputs import read_records
from factory.run import RunResult, apply_stages, config_summary, now, versions, write_rejected, write_reports
from factory.secrets import Redactor
from filters.base import StageContext


def filter_dataset(pipeline: Pipeline, input_path: Path, out_dir: Path, show_progress: bool = True) -> RunResult:
    from filters import build_stages, check_fields

    began = time.perf_counter()
    started_at = now()
    # Both checks come before anything is written or sent: a bad filter entry or a bad
    # input row ends the command with exit 2 and no output folder.
    stages = build_stages(pipeline.config.filters, pipeline)
    records = read_records(input_path)
    check_fields(stages, records)
    multi_turn = any(sum(m["role"] == "user" for m in r.messages) > 1 for r in records)
    check_formats(pipeline.config.output.formats, multi_turn, f"{input_path}: output.formats")
    redact = Redactor.for_config(pipeline.raw)
    work = out_dir / ".work"
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = pipeline.config
    budget = Budget(cfg.max_cost)
    kept, examples, filter_rejects = apply_stages(stages, iter(records),
                                                  StageContext(pipeline, out_dir, show_progress, budget), work, redact)
    funnel_stages = [stage.funnel() for stage in stages]
    write_rejected(out_dir / "rejected.jsonl", [], filter_rejects, redact)
    rejected = sum(sum(s["dropped"].values()) for s in funnel_stages)
    info = {
        "name": pipeline.config.name,
        "pipeline_file": str(pipeline.path),
        "input": {"path": str(input_path), "rows": len(records)},
        "config": config_summary(pipeline, out_dir),
        "versions": versions(),
        "started_at": started_at,
        "finished_at": now(),
        "timings": {"filter_and_export_s": time.perf_counter() - began},
        "funnel": {"requested": len(records), "stages": funnel_stages, "kept": kept, "rejected": rejected},
        **cost_entry(budget, cfg),
    }
    write_reports(out_dir, info, examples, redact)
    shutil.rmtree(work, ignore_errors=True)
    return RunResult(out_dir, len(records), kept, rejected, RunStats(), info["funnel"])
