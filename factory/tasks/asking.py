"""Asking the teacher until an answer is usable: the one retry loop every task and the judge share.

Each attempt is its own journal entry (its own step, its own sampling seed), so a rerun
replays the attempts already paid for and asks only for the next one. An answer that
cannot be used (the caller's `use` raises `Unusable`) or a `BadResponse` costs one
attempt; after `max_attempts` the last reason stands. A `TeacherError` is not an
answer: it propagates, the unit stays pending and the engine decides what to do.
"""

from __future__ import annotations

from typing import Any, Callable, Generic, NamedTuple, TypeVar

from factory.core.errors import BadResponse
from factory.tasks.base import Asker, request_seed
from factory.teachers.base import Completion, Request

T = TypeVar("T")


class Unusable(ValueError):
    """An answer came but cannot be used; `reason` is the rejection reason, `detail` says why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class NoUsableAnswer(Exception):
    """Every attempt was unusable; `reason` and `detail` are the last attempt's."""

    def __init__(self, reason: str, detail: str, attempts: int):
        super().__init__(f"{reason} after {attempts} attempts: {detail}")
        self.reason, self.detail, self.attempts = reason, detail, attempts


class Usable(NamedTuple, Generic[T]):
    value: T
    completion: Completion
    attempts: int


def by_attempt(attempt: int) -> int:
    """The default step name: the attempt number itself (0-based)."""
    return attempt


async def ask_until_usable(
    asker: Asker,
    messages: list[dict[str, str]],
    use: Callable[[Completion, int], T],
    *,
    unit: int | str,
    pipeline_seed: int,
    max_attempts: int,
    schema: dict[str, Any] | None = None,
    schema_name: str = "answer",
    step: Callable[[int], int | str] = by_attempt,
    prompt: str | None = None,
) -> Usable[T]:
    """Ask up to `max_attempts` times; `use(completion, attempt)` turns an answer into a value
    or raises `Unusable`. Attempt n is journaled under (`unit`, `step(n)`) and sampled with
    `request_seed(pipeline_seed, unit, step(n))`. With `prompt` (and no messages) each
    attempt is a raw-text completion of it instead of a chat request.

    Returns the first usable value, its completion and how many attempts it took. Raises
    `NoUsableAnswer` with the last reason when none was usable; a `TeacherError` propagates.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    reason = detail = ""
    for attempt in range(max_attempts):
        name = step(attempt)
        request = Request(messages, schema, schema_name, request_seed(pipeline_seed, unit, name), prompt=prompt)
        try:
            completion = await asker.ask(request, unit, name)
        except BadResponse as err:
            # Subclasses name their own reason (an oversized answer, ...).
            reason, detail = getattr(err, "reason", "bad_response"), str(err)
            continue
        try:
            return Usable(use(completion, attempt), completion, attempt + 1)
        except Unusable as err:
            reason, detail = err.reason, err.detail
    raise NoUsableAnswer(reason, detail, max_attempts)
