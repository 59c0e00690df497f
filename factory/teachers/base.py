"""The teacher contract: messages and options in, a completion out."""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from factory.core.structured_modes import StructuredModes

from factory.core.errors import TeacherMisconfigured


@dataclass(slots=True)
class Request:
    messages: list[dict[str, str]]
    # JSON schema the answer must follow, when the task has one.
    schema: dict[str, Any] | None = None
    schema_name: str = "answer"
    seed: int | None = None
    # The engine's key for the request (its journal key): a batch teacher names the
    # request by it at the provider, so a rerun finds it in a batch already submitted.
    key: str = ""
    # Raw text to continue as it is, no chat template applied (`Teacher.complete_text`);
    # `messages` is then empty. Magpie writes a prompt this way.
    prompt: str | None = None


@dataclass(slots=True)
class Completion:
    text: str
    finish_reason: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""
    # The thinking that came with the answer (never part of `text`: see factory/core/reasoning.py).
    reasoning: str | None = None
    # Of prompt_tokens, those the provider served from its prompt cache (billed lower).
    cached_tokens: int = 0
    # Of completion_tokens, those spent thinking (billed as output, never seen in `text`).
    reasoning_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        # Answers journaled before these fields existed read back the same.
        for name in ("reasoning", "cached_tokens", "reasoning_tokens"):
            if not out[name]:
                del out[name]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Completion:
        return cls(**data)

    def thinking_apart(self) -> Completion:
        """This completion with any thinking in `text` moved to `reasoning`."""
        from factory.core.reasoning import split_thinking

        text, reasoning = split_thinking(self.text, self.reasoning)
        if text == self.text and reasoning == self.reasoning:
            return self
        return replace(self, text=text, reasoning=reasoning)


class Teacher(abc.ABC):
    backend: str = ""
    model: str = ""
    # How many requests the engine should keep in flight when the user sets none.
    default_concurrency: int = 1

    async def start(self) -> None:
        """Connect or load; raise TeacherError with a line that says what to do."""

    @abc.abstractmethod
    async def complete(self, request: Request) -> Completion:
        """Answer one request; raise TeacherError when the request failed for good, or
        BadResponse when an answer came that cannot be used."""

    # Whether `complete_text` works: in-process models and servers with /v1/completions.
    completes_text: bool = False

    async def complete_text(self, request: Request) -> Completion:
        """Continue `request.prompt` as raw text (no chat template); raise as `complete` does."""
        raise TeacherMisconfigured(f"the {self.backend} backend cannot complete raw text")

    # The structured-output modes an HTTP teacher chooses among (factory/core/structured_modes.py);
    # None for backends that have one way only.
    modes: StructuredModes | None = None

    def legacy_payloads(self, request: Request) -> list[dict[str, Any]]:
        """What factory 0.1 hashed into its journal key for `request`, in every mode it
        may have used: a run begun by 0.1 resumes from its journal."""
        return [{"model": self.model, "messages": request.messages, "schema": request.schema, "seed": request.seed}]

    def secrets(self) -> list[str]:
        """Values that must never be written anywhere (API keys)."""
        return []

    def describe(self) -> dict[str, Any]:
        """For run.json and the dataset card: never a secret."""
        return {"backend": self.backend, "model": self.model}

    async def close(self) -> None:
        pass
