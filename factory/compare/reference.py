"""`output.reference` in a pipeline: the run's kept records measured against real data,
written as compare.json beside the dataset and drawn as a section of report.html.

The reference is checked with everything else before the run sends anything (the file,
every row, the model's availability); the measuring happens once the dataset is built.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from factory.compare.measure import JSON_FILE, check_model, measure, to_json
from factory.config.pipeline import PipelineFile
from factory.core.errors import ConfigError, UserError
from factory.inputs.records import iter_records

KEY = "output.reference"
SUMMARY = ("mauve", "precision", "recall", "density", "coverage")


def check_reference(pipeline: PipelineFile) -> None:
    """Raise ConfigError (exit 2) naming the pipeline file and the key when the reference
    cannot be read, is too small, or its embedding model cannot be had. Sends nothing."""
    ref = pipeline.config.output.reference
    if ref is None:
        return
    where = f"{pipeline.path}: {KEY}"
    path = pipeline.resolve(ref.path)
    try:
        rows = sum(1 for _ in iter_records(path))
    except UserError as err:
        raise ConfigError(f"{where}: {err}") from None
    if rows <= ref.neighbours:
        raise ConfigError(f"{where}: {path} has {rows} records; the comparison needs more than {ref.neighbours} "
                          "(neighbours)")
    check_model(ref.model, f"{where}.model")


def compare_kept(pipeline: PipelineFile, staging: Path, cache_dir: Path, kept: int,
                 redact: Callable[[str], str]) -> dict[str, Any] | None:
    """Measure the dataset built in `staging` against the reference: staging/compare.json,
    and the headline numbers for run.json (None without a reference)."""
    ref = pipeline.config.output.reference
    if ref is None:
        return None
    path = pipeline.resolve(ref.path)
    if kept <= ref.neighbours:
        return {"path": str(path), "skipped": f"{kept} records kept; the comparison needs more than {ref.neighbours}"}
    data = staging / "data.jsonl"
    synthetic = data if data.is_file() else staging / "dataset"
    settings = ref.settings()
    result, _ = measure(iter_records(synthetic), Path("dataset"), iter_records(path), path, settings, cache_dir,
                        f"{pipeline.path}: {KEY}.model")
    (staging / JSON_FILE).write_text(redact(to_json(result)), encoding="utf-8")
    return {"path": str(path), **{name: result[name] for name in SUMMARY}, "file": JSON_FILE,
            **{status: [t["label"] for t in result["topics"] if t["status"] == status] for status in ("over", "under")}}
