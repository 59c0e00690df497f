"""The generation tasks: one table, the one place a task is added.

`generate.task`'s allowed values (and the model that checks the rest of `generate:`),
`make_task` (factory/tasks/) and the dataset card's words for the task all come from
here. A task is a module with a Task class (factory/tasks/) and one line below, which
names the model of its `generate:` keys: another task's when it takes the same keys
(the table routes by the name, so one model may serve several tasks), or a model of its
own in config/ (generate.py, instruction.py: config sits below tasks) when it has keys
of its own. Task classes are named by strings, so listing
them imports none (factory/core/registry.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from factory.config.generate import DialogueGenerate, GroundedQAGenerate, PreferenceGenerate, QAGenerate
from factory.config.instruction import EvolInstructGenerate, MagpieGenerate, SelfInstructGenerate
from factory.config.sizing import Sizing

_QA_CATEGORIES = ("question-answering", "text-generation")


@dataclass(frozen=True)
class TaskKind:
    config: type[Sizing]  # the model of its `generate:` section (its `task:` a Literal of the name)
    task: str  # "module:Class" of its Task, built with (pipeline, seeds, library)
    what: str = "samples"  # the card: "N {what} requested"
    categories: tuple[str, ...] = ("text-generation",)  # the card's Hub task_categories


TASKS: dict[str, TaskKind] = {
    "qa": TaskKind(QAGenerate, "factory.tasks.qa:QATask", "samples (question/answer pairs)", _QA_CATEGORIES),
    "dialogue": TaskKind(DialogueGenerate, "factory.tasks.dialogue:DialogueTask", "conversations"),
    "grounded_qa": TaskKind(GroundedQAGenerate, "factory.tasks.grounded_qa:GroundedQATask",
                            "question/answer pairs from document chunks", _QA_CATEGORIES),
    "preference": TaskKind(PreferenceGenerate, "factory.tasks.preference:PreferenceTask"),
    "evol_instruct": TaskKind(EvolInstructGenerate, "factory.tasks.evol_instruct:EvolInstructTask"),
    "self_instruct": TaskKind(SelfInstructGenerate, "factory.tasks.self_instruct:SelfInstructTask"),
    "magpie": TaskKind(MagpieGenerate, "factory.tasks.magpie:MagpieTask"),
}
