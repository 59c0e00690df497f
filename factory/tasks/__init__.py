"""Generation tasks: `qa`, `dialogue`, `grounded_qa`. Each module loads only when chosen."""

from __future__ import annotations


def make_task(pipeline):
    """The task the pipeline's `generate.task` names, built and checked (sends nothing)."""
    from factory.seeds import build_seed_space
    from factory.templates import TemplateLibrary

    cfg = pipeline.config
    seeds = build_seed_space(pipeline)
    library = TemplateLibrary(pipeline.prompts_dirs())
    kind = cfg.generate.task
    if kind == "dialogue":
        from factory.tasks.dialogue import DialogueTask

        return DialogueTask(pipeline, seeds, library)
    if kind == "grounded_qa":
        from factory.tasks.grounded_qa import GroundedQATask

        return GroundedQATask(pipeline, seeds, library)
    from factory.tasks.qa import QATask

    return QATask(pipeline, seeds, library)
