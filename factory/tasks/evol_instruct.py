"""Evol-Instruct (WizardLM): seed instructions rewritten, round after round, into harder
(in-depth) or new (in-breadth) ones, each answered by the teacher.

A unit is one seed instruction's lineage: `rounds` evolutions in sequence, each one a
sample. Round r rewrites the last evolution that survived (the seed at first) with an
evolution drawn by weight from a generator seeded by (pipeline seed, unit, round), so a
lineage is the same whatever else runs beside it. An evolution is eliminated, as in the
paper, when

- it copies the evolving prompt's own words ("#Rewritten Prompt#", "given prompt"),
- it is only punctuation and stop words,
- the teacher, asked with the paper's equality prompt, finds it equal to its parent
  (no information gain),
- its answer is a refusal (a word like "sorry" in fewer than 80 words), or only
  punctuation and stop words;

and then its parent goes into the next round again (the paper returns it to the pool).
"""

from __future__ import annotations

import math
import random
import re
from typing import Any

from factory.config.pipeline import PipelineFile
from factory.core.errors import ConfigError
from factory.config.instruction import EVOL_METHODS, EvolInstructGenerate
from factory.core.record import Record, Rejection, record_id
from factory.inputs.seeds import SeedSpace
from factory.tasks.asking import NoUsableAnswer, Unusable, ask_until_usable
from factory.tasks.base import Asker, MultiSampleTask
from factory.teachers.base import Completion
from factory.inputs.templates import TemplateLibrary

SEED_VARIABLE = "instruction"
# Template variables the task fills: the round, and the two prompts the equality check compares.
OWN_VARIABLES = frozenset({"round", "first", "second"})
# A small English stop-word list: an instruction or answer made only of these (and
# punctuation) says nothing.
STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers
him his how i if in into is it its itself just me more most my no nor not now of off on once only or other our
ours out over own same she should so some such than that the their them then there these they this those through
to too under until up very was we were what when where which while who whom why will with would you your yours
ok okay yes sure well
""".split())
_WORDS = re.compile(r"[^\W_]+", re.UNICODE)


def content_words(text: str) -> list[str]:
    return [w for w in _WORDS.findall(text.lower()) if w not in STOP_WORDS]


def judged_equal(text: str) -> bool:
    """The equality prompt's answer: 'Equal' or 'Not Equal'. Raises Unusable otherwise."""
    lowered = text.lower()
    if re.search(r"\bnot\s+equal\b", lowered):
        return False
    if re.search(r"\bequal\b", lowered):
        return True
    raise Unusable("unparseable_judgement", f"expected 'Equal' or 'Not Equal', got {text[:80]!r}")


class Eliminated(Exception):
    def __init__(self, reason: str, detail: str, answer: str | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.answer = reason, detail, answer  # the answer, when it was the problem


class EvolInstructTask(MultiSampleTask):
    name = "evol_instruct"

    def __init__(self, pipeline: PipelineFile, seeds: SeedSpace, library: TemplateLibrary):
        super().__init__(pipeline, seeds)
        cfg: EvolInstructGenerate = self.cfg
        self.samples_per_unit = cfg.rounds
        if SEED_VARIABLE not in seeds.names:
            raise ConfigError(f"{pipeline.path}: seeds.{SEED_VARIABLE}: evol_instruct evolves the seed variable "
                              f"'{SEED_VARIABLE}'; add it (a list, or {{file: ..., field: ...}})")
        provided = set(seeds.names) | OWN_VARIABLES
        where = f"{pipeline.path}: generate.templates"
        used = [m for m, w in cfg.methods.items() if w > 0] + (["equal"] if cfg.elimination.check_equal else [])
        self.templates = {role: library.load(cfg.templates[role], provided, where=f"{where}.{role}") for role in used}
        self.methods = [m for m, w in cfg.methods.items() if w > 0]
        self.weights = [cfg.methods[m] for m in self.methods]
        words = [w.lower() for w in cfg.elimination.template_words]
        self.template_words = re.compile("|".join(re.escape(w) for w in words), re.IGNORECASE) if words else None

    def units(self) -> int:
        return math.ceil(self.cfg.count / self.cfg.rounds)

    def requested(self) -> int:
        return self.cfg.count

    def template_variables(self) -> set[str]:
        return set(OWN_VARIABLES)

    def roles(self) -> set[str]:
        return {"user", "assistant"} | ({"system"} if self.cfg.system_prompt else set())

    def metadata_fields(self) -> set[str]:
        return super().metadata_fields() | {"method", "evolution", "round", "parent_id", "parent", "teacher_model",
                                            "finish_reason"}

    def describe(self) -> dict[str, Any]:
        return {"task": self.name, "rounds": self.cfg.rounds, "methods": dict(self.cfg.methods),
                "check_equal": self.cfg.elimination.check_equal}

    def summary(self) -> str:
        return (f"{self.requested()} evolutions: {self.units()} seed instructions, {self.cfg.rounds} rounds each "
                f"(up to {3 if self.cfg.elimination.check_equal else 2} requests per evolution)")

    def _method(self, unit: int, round_: int) -> str:
        rng = random.Random(f"{self.pipeline_seed}:evol:{unit}:{round_}")
        return rng.choices(self.methods, self.weights)[0]

    def _evolve_prompt(self, method: str, seed_values: dict[str, Any], parent: str, round_: int) -> list[dict]:
        values = {**seed_values, SEED_VARIABLE: parent, "round": round_}
        return [{"role": "user", "content": self.templates[method].render(values)}]

    def check(self) -> list[dict[str, Any]]:
        base = self.seeds.values(0)
        for name, values in zip(self.seeds.names, self.seeds.lists):
            for value in values:
                seed_values = {**base, name: value}
                for method in self.methods:
                    self._evolve_prompt(method, seed_values, str(seed_values[SEED_VARIABLE]), 1)
        if "equal" in self.templates:
            self.templates["equal"].render({**base, "first": "a", "second": "b", "round": 1})
        return [{"seed": self.seeds.values(u),
                 "messages": self._evolve_prompt(self._method(u, 1), self.seeds.values(u),
                                                 str(self.seeds.values(u)[SEED_VARIABLE]), 1)}
                for u in range(min(3, self.units()))]

    # -- running -----------------------------------------------------------------------

    async def run_unit(self, unit: int, asker: Asker) -> list[Record | Rejection]:
        seed_values = self.seeds.values(unit)
        parent = str(seed_values[SEED_VARIABLE]).strip()
        parent_id = record_id(self.pipeline_name, f"{self.name}:seed", unit)
        out: list[Record | Rejection] = []
        for round_, sample in enumerate(self._samples(unit), 1):
            method = self._method(unit, round_)
            meta = {
                "task": self.name, "seed": seed_values, "sample_index": sample, "method": method,
                "evolution": EVOL_METHODS[method], "round": round_, "parent_id": parent_id, "parent": parent,
                "templates": {role: {"name": self.templates[role].name, "sha256": self.templates[role].short_hash}
                              for role in (method, "equal") if role in self.templates},
            }
            usage = {"prompt_tokens": 0, "completion_tokens": 0}
            evolved = None
            try:
                evolved = await self._evolve(asker, unit, round_, method, seed_values, parent, usage)
                await self._check_gain(asker, unit, round_, seed_values, parent, evolved, usage)
                answer, completion = await self._answer(asker, unit, round_, evolved, usage)
            except Eliminated as e:
                messages = self._messages(evolved, e.answer) if evolved else None
                out.append(Rejection(record_id(self.pipeline_name, self.name, sample), "generate", e.reason,
                                     f"round {round_} ({method}): {e.detail}", messages=messages,
                                     metadata={**meta, "usage": usage}))
                continue  # the parent stays, and is evolved again next round
            record = Record(record_id(self.pipeline_name, self.name, sample), self._messages(evolved, answer),
                            {**meta, "usage": usage, "teacher_model": completion.model,
                             "finish_reason": completion.finish_reason})
            out.append(record)
            parent, parent_id = evolved, record.id
        return out

    async def _ask(self, asker: Asker, unit: int, step: str, messages: list[dict], use, usage: dict) -> tuple[Any, Completion]:
        def counted(completion: Completion, attempt: int):
            # Every attempt was paid for, so every attempt is counted.
            usage["prompt_tokens"] += completion.prompt_tokens
            usage["completion_tokens"] += completion.completion_tokens
            return use(completion, attempt)

        try:
            answer = await ask_until_usable(asker, messages, counted, unit=unit,
                                            pipeline_seed=self.pipeline_seed, max_attempts=self.cfg.max_attempts,
                                            schema_name=f"evol_{step.split(':')[0]}",
                                            step=lambda attempt: f"{step}:{attempt}")
        except NoUsableAnswer as err:
            raise Eliminated(err.reason, f"{err.attempts} attempts: {err.detail}") from err
        return answer.value, answer.completion

    async def _evolve(self, asker: Asker, unit: int, round_: int, method: str, seed_values: dict, parent: str,
                      usage: dict) -> str:
        def use(completion: Completion, attempt: int) -> str:
            if completion.finish_reason == "length":
                raise Unusable("truncated", "the rewritten instruction hit max_tokens")
            text = completion.text.strip()
            if not text:
                raise Unusable("empty", "the rewritten instruction is empty")
            return text

        evolved, _ = await self._ask(asker, unit, f"evolve:{round_}", self._evolve_prompt(method, seed_values, parent, round_),
                                     use, usage)
        if self.template_words is not None and (found := self.template_words.search(evolved)):
            raise Eliminated("copied_template_words", f"the evolved instruction copies {found.group(0)!r}")
        if len(content_words(evolved)) < self.cfg.elimination.min_content_words:
            raise Eliminated("no_content", "the evolved instruction is only punctuation and stop words")
        return evolved

    async def _check_gain(self, asker: Asker, unit: int, round_: int, seed_values: dict, parent: str, evolved: str,
                          usage: dict) -> None:
        if "equal" not in self.templates:
            return
        if " ".join(evolved.split()).lower() == " ".join(parent.split()).lower():
            raise Eliminated("no_information_gain", "the evolved instruction is its parent, word for word")
        prompt = self.templates["equal"].render({**seed_values, "first": parent, "second": evolved, "round": round_})
        equal, _ = await self._ask(asker, unit, f"equal:{round_}", [{"role": "user", "content": prompt}],
                                   lambda completion, attempt: judged_equal(completion.text), usage)
        if equal:
            raise Eliminated("no_information_gain", "the teacher judged it equal to its parent")

    async def _answer(self, asker: Asker, unit: int, round_: int, evolved: str, usage: dict) -> tuple[str, Completion]:
        def use(completion: Completion, attempt: int) -> str:
            if completion.finish_reason == "length":
                raise Unusable("truncated", "the answer hit max_tokens")
            return completion.text.strip()

        messages = ([{"role": "system", "content": self.cfg.system_prompt}] if self.cfg.system_prompt else [])
        messages.append({"role": "user", "content": evolved})
        answer, completion = await self._ask(asker, unit, f"answer:{round_}", messages, use, usage)
        rules = self.cfg.elimination
        lowered = answer.lower()
        refused = next((w for w in rules.refusal_words if w.lower() in lowered), None)
        if refused and len(answer.split()) < rules.refusal_max_words:
            raise Eliminated("refusal", f"the answer says {refused!r} in {len(answer.split())} words", answer)
        if len(content_words(answer)) < rules.min_content_words:
            raise Eliminated("no_content", "the answer is empty, or only punctuation and stop words", answer)
        return answer, completion

    def _messages(self, evolved: str, answer: str | None) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": self.cfg.system_prompt}] if self.cfg.system_prompt else []
        messages.append({"role": "user", "content": evolved})
        if answer is not None:
            messages.append({"role": "assistant", "content": answer})
        return messages
