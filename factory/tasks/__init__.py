"""Generation tasks: `qa`, `dialogue`, `grounded_qa`, `preference`, `evol_instruct`, `self_instruct`,
`magpie`. Each module loads only when chosen."""

from __future__ import annotations


def make_task(pipeline):
    """The task the pipeline's `generate.task` names, built and checked (sends nothing)."""
    from factory.inputs.seeds import build_seed_space
    from factory.inputs.templates import TemplateLibrary

    cfg = pipeline.config
    seeds = build_seed_space(pipeline)
    library = TemplateLibrary(pipeline.prompts_dirs())
    kind = cfg.generate.task
    if kind == "dialogue":
        from factory.tasks.dialogue import DialogueTask

        task = DialogueTask(pipeline, seeds, library)
    elif kind == "grounded_qa":
        from factory.tasks.grounded_qa import GroundedQATask

        task = GroundedQATask(pipeline, seeds, library)
    elif kind == "preference":
        from factory.tasks.preference import PreferenceTask

        task = PreferenceTask(pipeline, seeds, library)
    elif kind == "evol_instruct":
        from factory.tasks.evol_instruct import EvolInstructTask

        task = EvolInstructTask(pipeline, seeds, library)
    elif kind == "self_instruct":
        from factory.tasks.self_instruct import SelfInstructTask

        task = SelfInstructTask(pipeline, seeds, library)
    elif kind == "magpie":
        from factory.tasks.magpie import MagpieTask

        task = MagpieTask(pipeline, seeds, library)
    else:
        from factory.tasks.qa import QATask

        task = QATask(pipeline, seeds, library)
    task.library = library  # where its templates came from (another mode's are peeked there)
    check_seeds_used(task, pipeline, library)
    return task


def check_seeds_used(task, pipeline, library) -> None:
    """Every seed variable reaches a prompt. One that none reads is nearly always a typo
    (of the name the template uses) or a template not edited yet: its values would only
    be copied into metadata.seed, and the data would not vary with them.

    A template counts when the pipeline names it, rendered in this mode or not (a dialogue
    pipeline may switch `mode` and keep its seeds). Raises ConfigError naming the seed.
    """
    from factory.core.errors import ConfigError, TemplateError

    where = f"{pipeline.path}: seeds"
    own = task.template_variables()
    for name in task.seeds.names:
        if name in own:
            raise ConfigError(f"{where}.{name}: the {task.name} task sets {name!r} itself, so these values would "
                              f"never reach a template; rename the seed variable")
    templates = {t.name: t for t in task.templates.values()}
    for name in pipeline.config.generate.templates.values():
        if name not in templates:
            try:
                templates[name] = library.peek(name)
            except TemplateError:
                pass  # not rendered in this mode: its problems are not this run's
    used = set().union(*(t.referenced for t in templates.values()))
    for name in task.seeds.names:
        if name not in used:
            raise ConfigError(f"{where}.{name}: not used by any template (templates: "
                              f"{', '.join(sorted(templates))}); rename it to the variable a template uses, "
                              f"or use it in one")
