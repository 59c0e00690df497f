"""Generation tasks, one module each, listed in one table (factory/config/tasks.py);
each module loads only when chosen."""

from __future__ import annotations

from factory.config.tasks import TASKS
from factory.core.registry import load


def make_task(pipeline):
    """The task the pipeline's `generate.task` names, built and checked (sends nothing)."""
    from factory.inputs.seeds import build_seed_space
    from factory.inputs.templates import TemplateLibrary

    seeds = build_seed_space(pipeline)
    library = TemplateLibrary(pipeline.prompts_dirs())
    task = load(TASKS[pipeline.config.generate.task].task)(pipeline, seeds, library)
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
