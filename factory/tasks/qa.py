"""Single-turn question/answer pairs: each request asks for k pairs about its seed values."""

from __future__ import annotations

import math
from typing import Any

from factory.config.pipeline import PipelineFile
from factory.core.reasoning import has_thinking_tag
from factory.core.record import Record, Rejection, record_id
from factory.inputs.seeds import SeedSpace
from factory.core.structured import JSONNotFound, extract_json, list_answer, strict_object
from factory.tasks.asking import NoUsableAnswer, Unusable, ask_until_usable
from factory.tasks.base import Asker, MultiSampleTask, beside_answers, split_usage
from factory.teachers.base import Completion
from factory.inputs.templates import Template, TemplateLibrary


def qa_schema(k: int) -> dict[str, Any]:
    return list_answer("pairs", strict_object({"question": {"type": "string"}, "answer": {"type": "string"}}), k, k)


def pair_items(text: str) -> list[dict[str, Any]]:
    """The answer's pair objects that have a non-empty question and answer (both stripped);
    any other keys they carry (a quote, a support flag) are kept. Raises Unusable ("unparseable")."""
    try:
        value = extract_json(text)
    except JSONNotFound as err:
        raise Unusable("unparseable", str(err)) from err
    items = value.get("pairs") if isinstance(value, dict) else value
    if not isinstance(items, list):
        raise Unusable("unparseable", "JSON has no 'pairs' list")
    pairs = []
    for item in items:
        if not isinstance(item, dict):
            continue
        q, a = item.get("question"), item.get("answer")
        if isinstance(q, str) and isinstance(a, str) and q.strip() and a.strip():
            pairs.append({**item, "question": q.strip(), "answer": a.strip()})
    if not pairs:
        raise Unusable("unparseable", "no pair with a non-empty question and answer")
    return pairs


def parse_pairs(text: str) -> list[tuple[str, str]]:
    return [(p["question"], p["answer"]) for p in pair_items(text)]


def _thinking_left(pair: dict[str, Any]) -> tuple[str, str] | None:
    # Thinking outside the JSON was split off with the answer (factory/core/reasoning.py);
    # a tag inside a field is the model thinking in the text itself.
    for field in ("question", "answer"):
        if has_thinking_tag(pair[field]):
            return "thinking_in_answer", f"the {field} holds a think tag"
    return None


class QATask(MultiSampleTask):
    """k pairs per request. Subclasses change the prompt, the schema and what makes a pair."""

    name = "qa"
    schema_name = "qa_pairs"

    def __init__(self, pipeline: PipelineFile, seeds: SeedSpace, library: TemplateLibrary):
        super().__init__(pipeline, seeds)
        cfg = self.cfg
        self.k = self.pairs_per_unit()
        self.samples_per_unit = self.k
        self.reasoning = pipeline.config.output.reasoning
        self.schema = self.make_schema()
        where = f"{pipeline.path}: generate.templates"
        provided = set(seeds.names) | self.template_variables()
        self.templates: dict[str, Template] = {
            role: library.load(name, provided, where=f"{where}.{role}") for role, name in cfg.templates.items()
        }

    # -- what a subclass changes ---------------------------------------------------------

    def pairs_per_unit(self) -> int:
        return self.cfg.pairs_per_request

    def make_schema(self) -> dict[str, Any]:
        return qa_schema(self.k)

    def template_variables(self) -> set[str]:
        return {"k"}

    def variables(self, unit: int) -> dict[str, Any]:
        return {**self.seeds.values(unit), "k": self.k}

    def unit_metadata(self, unit: int) -> dict[str, Any]:
        return {}

    def parse(self, text: str) -> list[dict[str, Any]]:
        return [{"question": p["question"], "answer": p["answer"]} for p in pair_items(text)]

    def verdict(self, pair: dict[str, Any], unit: int) -> tuple[str, str] | None:
        """None to keep the pair, else (reason, detail)."""
        return None

    def pair_metadata(self, pair: dict[str, Any]) -> dict[str, Any]:
        return {}

    def roles(self) -> set[str]:
        return {"user", "assistant"} | ({"system"} if self.cfg.system_prompt else set())

    def metadata_fields(self) -> set[str]:
        return super().metadata_fields() | {"teacher_model", "finish_reason", "attempts", "reasoning"}

    # -- the common work -----------------------------------------------------------------

    def units(self) -> int:
        return math.ceil(self.requested() / self.k)

    def requested(self) -> int:
        return self.cfg.count

    def _prompt(self, variables: dict[str, Any]) -> list[dict[str, str]]:
        messages = []
        if "system" in self.templates:
            messages.append({"role": "system", "content": self.templates["system"].render(variables)})
        messages.append({"role": "user", "content": self.templates["user"].render(variables)})
        return messages

    def check(self) -> list[dict[str, Any]]:
        base = self.variables(0)
        for name, value in self.seeds.checked():
            self._prompt({**base, name: value})
        return [{"seed": self.seeds.values(u), "messages": self._prompt(self.variables(u))}
                for u in range(min(3, self.units()))]

    async def run_unit(self, unit: int, asker: Asker) -> list[Record | Rejection]:
        seed_values = self.seeds.values(unit)
        messages = self._prompt(self.variables(unit))
        wanted = self._samples(unit)
        meta = {
            "task": self.name,
            "seed": seed_values,
            **self.unit_metadata(unit),
            "templates": {role: {"name": t.name, "sha256": t.short_hash} for role, t in self.templates.items()},
        }
        try:
            pairs, completion, attempts = await ask_until_usable(
                asker, messages, self._use, unit=unit, pipeline_seed=self.pipeline_seed,
                max_attempts=self.cfg.max_attempts, schema=self.schema, schema_name=self.schema_name)
        except NoUsableAnswer as err:
            return [self._reject(i, err.reason, err.detail, meta) for i in wanted]
        common = {
            **meta,
            "teacher_model": completion.model,
            "finish_reason": completion.finish_reason,
            "attempts": attempts,
        }
        if completion.reasoning and self.reasoning == "metadata":
            common["reasoning"] = completion.reasoning  # one thinking for every pair of the request
        # The request's usage, split over the pairs it produced, in whole tokens (all of
        # it on the first sample when it produced none).
        usage = split_usage(completion, len(pairs[: len(wanted)]) or 1)
        nothing = {"prompt_tokens": 0, "completion_tokens": 0}
        out: list[Record | Rejection] = []
        for position, sample in enumerate(wanted):
            if position >= len(pairs):
                out.append(self._reject(sample, "too_few_pairs", f"teacher returned {len(pairs)} of {self.k} pairs",
                                        {**common, "usage": usage[position] if position < len(usage) else nothing}))
                continue
            pair = pairs[position]
            record = self._record(sample, pair, {**common, "usage": usage[position], **self.pair_metadata(pair)},
                                  completion.reasoning)
            problem = _thinking_left(pair) or self.verdict(pair, unit)
            if problem is None:
                out.append(record)
            else:
                out.append(Rejection(record.id, "generate", *problem, messages=record.messages,
                                     metadata=record.metadata))
        return out

    def _use(self, completion: Completion, attempt: int) -> list[dict[str, Any]]:
        try:
            return self.parse(completion.text)
        except Unusable as err:
            # Cut off at max_tokens rather than malformed: the reason says so.
            reason = "truncated" if completion.finish_reason == "length" else err.reason
            raise Unusable(reason, f"{err.detail} (attempt {attempt + 1}, "
                                   f"finish_reason={completion.finish_reason})") from err

    def _record(self, sample: int, pair: dict[str, Any], meta: dict, reasoning: str | None = None) -> Record:
        messages = []
        if self.cfg.system_prompt:
            messages.append({"role": "system", "content": self.cfg.system_prompt})
        messages += [{"role": "user", "content": pair["question"]}, {"role": "assistant", "content": pair["answer"]}]
        if self.reasoning == "messages":  # one pair per request (config.py): its thinking is this answer's
            messages = beside_answers(messages, {len(messages) - 1: reasoning})
        return Record(record_id(self.pipeline_name, self.name, sample), messages, {**meta, "sample_index": sample})

    def _reject(self, sample: int, reason: str, detail: str, meta: dict) -> Rejection:
        return Rejection(record_id(self.pipeline_name, self.name, sample), "generate", reason, detail,
                         metadata={**meta, "sample_index": sample})
