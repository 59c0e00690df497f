"""What a generation task is: units of work that each end as records or rejections.

A unit is one request for Q&A (k pairs) or one conversation for dialogues. The engine
runs many units at once; a unit asks the teacher through `Asker.ask`, which goes
through the journal, the rate limits and the in-flight window.
"""

from __future__ import annotations

import abc
import hashlib
import json
from typing import Any, Protocol

from factory.core.record import Record, Rejection
from factory.inputs.seeds import SeedSpace
from factory.teachers.base import Completion, Request
from factory.inputs.templates import Template


class Asker(Protocol):
    # `unit` names the request in the journal: a unit index, or a string such as a
    # record id for stages that work per record.
    async def ask(self, request: Request, unit: int | str, step: int | str) -> Completion: ...


class RoleAsker:
    """Sends each request to its role's engine: the pipeline's teacher unless the role has its own."""

    def __init__(self, default: Asker, by_role: dict[str, Asker] | None = None):
        self.default = default
        self.by_role = by_role or {}

    async def ask(self, request: Request, unit: int | str, step: int | str, role: str | None = None) -> Completion:
        return await self.by_role.get(role, self.default).ask(request, unit, step)

    def for_role(self, role: str) -> Asker:
        """A plain Asker whose every request goes to `role`'s teacher."""
        return _RoleBound(self, role)


class _RoleBound:
    def __init__(self, asker: RoleAsker, role: str):
        self.asker, self.role = asker, role

    async def ask(self, request: Request, unit: int | str, step: int | str) -> Completion:
        return await self.asker.ask(request, unit, step, role=self.role)


class Task(abc.ABC):
    name: str = ""
    samples_per_unit: int = 1
    # Records with several user turns: formats that hold one exchange (alpaca) refuse them.
    multi_turn: bool = False
    # Records that are preference pairs (messages = prompt + chosen, metadata.rejected the
    # other answer): exported as prompt / chosen / rejected, and only to formats that hold pairs.
    pairs: bool = False
    # Set by each task: the templates it renders and the seed space it walks (for run.json).
    templates: dict[str, Template]
    seeds: SeedSpace
    library: Any = None  # the TemplateLibrary they were loaded from (set by make_task)

    def __init__(self, pipeline: Any, seeds: SeedSpace):
        """What every generation task keeps of its pipeline: its `generate:` keys (`cfg`),
        the name and seed its ids and sampling derive from, and the seed space it walks."""
        self.cfg = pipeline.config.generate
        self.pipeline_name = pipeline.config.name
        self.pipeline_seed = pipeline.config.seed
        self.seeds = seeds

    @abc.abstractmethod
    def units(self) -> int:
        """How many units the run needs for the requested count."""

    @abc.abstractmethod
    def requested(self) -> int:
        """How many samples the first round asks for: each ends kept or rejected."""

    # Units of top-up rounds (`generate.keep`), after the first round's range(units()).
    extra_units: list[int] = []

    def unit_list(self) -> list[int]:
        """Every unit the run generates: the first round's, then the top-up rounds'."""
        return [*range(self.units()), *self.extra_units]

    def requested_total(self) -> int:
        return self.requested() + sum(len(self.sample_ids(u)) for u in self.extra_units)

    def unit_seed(self, unit: int) -> dict[str, Any]:
        """The seed values a unit is made from (its cell, for `generate.balance`)."""
        return self.seeds.values(unit)

    def role_teachers(self, pipeline) -> dict[str, Any]:
        """Roles with a teacher of their own: role -> TeacherConfig (a RoleAsker routes them)."""
        return {}

    @abc.abstractmethod
    def check(self) -> list[dict[str, Any]]:
        """Render every template against every seed value once; return a few examples.

        Raises TemplateError on a template that cannot render. Sends nothing.
        """

    @abc.abstractmethod
    async def run_unit(self, unit: int, asker: Asker) -> list[Record | Rejection]:
        """Every sample of the unit, each as a Record or a Rejection with its reason."""

    def template_variables(self) -> set[str]:
        """Variables the task itself gives its templates (a seed of the same name would be hidden)."""
        return set()

    def roles(self) -> set[str]:
        """The roles of the messages in the task's records (what a filter's `roles` may name)."""
        return {"user", "assistant"}

    def metadata_fields(self) -> set[str]:
        """The metadata its records carry, as dotted paths (`seed.topic`, `usage.prompt_tokens`).

        A path with no listed path below it may hold anything (a seed value read from a JSONL
        file is an object), so names below it are not checked. Subclasses add theirs.
        """
        fields = {"task", "seed", "sample_index", "templates", "usage", "usage.prompt_tokens",
                  "usage.completion_tokens"}
        fields |= {f"seed.{name}" for name in self.seeds.names}
        for role in self.templates:
            fields |= {f"templates.{role}", f"templates.{role}.name", f"templates.{role}.sha256"}
        return fields

    def unit_failure(self, unit: int, reason: str, detail: str) -> list[Rejection]:
        """The unit's samples as rejections, when the teacher refused its request for good."""
        return [Rejection(sample_id, "generate", reason, detail, metadata={"sample_index": index})
                for index, sample_id in self.sample_ids(unit)]

    def sample_ids(self, unit: int) -> list[tuple[int, str]]:
        """(sample index, record id) of each sample the unit makes."""
        from factory.core.record import record_id

        return [(unit, record_id(self.pipeline_name, self.name, unit))]

    def data_digest(self) -> str:
        """A hash of the data the units are made from beyond the pipeline file (seed
        files' values, documents): part of what makes a stored unit current."""
        return hashlib.sha256(json.dumps(self.seeds.lists, sort_keys=True, default=str).encode()).hexdigest()

    def describe(self) -> dict[str, Any]:
        return {"task": self.name}

    def summary(self) -> str:
        """One line for `factory validate`: what the run will ask for."""
        return f"{self.requested()} samples in {self.units()} requests"


# The key that holds an assistant message's thinking under `output.reasoning: messages`:
# what the chat templates of Qwen3 and DeepSeek-R1 read (and vLLM's and DeepSeek's APIs
# return), so TRL's SFTTrainer renders it with no mapping (docs/teachers.md: reasoning datasets).
REASONING_KEY = "reasoning_content"


def beside_answers(messages: list[dict[str, str]], thinking: dict[int, str | None]) -> list[dict[str, Any]]:
    """`messages` with REASONING_KEY on each one: the thinking behind the message at that
    index, else None (Arrow wants one shape for every message of a dataset)."""
    return [{**m, REASONING_KEY: thinking.get(i)} for i, m in enumerate(messages)]


def request_seed(pipeline_seed: int, unit: int | str, step: int | str) -> int:
    """A per-request sampling seed: fixed for a given request, different between requests."""
    digest = hashlib.blake2b(f"{pipeline_seed}:{unit}:{step}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


def split_usage(completion: Completion, n: int) -> list[dict[str, int]]:
    """One request's token usage shared among the `n` records it made, in whole tokens
    that add up to the request's own counts (largest remainder: the first records get
    the one token left over)."""
    shares = []
    for i in range(n):
        shares.append({key: total // n + (1 if i < total % n else 0)
                       for key, total in (("prompt_tokens", completion.prompt_tokens),
                                          ("completion_tokens", completion.completion_tokens))})
    return shares


class MultiSampleTask(Task):
    """A task whose unit makes `samples_per_unit` samples, numbered unit * k onwards
    (pairs per request, instructions per request, evolution rounds)."""

    def sample_ids(self, unit: int) -> list[tuple[int, str]]:
        from factory.core.record import record_id

        return [(i, record_id(self.pipeline_name, self.name, i)) for i in self._samples(unit)]

    def _samples(self, unit: int) -> range:
        k = self.samples_per_unit
        first = unit * k
        # Only the first round's last unit is cut to the count; a top-up unit (generate.keep) is whole.
        last = first + k if unit >= self.units() else min(first + k, self.requested())
        return range(first, last)
