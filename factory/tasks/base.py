"""What a generation task is: units of work that each end as records or rejections.

A unit is one request for Q&A (k pairs) or one conversation for dialogues. The engine
runs many units at once; a unit asks the teacher through `Asker.ask`, which goes
through the journal, the rate limits and the in-flight window.
"""

from __future__ import annotations

import abc
import hashlib
from typing import Any, Protocol

from factory.record import Record, Rejection
from factory.teachers.base import Completion, Request


class Asker(Protocol):
    # `unit` names the request in the journal: a unit index, or a string such as a
    # record id for stages that work per record.
    async def ask(self, request: Request, unit: int | str, step: int) -> Completion: ...


class Task(abc.ABC):
    name: str = ""
    samples_per_unit: int = 1

    @abc.abstractmethod
    def units(self) -> int:
        """How many units the run needs for the requested count."""

    @abc.abstractmethod
    def check(self) -> list[dict[str, Any]]:
        """Render every template against every seed value once; return a few examples.

        Raises TemplateError on a template that cannot render. Sends nothing.
        """

    @abc.abstractmethod
    async def run_unit(self, unit: int, asker: Asker) -> list[Record | Rejection]:
        """Every sample of the unit, each as a Record or a Rejection with its reason."""

    def describe(self) -> dict[str, Any]:
        return {"task": self.name}


def request_seed(pipeline_seed: int, unit: int | str, step: int) -> int:
    """A per-request sampling seed: fixed for a given request, different between requests."""
    digest = hashlib.blake2b(f"{pipeline_seed}:{unit}:{step}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF
