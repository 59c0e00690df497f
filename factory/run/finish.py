"""How a command ends: run.json (built here, and only here, for a run, `factory filter`
and every early stop), the card and the report, the comparison with a reference."""

from __future__ import annotations

import datetime
import json
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from factory.config.pipeline import PipelineFile
from factory.core.files import atomic_write_text
from factory.core.path_hiding import local_replacements, shown_path
from factory.core.redaction import Redactor
from factory.engine.engine import RunStats
from factory.outputs.report import Summaries


@dataclass
class RunResult:
    out_dir: Path
    requested: int
    kept: int
    rejected: int
    stats: RunStats
    funnel: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)


def run_record(pipeline: PipelineFile, out_dir: Path, status: str, fields: dict[str, Any],
               reason: str | None = None) -> dict[str, Any]:
    """run.json for any command and any way it ended: who ran and how it ended first,
    then the command's own `fields`, then the versions and the time it finished."""
    info: dict[str, Any] = {"name": pipeline.config.name, "status": status}
    if reason is not None:
        info["reason"] = reason
    if pipeline.dry_run:
        info["dry_run"] = True
    info["config"] = config_summary(pipeline, out_dir)
    info.update(fields)
    info["versions"] = versions()
    info["finished_at"] = now()
    return info


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
