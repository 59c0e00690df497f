"""One run of a pipeline: prepare (sends nothing), generate, filter, export."""

from __future__ import annotations

import asyncio
import datetime
import json
import platform
import shutil
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator

from factory.config import Pipeline
from factory.constants import JOURNAL_FILE
from factory.cost import Budget, cost_entry
from factory.engine import RunStats, run_task, usage
from factory.files import atomic_write_text
from factory.progress import Progress
from factory.record import Record
from factory.results import ResultFiles, records_in_order, rejections_in_order
from factory.secrets import Redactor
from factory.session import open_engine
from factory.tasks.base import RoleAsker, Task
from factory.teachers.base import Teacher
from filters.base import Stage, StageContext


@dataclass
class Prepared:
    pipeline: Pipeline
    task: Task
    stages: list[Stage]
    examples: list[dict[str, Any]]


def prepare(pipeline: Pipeline) -> Prepared:
    """Everything that can be checked without a teacher: seeds, templates, filters.

    Raises a UserError (exit 2) on the first problem; sends nothing, writes nothing.
    """
    from filters import build_stages

    from factory.formats import check_formats
    from factory.tasks import make_task

    task = make_task(pipeline)
    check_formats(pipeline.config.output.formats, task.multi_turn, f"{pipeline.path}: output.formats")
    examples = task.check()
    stages = build_stages(pipeline.config.filters, pipeline)
    return Prepared(pipeline, task, stages, examples)


@dataclass
class RunResult:
    out_dir: Path
    requested: int
    kept: int
    rejected: int
    stats: RunStats
    funnel: dict[str, Any] = field(default_factory=dict)


def run_pipeline(prepared: Prepared, out_dir: Path, show_progress: bool = True) -> RunResult:
    teacher = prepared.pipeline.config.teacher
    if teacher.launch is None:
        return _run(prepared, out_dir, show_progress)
    from factory.launch import launched

    # The server lives for the whole run: generation and any filter that asks the teacher.
    with launched(teacher, out_dir) as url:
        teacher.base_url = url
        return _run(prepared, out_dir, show_progress)


def _run(prepared: Prepared, out_dir: Path, show_progress: bool) -> RunResult:
    pipeline, task = prepared.pipeline, prepared.task
    cfg = pipeline.config
    redact = Redactor.for_config(pipeline.raw)
    work = out_dir / ".work"
    stats = RunStats()
    started_at = now()
    progress = Progress(task.units(), stats, enabled=show_progress)
    budget = Budget(cfg.max_cost)
    results, teachers, concurrency = asyncio.run(_generate(task, pipeline, stats, out_dir, work, progress, budget))
    generated_at = time.perf_counter()

    requested = task.requested()
    funnel_stages = [{"stage": "generate", "seen": requested, "kept": results.kept, "dropped": dict(results.reasons)}]
    kept, examples, filter_rejects = apply_stages(prepared.stages, records_in_order(results.records_path),
                                                  StageContext(pipeline, out_dir, show_progress, budget), work, redact)
    funnel_stages += [stage.funnel() for stage in prepared.stages]
    write_rejected(out_dir / "rejected.jsonl", [rejections_in_order(results.rejected_path)], filter_rejects, redact)
    rejected = sum(sum(s["dropped"].values()) for s in funnel_stages)

    info = {
        "name": cfg.name,
        "pipeline_file": str(pipeline.path),
        "config": config_summary(pipeline, out_dir),
        "teacher": teachers.pop(None).describe(),
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
        "usage": usage(stats),
        **cost_entry(budget, cfg),
        "engine": {**stats.as_dict(), "throttled": concurrency["throttled"], "concurrency": concurrency,
                   "timeline": stats.timeline_points()},
        "funnel": {"requested": requested, "stages": funnel_stages, "kept": kept, "rejected": rejected},
    }
    write_reports(out_dir, info, examples, redact)
    shutil.rmtree(work, ignore_errors=True)
    return RunResult(out_dir, requested, kept, rejected, stats, info["funnel"])


def write_reports(out_dir: Path, info: dict[str, Any], examples: list[dict], redact: Redactor) -> None:
    """The dataset card, run.json and report.html, all redacted, all written atomically."""
    from factory.card import render_card
    from factory.report import build_report

    atomic_write_text(out_dir / "README.md", redact(render_card(info, examples)))
    atomic_write_text(out_dir / "run.json", redact(json.dumps(info, indent=2, ensure_ascii=False, default=str)) + "\n")
    build_report(out_dir)


async def _generate(task: Task, pipeline: Pipeline, stats: RunStats, out_dir: Path, work: Path,
                    progress: Progress, budget: Budget) -> tuple[ResultFiles, dict[str | None, Teacher], dict]:
    """Generate every unit; returns the results, the teachers used (None: the pipeline's) and how
    the in-flight window was sized."""
    main = pipeline.config.teacher
    journal_path = out_dir / JOURNAL_FILE
    # A teacher that cannot be loaded fails before the output folder exists.
    make_dir = lambda: out_dir.mkdir(parents=True, exist_ok=True)  # noqa: E731
    async with open_engine(main, journal_path, stats, before_journal=make_dir, budget=budget) as engine, \
            AsyncExitStack() as stack:
        by_role = {}
        for role, config in task.role_teachers(pipeline).items():
            if config != main:  # a role that changes nothing shares the pipeline's engine
                by_role[role] = await stack.enter_async_context(
                    open_engine(config, journal_path, stats, journal=engine.journal, budget=budget))
        results = ResultFiles(work)
        try:
            progress.start()
            await run_task(task, engine, results, progress.update, asker=RoleAsker(engine, by_role))
        finally:
            progress.close()
            results.close()
        teachers = {None: engine.teacher, **{role: e.teacher for role, e in by_role.items()}}
        return results, teachers, engine.concurrency()


def apply_stages(stages: list[Stage], records: Iterator[Record], context: StageContext, work: Path,
                 redact: Redactor) -> tuple[int, list[dict], Path]:
    """Run `records` through the filter stages and write the kept ones as the dataset.

    Returns the kept count, a few example records for the card, and the file the
    stages' rejections went to.
    """
    from factory.export import write_dataset

    work.mkdir(parents=True, exist_ok=True)
    filter_rejects = work / "rejected.filters.jsonl"
    with open(filter_rejects, "w", encoding="utf-8") as rej:
        for stage in stages:
            stage.bind(lambda r: rej.write(redact(r.to_json()) + "\n"), context)
        for stage in stages:
            records = stage(records)
        examples: list[dict] = []
        kept = write_dataset(_sample(records, examples), context.out_dir, work, context.pipeline.config.output.formats)
    return kept, examples, filter_rejects


def _sample(records: Iterator[Record], examples: list[dict]) -> Iterator[Record]:
    for record in records:
        if len(examples) < 3:
            examples.append({"messages": record.messages})
        yield record


def write_rejected(path: Path, earlier: list[Iterable[dict]], filtered: Path, redact: Redactor) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        for rows in earlier:
            for row in rows:
                out.write(redact(json.dumps(row, ensure_ascii=False)) + "\n")
        with open(filtered, encoding="utf-8") as f:
            shutil.copyfileobj(f, out)
    tmp.replace(path)


def config_summary(pipeline: Pipeline, out_dir: Path) -> dict[str, Any]:
    from factory.teachers.openai_teacher import redact_url

    data = pipeline.config.model_dump(mode="json")
    url = data["teacher"].get("base_url")
    if url:
        data["teacher"]["base_url"] = [redact_url(u) for u in url] if isinstance(url, list) else redact_url(url)
    data["output"]["dir"] = str(out_dir)
    return data


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


