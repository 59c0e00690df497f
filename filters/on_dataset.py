"""A filter stage on a `datasets.Dataset` alone, outside any pipeline: `MinHashDedup()(ds)`.

Rows are read as records the way `factory filter --input` reads them (factory/inputs/records.py:
`messages`, `instruction`/`output`, `prompt`/`completion`, `text`, or a preference row's
`prompt`/`chosen`/`rejected`). The stage runs as it does in a pipeline, and the result is
the input's kept rows, in their order and unchanged, plus a column for each metadata key
the stage adds (`judge_score`, `near_duplicates` ...). What it dropped, with reasons, is
in `stage.rejections`; its counts in `stage.funnel()`.

A stage that asks a teacher (the judge) takes its teacher defaults from `pipeline` (a
`factory.Pipeline` or a loaded config) or, without one, from its own `teacher` keys; its
requests are journaled in `work_dir` (default outputs/<stage>-on-dataset/), so running
it again on the same rows pays for nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from factory.core import constants
from factory.config.pipeline import PipelineFile, build_pipeline
from factory.core.errors import InputDataError
from factory.inputs.records import to_record
from factory.core.blocking import call_blocking
from factory.core.record import Record, record_id
from factory.executors.on_ray import cluster_for
from filters.context import StageContext


def run_on_dataset(stage: Any, ds: Any, *, pipeline: Any = None, work_dir: str | Path | None = None) -> Any:
    from filters import check_fields

    label = type(stage).__name__
    records = dataset_records(ds, label)
    config = _pipeline_for(stage, pipeline)
    stage.prepare(config, label)
    check_fields([stage], records)
    out = Path(work_dir) if work_dir is not None else Path(constants.OUTPUTS_DIR) / f"{stage.name}-on-dataset"
    stage.rejections = []
    context = StageContext(config, out, show_progress=False, cluster=cluster_for(config.config.executor))
    stage.bind(stage.rejections.append, context)
    # The judge drives its own event loop: inside a notebook's, it runs on a worker thread.
    kept: list[Record] = call_blocking(lambda: list(stage._kept(records)))
    position = {record.id: i for i, record in enumerate(records)}
    result = ds.select([position[record.id] for record in kept])
    for key in sorted(stage.adds_metadata):
        values = [record.metadata.get(key) for record in kept]
        if any(value is not None for value in values):
            if key in result.column_names:
                result = result.remove_columns(key)
            result = result.add_column(key, values)
    return result


def dataset_records(ds: Any, label: str) -> list[Record]:
    """The rows as records, each with a distinct id (its `id` column, else one from its
    position); raises InputDataError naming the row."""
    records, seen = [], set()
    for number, row in enumerate(ds):
        record = to_record(row, f"{label}: row {number}", default_id=record_id("dataset", "row", number))
        if record.id in seen:
            raise InputDataError(f"{label}: row {number}: id {record.id!r} repeats an earlier row's id")
        seen.add(record.id)
        records.append(record)
    return records


def _pipeline_for(stage: Any, pipeline: Any) -> PipelineFile:
    if pipeline is not None:
        return getattr(pipeline, "file", pipeline)  # a factory.Pipeline holds its loaded file
    teacher = dict(getattr(stage.config, "teacher", None) or {})
    raw = {"name": f"{stage.name}-on-dataset", "teacher": teacher, "generate": {"task": "qa", "count": 1}}
    return build_pipeline(raw, Path(f"<{type(stage).__name__}>"), base_dir=Path.cwd())
