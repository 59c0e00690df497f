"""The `generate:` sections of the qa, dialogue, grounded_qa and preference tasks (the
table of tasks, which `task:` chooses from, is factory/config/tasks.py)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from factory.core import constants
from factory.config.sizing import Sizing
from factory.core.strict import Strict


def _fill_defaults(given: dict[str, str], defaults: dict[str, str]) -> dict[str, str]:
    # A pipeline names only the templates it changes; the rest stay the built-in ones.
    return {**defaults, **given}


class QAGenerate(Sizing):
    task: str = "qa"  # which task: the TASKS table routes by it (factory/config/tasks.py)
    pairs_per_request: int = Field(3, ge=1, le=50)
    combine: Literal["product", "sample"] = "sample"
    templates: dict[Literal["system", "user"], str] = Field(
        default_factory=lambda: {"system": "qa/system.j2", "user": "qa/user.j2"}
    )
    # The system message saved at the head of every record (not the teacher's).
    system_prompt: str | None = None
    max_attempts: int = Field(constants.DEFAULT_CONTENT_ATTEMPTS, ge=1, le=20)

    @field_validator("templates")
    @classmethod
    def _needs_user(cls, value: dict) -> dict:
        if "user" not in value:
            raise ValueError("needs a 'user' template")
        return value


# Line-start speaker labels and phrases (case-insensitive, per line) that show a turn
# was written in the other role's voice.
DEFAULT_ASSISTANT_BREAKS = (
    r"^\W*(?:user|customer|human|client)\W*:",
)
DEFAULT_USER_BREAKS = (
    r"^\W*(?:assistant|agent|support agent|ai|bot|chatbot)\W*:",
    r"\bhow (?:can|may) i (?:help|assist) you\b",
    r"\bas an ai\b",
    r"\bi(?:'m| am) (?:an?|your) (?:ai|virtual|digital) assistant\b",
    r"\bis there anything else (?:i|we) can (?:help|assist)",
)


class DialogueGuards(Strict):
    # A turn whose word-trigram Jaccard with the previous turn (either role's) is at or
    # above this repeats it.
    repeat_similarity: float = Field(0.8, gt=0, le=1)
    # Regular expressions (case-insensitive, multi-line) that show a turn was written in
    # the other role's voice: the assistant writing the user's lines, or the simulated
    # user answering like an assistant.
    assistant_breaks: list[str] = Field(default_factory=lambda: list(DEFAULT_ASSISTANT_BREAKS))
    user_breaks: list[str] = Field(default_factory=lambda: list(DEFAULT_USER_BREAKS))
    # A run of this many words from the simulator's instructions in a turn is a leak.
    leak_ngram: int = Field(8, ge=3, le=50)

    @field_validator("assistant_breaks", "user_breaks")
    @classmethod
    def _regexes(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"{pattern!r} is not a valid regular expression ({err})") from None
        return patterns


DIALOGUE_TEMPLATES = {
    "user_system": "dialogue/user_system.j2",
    "user_opening": "dialogue/user_opening.j2",
    "single_call": "dialogue/single_call.j2",
}


class DialogueGenerate(Sizing):
    task: str
    # turns: one request per turn, user simulator and assistant in alternation;
    # single_call: the whole conversation as JSON in one request (cheaper, less varied).
    mode: Literal["turns", "single_call"] = "turns"
    # Exchanges (a user message and the assistant's reply): a number, or [min, max]
    # from which each conversation draws its own.
    turns: int | tuple[int, int] = 3
    # The user simulator ends early by writing this; it never reaches the dataset.
    # null: conversations always run their planned number of exchanges.
    end_marker: str | None = "[END]"
    # A conversation the user ends before this many exchanges is retried, then rejected.
    min_turns: int = Field(1, ge=1)
    combine: Literal["product", "sample"] = "sample"
    templates: dict[Literal["user_system", "user_opening", "assistant_system", "single_call"], str] = Field(
        default_factory=lambda: dict(DIALOGUE_TEMPLATES))
    # The assistant's system prompt, also saved as the first message of every record
    # (templates.assistant_system renders one per conversation from the seeds instead).
    system_prompt: str | None = None
    save_system: bool = True
    # Keys of `teacher:` to change for one role: its own model, endpoint or sampling.
    teachers: dict[Literal["user", "assistant"], dict[str, Any]] = Field(default_factory=dict)
    guards: DialogueGuards = Field(default_factory=DialogueGuards)
    # Attempts per turn (per conversation in single_call mode) for an answer that passes.
    max_attempts: int = Field(constants.DEFAULT_CONTENT_ATTEMPTS, ge=1, le=20)

    @field_validator("templates", mode="before")
    @classmethod
    def _defaults(cls, value: Any) -> Any:
        return _fill_defaults(value, DIALOGUE_TEMPLATES) if isinstance(value, dict) else value

    @field_validator("turns")
    @classmethod
    def _turn_range(cls, value: int | tuple[int, int]) -> int | tuple[int, int]:
        lo, hi = (value, value) if isinstance(value, int) else value
        if lo < 1 or hi > constants.MAX_DIALOGUE_TURNS or lo > hi:
            raise ValueError(f"expected a number or [min, max] with 1 <= min <= max <= {constants.MAX_DIALOGUE_TURNS}")
        return value

    @model_validator(mode="after")
    def _consistent(self):
        if self.system_prompt is not None and "assistant_system" in self.templates:
            raise ValueError("give the assistant's system prompt once: system_prompt or templates.assistant_system")
        if self.min_turns > self.turn_range[1]:
            raise ValueError(f"min_turns {self.min_turns} is more than the most turns a conversation has ({self.turn_range[1]})")
        return self

    @property
    def turn_range(self) -> tuple[int, int]:
        return (self.turns, self.turns) if isinstance(self.turns, int) else tuple(self.turns)


class Chunking(Strict):
    by: Literal["chars", "tokens"] = "chars"
    size: int = Field(1500, ge=20, description="largest chunk, in characters or tokens")
    overlap: int = Field(150, ge=0)
    # by tokens: any Hugging Face tokenizer (a Hub id or a local folder); default the teacher's model.
    tokenizer: str | None = None
    # Chunks shorter than this (characters) hold too little to ask about; they are skipped.
    min_chars: int = Field(80, ge=1)

    @model_validator(mode="after")
    def _overlap(self):
        if self.overlap * 2 > self.size:
            raise ValueError(f"overlap {self.overlap} must be at most half of size {self.size}")
        return self


class GroundedQAGenerate(Sizing):
    task: str
    # A folder (read recursively), a file, or a glob, or a list of them; relative paths
    # are taken from the pipeline file's folder.
    documents: str | list[str]
    # .jsonl documents: one document per line, its text in this field.
    text_field: str = "text"
    id_field: str | None = None
    # Pairs to request (`count`): by default pairs_per_chunk for every chunk of every document.
    pairs_per_chunk: int = Field(3, ge=1, le=20)
    chunking: Chunking = Field(default_factory=Chunking)
    # Ask each answer to quote the chunk; a quote not found in the chunk rejects the pair.
    quote_support: bool = True
    combine: Literal["product", "sample"] = "sample"
    templates: dict[Literal["system", "user"], str] = Field(
        default_factory=lambda: {"system": "grounded_qa/system.j2", "user": "grounded_qa/user.j2"})
    system_prompt: str | None = None
    max_attempts: int = Field(constants.DEFAULT_CONTENT_ATTEMPTS, ge=1, le=20)

    @field_validator("templates", mode="before")
    @classmethod
    def _defaults(cls, value: Any) -> Any:
        defaults = {"system": "grounded_qa/system.j2", "user": "grounded_qa/user.j2"}
        return _fill_defaults(value, defaults) if isinstance(value, dict) else value

    @classmethod
    def needs_count(cls) -> bool:
        return False

    @field_validator("documents")
    @classmethod
    def _some(cls, value: str | list[str]) -> str | list[str]:
        if not value or (isinstance(value, list) and not all(isinstance(v, str) and v for v in value)):
            raise ValueError("expected a folder, file or glob, or a list of them")
        return value


class PreferenceJudge(Strict):
    """The judge that scores a prompt's candidates side by side, for the preference task."""

    # A template under prompts/ that shows the candidates and asks for one score each.
    rubric: str = "preference/judge.j2"
    scale: tuple[int, int] = (1, 10)
    # Judge each prompt twice, the second time with the candidates in reverse order, and
    # average each candidate's scores: a judge that favours a position favours both ends.
    both_orders: bool = False
    max_attempts: int = Field(3, ge=1, le=10)
    # Keys of `teacher:` to change for the judge: model, base_url, api_key_env, sampling ...
    teacher: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _scale(self):
        lo, hi = self.scale
        if lo >= hi:
            raise ValueError(f"scale: low end {lo} must be below high end {hi}")
        return self


PREFERENCE_TEMPLATES = {"user": "preference/user.j2"}


class PreferenceGenerate(Sizing):
    task: str
    # count: prompts to request, each ending as one chosen/rejected pair or one rejection.
    # 2-4 candidate answers per prompt, each written by the pipeline's teacher with these
    # `teacher:` keys changed: a temperature of its own, or another model or endpoint.
    candidates: list[dict[str, Any]] = Field(
        default_factory=lambda: [{"sampling": {"temperature": 0.5}}, {"sampling": {"temperature": 1.1}}],
        min_length=2, max_length=4)
    judge: PreferenceJudge = Field(default_factory=PreferenceJudge)
    # The chosen answer's score must beat the rejected one's by at least this much; a tie
    # (margin 0) is always rejected, since it says nothing about which answer is better.
    min_margin: float = Field(1.0, ge=0)
    combine: Literal["product", "sample"] = "sample"
    # `system` (optional) and `user` render the prompt: sent to every candidate as is, and
    # saved as the row's `prompt`.
    templates: dict[Literal["system", "user"], str] = Field(default_factory=lambda: dict(PREFERENCE_TEMPLATES))
    # Attempts per candidate for an answer that is not cut off or empty.
    max_attempts: int = Field(constants.DEFAULT_CONTENT_ATTEMPTS, ge=1, le=20)

    @field_validator("templates", mode="before")
    @classmethod
    def _defaults(cls, value: Any) -> Any:
        return _fill_defaults(value, PREFERENCE_TEMPLATES) if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _margin_on_scale(self):
        lo, hi = self.judge.scale
        if self.min_margin > hi - lo:
            raise ValueError(f"min_margin {self.min_margin:g} is more than the judge's scale spans ({lo}-{hi})")
        return self
