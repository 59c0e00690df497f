"""Prepare a run: everything that can be checked without a teacher (seeds, templates,
filters, formats, quotas, the reference), before anything is sent or written."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from factory.config.pipeline import PipelineFile
from factory.core.errors import TemplateError
from factory.inputs.templates import Template, with_includes
from factory.run.quota import build_quotas
from factory.tasks.base import Task
from filters.base import Stage


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
