"""Filter stages built from a pipeline file, as a run builds them."""

from __future__ import annotations

from factory.config.pipeline import load_pipeline
from filters import StageContext, build_stages
from tests.helpers.pipelines import write_pipeline


def diversity_stage(tmp_path, **options):
    """The diversity stage with `options`, bound to a run folder in tmp_path: (stage, its rejections)."""
    path = write_pipeline(tmp_path, filters=[{"type": "diversity", **options}])
    pipeline = load_pipeline(path)
    [stage] = build_stages(pipeline.config.filters, pipeline)
    rejected = []
    stage.bind(rejected.append, StageContext(pipeline, tmp_path / "out", show_progress=False))
    return stage, rejected
