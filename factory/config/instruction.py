"""The `generate:` sections of the instruction-growing tasks: evol_instruct, self_instruct, magpie."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from factory.core import constants
from factory.config.sizing import Sizing
from factory.core.strict import Strict

# WizardLM's evolutions: four in-depth rewrites, complicating the input, and in-breadth.
EVOL_METHODS = {
    "constraints": "in-depth",
    "deepen": "in-depth",
    "concretize": "in-depth",
    "reasoning": "in-depth",
    "complicate_input": "in-depth",
    "breadth": "in-breadth",
}
EVOL_TEMPLATES = {**{m: f"evol_instruct/{m}.j2" for m in EVOL_METHODS}, "equal": "evol_instruct/equal.j2"}
# Words of the evolving prompts that must not reach an evolved instruction (WizardLM).
EVOL_TEMPLATE_WORDS = ["#The Given Prompt#", "#Given Prompt#", "#Rewritten Prompt#", "#Created Prompt#",
                       "given prompt", "rewritten prompt", "created prompt"]


def _fill(value: Any, defaults: dict[str, str]) -> Any:
    return {**defaults, **value} if isinstance(value, dict) else value


class EvolElimination(Strict):
    """WizardLM's elimination checks; an evolution that fails one is a rejection with its reason."""

    # Ask the teacher whether the evolved instruction equals its parent (no information gain).
    check_equal: bool = True
    template_words: list[str] = Field(default_factory=lambda: list(EVOL_TEMPLATE_WORDS))
    # An answer with one of these words and fewer than refusal_max_words words is a refusal.
    refusal_words: list[str] = Field(default_factory=lambda: ["sorry", "I cannot", "I can't", "unable to"])
    refusal_max_words: int = Field(80, ge=1)
    # Fewer content words (not stop words or punctuation) than this is no content.
    min_content_words: int = Field(1, ge=1)


class EvolInstructGenerate(Sizing):
    """`count`: evolved instructions to request, `rounds` per seed instruction."""

    task: str
    rounds: int = Field(4, ge=1, le=20)
    # Relative weights of the evolutions; 0 turns one off.
    methods: dict[Literal[tuple(EVOL_METHODS)], float] = Field(default_factory=lambda: dict.fromkeys(EVOL_METHODS, 1.0))
    combine: Literal["product", "sample"] = "product"  # product: each seed instruction in turn
    templates: dict[Literal[tuple(EVOL_TEMPLATES)], str] = Field(default_factory=lambda: dict(EVOL_TEMPLATES))
    # The system message the answers are written under, saved at the head of each record.
    system_prompt: str | None = None
    elimination: EvolElimination = Field(default_factory=EvolElimination)
    max_attempts: int = Field(constants.DEFAULT_CONTENT_ATTEMPTS, ge=1, le=20)

    @field_validator("templates", mode="before")
    @classmethod
    def _defaults(cls, value: Any) -> Any:
        return _fill(value, EVOL_TEMPLATES)

    @field_validator("methods")
    @classmethod
    def _some_method(cls, value: dict) -> dict:
        if any(w < 0 for w in value.values()) or not any(w > 0 for w in value.values()):
            raise ValueError("weights must be >= 0 and at least one above 0")
        return value


SELF_INSTRUCT_TEMPLATES = {
    "instructions": "self_instruct/instructions.j2",
    "classify": "self_instruct/classify.j2",
    "input_first": "self_instruct/input_first.j2",
    "output_first": "self_instruct/output_first.j2",
}
# Self-Instruct's filter: tasks a language model cannot do (images, files, drawing ...).
SELF_INSTRUCT_BLOCKED = ["image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map",
                         "maps", "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram"]


class SelfInstructGenerate(Sizing):
    """`count`: new instructions to request."""

    task: str
    # Human-written seed tasks, JSON lines: {"instruction", "instances": [{"input", "output"}],
    # "is_classification"} (the Self-Instruct paper's format).
    seed_tasks: str
    instructions_per_request: int = Field(8, ge=1, le=20)
    # The paper's few-shot mix: 6 human-written and 2 machine-made tasks per prompt
    # (human ones stand in while the machine pool is smaller).
    human_examples: int = Field(6, ge=0, le=20)
    machine_examples: int = Field(2, ge=0, le=20)
    # Requests per round: each round's prompts sample the pool as the round before left it.
    round_size: int = Field(8, ge=1, le=1000)
    # A new instruction whose ROUGE-L F1 with any in the pool is at or above this is rejected.
    max_similarity: float = Field(0.7, gt=0, le=1)
    min_words: int = Field(4, ge=1)
    max_words: int = Field(150, ge=1)
    blocked_words: list[str] = Field(default_factory=lambda: list(SELF_INSTRUCT_BLOCKED))
    instances_per_task: int = Field(2, ge=1, le=10)
    combine: Literal["product", "sample"] = "sample"
    templates: dict[Literal[tuple(SELF_INSTRUCT_TEMPLATES)], str] = Field(
        default_factory=lambda: dict(SELF_INSTRUCT_TEMPLATES))
    system_prompt: str | None = None
    max_attempts: int = Field(constants.DEFAULT_CONTENT_ATTEMPTS, ge=1, le=20)

    @field_validator("templates", mode="before")
    @classmethod
    def _defaults(cls, value: Any) -> Any:
        return _fill(value, SELF_INSTRUCT_TEMPLATES)

    @model_validator(mode="after")
    def _consistent(self):
        if self.human_examples + self.machine_examples < 1:
            raise ValueError("human_examples + machine_examples must be at least 1")
        if self.min_words > self.max_words:
            raise ValueError(f"min_words {self.min_words} is more than max_words {self.max_words}")
        return self


# The text a chat template puts before the first user message, per model family (Magpie).
PRE_QUERY_PRESETS = ("chatml", "llama3", "phi3", "gemma", "mistral")


class MagpieGenerate(Sizing):
    """`count`: queries to request."""

    task: str
    # How the user's turn opens: a preset for the model's family, the text itself, or a
    # tokenizer (local folder or cached Hub id) whose chat template says. Without any,
    # in-process backends use the teacher model's own template.
    pre_query: Literal[PRE_QUERY_PRESETS] | None = None
    pre_query_text: str | None = None
    tokenizer: str | None = None
    # A system prompt steers what users ask (a domain); templates.system renders one per query from seeds.
    system_prompt: str | None = None
    templates: dict[Literal["system"], str] = Field(default_factory=dict)
    save_system: bool = True
    min_words: int = Field(3, ge=1)
    max_words: int = Field(300, ge=1)
    combine: Literal["product", "sample"] = "sample"
    max_attempts: int = Field(constants.DEFAULT_CONTENT_ATTEMPTS, ge=1, le=20)

    @model_validator(mode="after")
    def _one_source(self):
        given = [k for k in ("pre_query", "pre_query_text", "tokenizer") if getattr(self, k)]
        if len(given) > 1:
            raise ValueError(f"give one of pre_query, pre_query_text, tokenizer (got {', '.join(given)})")
        if self.system_prompt is not None and "system" in self.templates:
            raise ValueError("give the system prompt once: system_prompt or templates.system")
        if self.min_words > self.max_words:
            raise ValueError(f"min_words {self.min_words} is more than max_words {self.max_words}")
        return self
