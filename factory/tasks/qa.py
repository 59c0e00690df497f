"""Single-turn question/answer pairs: each request asks for k pairs about its seed values."""

from __future__ import annotations

import math
from typing import Any

from factory.generate_config import QAGenerate
from factory.errors import BadResponse, TeacherError
from factory.record import Record, Rejection, record_id
from factory.seeds import SeedSpace
from factory.structured import JSONNotFound, extract_json
from factory.tasks.base import Asker, Task, request_seed
from factory.teachers.base import Request
from factory.templates import Template, TemplateLibrary


def qa_schema(k: int) -> dict[str, Any]:
    pair = {
        "type": "object",
        "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
        "required": ["question", "answer"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"pairs": {"type": "array", "items": pair, "minItems": k, "maxItems": k}},
        "required": ["pairs"],
        "additionalProperties": False,
    }


class Unusable(ValueError):
    """The answer came but holds no usable pairs; the message is the rejection reason."""


def parse_pairs(text: str) -> list[tuple[str, str]]:
    try:
        value = extract_json(text)
    except JSONNotFound as err:
        raise Unusable(str(err)) from err
    items = value.get("pairs") if isinstance(value, dict) else value
    if not isinstance(items, list):
        raise Unusable("JSON has no 'pairs' list")
    pairs = []
    for item in items:
        if not isinstance(item, dict):
            continue
        q, a = item.get("question"), item.get("answer")
        if isinstance(q, str) and isinstance(a, str) and q.strip() and a.strip():
            pairs.append((q.strip(), a.strip()))
    if not pairs:
        raise Unusable("no pair with a non-empty question and answer")
    return pairs


class QATask(Task):
    name = "qa"

    def __init__(self, pipeline_name: str, cfg: QAGenerate, seeds: SeedSpace, library: TemplateLibrary,
                 pipeline_seed: int, where: str):
        self.pipeline_name = pipeline_name
        self.cfg = cfg
        self.seeds = seeds
        self.k = cfg.pairs_per_request
        self.samples_per_unit = self.k
        self.pipeline_seed = pipeline_seed
        self.schema = qa_schema(self.k)
        provided = set(seeds.names) | {"k"}
        self.templates: dict[str, Template] = {
            role: library.load(name, provided, where=f"{where}: generate.templates.{role}")
            for role, name in cfg.templates.items()
        }

    def units(self) -> int:
        return math.ceil(self.cfg.count / self.k)

    def requested(self) -> int:
        return self.cfg.count

    def _variables(self, unit: int) -> dict[str, Any]:
        return {**self.seeds.values(unit), "k": self.k}

    def _prompt(self, variables: dict[str, Any]) -> list[dict[str, str]]:
        messages = []
        if "system" in self.templates:
            messages.append({"role": "system", "content": self.templates["system"].render(variables)})
        messages.append({"role": "user", "content": self.templates["user"].render(variables)})
        return messages

    def check(self) -> list[dict[str, Any]]:
        base = self._variables(0)
        for name, values in zip(self.seeds.names, self.seeds.lists):
            for value in values:
                self._prompt({**base, name: value})
        return [{"seed": self.seeds.values(u), "messages": self._prompt(self._variables(u))}
                for u in range(min(3, self.units()))]

    def _samples(self, unit: int) -> range:
        first = unit * self.k
        return range(first, min(first + self.k, self.cfg.count))

    async def run_unit(self, unit: int, asker: Asker) -> list[Record | Rejection]:
        seed_values = self.seeds.values(unit)
        messages = self._prompt({**seed_values, "k": self.k})
        wanted = self._samples(unit)
        meta = {
            "task": self.name,
            "seed": seed_values,
            "templates": {role: {"name": t.name, "sha256": t.short_hash} for role, t in self.templates.items()},
        }
        reason, detail = "unparseable", ""
        for attempt in range(self.cfg.max_attempts):
            request = Request(messages, self.schema, "qa_pairs", request_seed(self.pipeline_seed, unit, attempt))
            try:
                completion = await asker.ask(request, unit, attempt)
            except BadResponse as err:
                reason, detail = "bad_response", str(err)
                continue
            except TeacherError as err:
                return [self._reject(i, "teacher_error", str(err), meta) for i in wanted]
            try:
                pairs = parse_pairs(completion.text)
            except Unusable as err:
                reason = "truncated" if completion.finish_reason == "length" else "unparseable"
                detail = f"{err} (attempt {attempt + 1}, finish_reason={completion.finish_reason})"
                continue
            share = len(pairs[: len(wanted)]) or 1
            common = {
                **meta,
                "teacher_model": completion.model,
                "finish_reason": completion.finish_reason,
                "attempts": attempt + 1,
                # The request's usage, split over the pairs it produced.
                "usage": {
                    "prompt_tokens": completion.prompt_tokens / share,
                    "completion_tokens": completion.completion_tokens / share,
                },
            }
            out: list[Record | Rejection] = []
            for position, sample in enumerate(wanted):
                if position < len(pairs):
                    q, a = pairs[position]
                    out.append(self._record(sample, q, a, common))
                else:
                    out.append(self._reject(sample, "too_few_pairs",
                                            f"teacher returned {len(pairs)} of {self.k} pairs", common))
            return out
        return [self._reject(i, reason, detail, meta) for i in wanted]

    def _record(self, sample: int, question: str, answer: str, meta: dict) -> Record:
        messages = []
        if self.cfg.system_prompt:
            messages.append({"role": "system", "content": self.cfg.system_prompt})
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        return Record(record_id(self.pipeline_name, self.name, sample), messages, {**meta, "sample_index": sample})

    def _reject(self, sample: int, reason: str, detail: str, meta: dict) -> Rejection:
        return Rejection(record_id(self.pipeline_name, self.name, sample), "generate", reason, detail,
                         metadata={**meta, "sample_index": sample})
