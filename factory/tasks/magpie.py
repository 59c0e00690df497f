"""Magpie (Xu et al., 2024): an aligned model writes the user's turn itself.

Given only its chat template up to where a user message begins (the pre-query prefix,
after an optional system prompt), an instruction-tuned model writes a plausible user
query and ends the turn. That query is then answered as usual, through the chat
interface. A unit is one query and its answer.

The query is a raw-text completion (`Teacher.complete_text`): in-process transformers
and vLLM, and OpenAI-compatible servers at /v1/completions. The prefix comes from a
preset for the model's family, from literal text, or from a tokenizer's own chat
template (the teacher model's by default, for in-process backends). A backend that
cannot complete raw text (api.openai.com for chat models) or whose template is unknown
is refused before anything is sent.

A query must end its turn (finish_reason stop, or the template's end-of-turn marker),
and have between `min_words` and `max_words` words; otherwise it is asked again, then
rejected. Queries are deduplicated (case, spacing and punctuation folded) against every
earlier one in sample order: units run in rounds (tasks/rounds.py), so the first of
two equal queries is the one kept, whatever the window or timing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from factory.config.pipeline import PipelineFile
from factory.core.errors import ConfigError, FactoryError, RequestRefused
from factory.config.instruction import MagpieGenerate
from factory.core.record import Record, Rejection, record_id
from factory.inputs.seeds import SeedSpace
from factory.tasks.asking import NoUsableAnswer, Unusable, ask_until_usable
from factory.tasks.base import Asker, Task
from factory.tasks.rouge import words
from factory.tasks.rounds import Rounds, refuse_shards
from factory.teachers.base import Completion
from factory.inputs.templates import TemplateLibrary

# Units per round. Only when answers may start depends on it, never which query is kept:
# each is compared with all earlier ones in sample order.
ROUND_SIZE = 64
_SENTINEL = "\u2063magpie-query\u2063"


@dataclass(frozen=True)
class Preset:
    """A model family's chat template around the first user message."""

    begin: str
    system: str | None  # "{system}" marks the system prompt; None: the family has no system role
    user: str
    end: str  # closes a turn: where a query that ran on is cut

    def prefix(self, system: str | None) -> str:
        head = self.begin
        if system:
            head += self.system.replace("{system}", system)
        return head + self.user


PRESETS = {
    "chatml": Preset("", "<|im_start|>system\n{system}<|im_end|>\n", "<|im_start|>user\n", "<|im_end|>"),
    "llama3": Preset("<|begin_of_text|>", "<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>",
                     "<|start_header_id|>user<|end_header_id|>\n\n", "<|eot_id|>"),
    "phi3": Preset("", "<|system|>\n{system}<|end|>\n", "<|user|>\n", "<|end|>"),
    "gemma": Preset("<bos>", None, "<start_of_turn>user\n", "<end_of_turn>"),
    "mistral": Preset("<s>", None, "[INST] ", "[/INST]"),
}


def tokenizer_frame(tokenizer, system: str | None) -> tuple[str, str]:
    """(prefix, end-of-turn text) from a tokenizer's chat template, by rendering a user
    message that is a marker and cutting there."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": _SENTINEL}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    prefix, found, after = text.partition(_SENTINEL)
    if not found:
        raise ValueError("its chat template does not show the user's message as given")
    end = after.strip().split("\n")[0].strip()
    return prefix, end


@dataclass
class Query:
    text: str = ""
    completion: Completion | None = None
    attempts: int = 0
    failure: tuple[str, str] | None = None
    refused: RequestRefused | None = None
    duplicate_of: int | None = None  # the earlier sample with the same query


@dataclass
class QueryRound:
    queries: dict[int, Query]
    # Every query so far, folded -> the first sample that asked it; the next round takes it over.
    seen: dict[str, int] | None


class MagpieTask(Task):
    name = "magpie"

    def __init__(self, pipeline: PipelineFile, seeds: SeedSpace, library: TemplateLibrary):
        super().__init__(pipeline, seeds)
        cfg: MagpieGenerate = self.cfg
        refuse_shards(pipeline, "magpie", "each query is deduplicated against every earlier one")
        where = f"{pipeline.path}: generate"
        self.templates = {role: library.load(name, set(seeds.names), where=f"{where}.templates.{role}")
                          for role, name in cfg.templates.items()}
        self.frame = self._frame(pipeline, where)
        self.rounds: Rounds[QueryRound] = Rounds(self._round)
        self._asker: Asker | None = None

    def _frame(self, pipeline: PipelineFile, where: str) -> Callable[[str | None], tuple[str, str]]:
        """system prompt -> (pre-query prefix, end-of-turn text); refuses what cannot work."""
        cfg, teacher = self.cfg, pipeline.config.teacher
        if teacher.backend == "anthropic":
            raise ConfigError(f"{pipeline.path}: teacher.backend: magpie needs raw text completion, which "
                              "Anthropic's Messages API does not offer; use an OpenAI-compatible server with "
                              "/v1/completions (teacher.base_url) or backend transformers or vllm")
        if teacher.mode == "batch":
            raise ConfigError(f"{pipeline.path}: teacher.mode: magpie's raw text completions are not sent through "
                              "batch APIs; use mode: online")
        if teacher.backend == "openai" and not teacher.base_url and teacher.launch is None:
            raise ConfigError(f"{pipeline.path}: generate.task: magpie needs raw text completion, which "
                              "api.openai.com does not offer for chat models; use an OpenAI-compatible server with "
                              "/v1/completions (vLLM, SGLang, llama.cpp: teacher.base_url) or backend transformers "
                              "or vllm")
        wants_system = bool(cfg.system_prompt or self.templates)
        if cfg.pre_query is not None:
            preset = PRESETS[cfg.pre_query]
            if wants_system and preset.system is None:
                raise ConfigError(f"{where}.pre_query: the {cfg.pre_query} template has no system role; "
                                  "drop the system prompt or give the model's tokenizer (generate.tokenizer)")
            self.frame_source = cfg.pre_query
            return lambda system: (preset.prefix(system), preset.end)
        if cfg.pre_query_text is not None:
            if wants_system:
                raise ConfigError(f"{where}.pre_query_text: is used as it is, so a system prompt cannot go in it; "
                                  "write the system turn into the text, or use pre_query or tokenizer")
            self.frame_source = "text"
            return lambda system: (cfg.pre_query_text, "")
        name = cfg.tokenizer
        if name is None:
            if teacher.backend == "openai":
                raise ConfigError(f"{where}.pre_query: the server's chat template is unknown here; set "
                                  f"generate.pre_query to the model's family ({', '.join(PRESETS)}), "
                                  "generate.pre_query_text, or generate.tokenizer")
            name = teacher.model
        tokenizer = self._tokenizer(name, f"{where}.tokenizer" if cfg.tokenizer else f"{pipeline.path}: teacher.model")
        try:
            tokenizer_frame(tokenizer, "check" if wants_system else None)
        except Exception as err:  # a template that raises on a system role, or renders no user turn
            raise ConfigError(f"{where}.tokenizer: cannot find the pre-query prefix in the chat template of "
                              f"{name!r}: {' '.join(str(err).split())[:200]}") from err
        self.frame_source = f"tokenizer:{name}"
        return lambda system: tokenizer_frame(tokenizer, system)

    @staticmethod
    def _tokenizer(name: str, where: str):
        from factory.core import hub

        def load(source: str):
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(source)

        try:
            tokenizer = hub.load("tokenizer", name, load, "set generate.pre_query to the model's family instead")
        except FactoryError as err:
            raise ConfigError(f"{where}: {err}") from err
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(f"{where}: {name!r} has no chat template; set generate.pre_query instead")
        return tokenizer

    # -- shape of the run --------------------------------------------------------------

    def units(self) -> int:
        return self.cfg.count

    def requested(self) -> int:
        return self.cfg.count

    def roles(self) -> set[str]:
        saves = self.cfg.save_system and (self.cfg.system_prompt or self.templates)
        return {"user", "assistant"} | ({"system"} if saves else set())

    def metadata_fields(self) -> set[str]:
        return super().metadata_fields() | {"pre_query", "query_attempts", "query_finish_reason", "teacher_model",
                                            "finish_reason", "attempts"}

    def data_digest(self) -> str:
        # The prefix decides every query: a changed preset or tokenizer template is new data.
        prefix = self.frame(self.cfg.system_prompt) if not self.templates else self.frame_source
        return hashlib.sha256(json.dumps([super().data_digest(), prefix]).encode()).hexdigest()

    def describe(self) -> dict[str, Any]:
        return {"task": self.name, "pre_query": self.frame_source, "min_words": self.cfg.min_words,
                "max_words": self.cfg.max_words, "dedup": "exact, case, spacing and punctuation folded"}

    def summary(self) -> str:
        return f"{self.cfg.count} queries written by the teacher after its pre-query prefix ({self.frame_source}), " \
               "each answered: 2 requests per sample"

    def _system(self, unit: int) -> str | None:
        if "system" in self.templates:
            return self.templates["system"].render(self.seeds.values(unit))
        return self.cfg.system_prompt

    def check(self) -> list[dict[str, Any]]:
        base = self.seeds.values(0)
        for name, values in zip(self.seeds.names, self.seeds.lists):
            for value in values:
                for template in self.templates.values():
                    template.render({**base, name: value})
        return [{"seed": self.seeds.values(u), "messages": [{"role": "raw prompt",
                                                             "content": self.frame(self._system(u))[0]}]}
                for u in range(min(3, self.units()))]

    # -- rounds: queries, deduplicated in sample order ----------------------------------

    async def _round(self, r: int) -> QueryRound:
        units = [u for u in self.unit_list() if u // ROUND_SIZE == r]  # top-up units (generate.keep) too
        queries = dict(zip(units, await asyncio.gather(*(self._query(u) for u in units))))
        # Earlier rounds' queries are known once they settle: only then can these be compared.
        seen = {}
        if r:  # taken over, not copied: only this round reads what the round before saw
            before = await self.rounds.get(r - 1)
            seen, before.seen = before.seen, None
        for unit, query in queries.items():
            if query.failure or query.refused:
                continue
            key = " ".join(words(query.text))
            if key in seen:
                query.duplicate_of = seen[key]
            else:
                seen[key] = unit
        return QueryRound(queries, seen)

    async def _query(self, unit: int) -> Query:
        prefix, end = self.frame(self._system(unit))
        c = self.cfg

        def use(completion: Completion, attempt: int) -> str:
            text = completion.text
            ended = completion.finish_reason == "stop"
            if end and end in text:
                text, ended = text.split(end, 1)[0], True  # the model closed its turn and went on
            if not ended:
                raise Unusable("query_truncated", f"the query did not end its turn "
                                                  f"(finish_reason={completion.finish_reason})")
            text = text.strip()
            n = len(text.split())
            if n < c.min_words:
                raise Unusable("query_too_short", f"{n} words, fewer than min_words {c.min_words}: {text[:80]!r}")
            if n > c.max_words:
                raise Unusable("query_too_long", f"{n} words, more than max_words {c.max_words}")
            return text

        try:
            answer = await ask_until_usable(self._asker, [], use, unit=unit, pipeline_seed=self.pipeline_seed,
                                            max_attempts=c.max_attempts, schema_name="query",
                                            step=lambda attempt: f"query:{attempt}", prompt=prefix)
        except NoUsableAnswer as err:
            return Query(failure=(err.reason, err.detail), attempts=err.attempts)
        except RequestRefused as err:
            return Query(refused=err)
        return Query(answer.value, answer.completion, answer.attempts)

    # -- a unit: its query's verdict and the answer -------------------------------------

    async def run_unit(self, unit: int, asker: Asker) -> list[Record | Rejection]:
        self._asker = asker
        query = (await self.rounds.get(unit // ROUND_SIZE)).queries[unit]
        if query.refused is not None:
            raise query.refused
        system = self._system(unit)
        head = [{"role": "system", "content": system}] if system else []
        saved_head = head if self.cfg.save_system else []
        meta: dict[str, Any] = {"task": self.name, "seed": self.seeds.values(unit), "sample_index": unit,
                                "pre_query": self.frame_source, "query_attempts": query.attempts,
                                "templates": {role: {"name": t.name, "sha256": t.short_hash}
                                              for role, t in self.templates.items()}}
        sample_id = record_id(self.pipeline_name, self.name, unit)
        if query.failure is not None:
            reason, detail = query.failure
            return [Rejection(sample_id, "generate", reason, f"{query.attempts} attempts: {detail}", metadata=meta)]
        meta["query_finish_reason"] = query.completion.finish_reason
        usage = {"prompt_tokens": query.completion.prompt_tokens, "completion_tokens": query.completion.completion_tokens}
        if query.duplicate_of is not None:
            first = record_id(self.pipeline_name, self.name, query.duplicate_of)
            return [Rejection(sample_id, "generate", "duplicate_query",
                              f"the same query as sample {query.duplicate_of} ({first})",
                              messages=saved_head + [{"role": "user", "content": query.text}],
                              metadata={**meta, "usage": usage})]

        def use(completion: Completion, attempt: int) -> str:
            if completion.finish_reason == "length":
                raise Unusable("truncated", "the answer hit max_tokens")
            if not completion.text.strip():
                raise Unusable("empty", "the answer is empty")
            return completion.text.strip()

        messages = head + [{"role": "user", "content": query.text}]
        try:
            answer = await ask_until_usable(asker, messages, use, unit=unit, pipeline_seed=self.pipeline_seed,
                                            max_attempts=self.cfg.max_attempts, schema_name="answer",
                                            step=lambda attempt: f"answer:{attempt}")
        except NoUsableAnswer as err:
            return [Rejection(sample_id, "generate", err.reason, f"{err.attempts} attempts: {err.detail}",
                              messages=saved_head + [{"role": "user", "content": query.text}],
                              metadata={**meta, "usage": usage})]
        completion = answer.completion
        usage = {"prompt_tokens": usage["prompt_tokens"] + completion.prompt_tokens,
                 "completion_tokens": usage["completion_tokens"] + completion.completion_tokens}
        return [Record(sample_id, saved_head + [{"role": "user", "content": query.text},
                                                {"role": "assistant", "content": answer.value}],
                       {**meta, "usage": usage, "teacher_model": completion.model,
                        "finish_reason": completion.finish_reason, "attempts": answer.attempts})]
