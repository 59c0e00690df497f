"""Multi-turn dialogues: a simulated user and the assistant, one teacher request per turn.

Each conversation is one coroutine. The user simulator sees the conversation from its
side (its persona instructions as the system prompt, the assistant's replies as the
"user" messages it answers); the assistant sees it from the other side. Every turn
goes through the journal under (conversation, turn, attempt), so a conversation cut
off after turn 3 replays turns 1-3 from the journal and sends turn 4 first.

`mode: single_call` asks for the whole conversation as JSON in one request instead.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from factory.config.pipeline import PipelineFile, derived_teacher
from factory.config.generate import DialogueGenerate
from factory.core.record import Record, Rejection, record_id
from factory.inputs.seeds import SeedSpace
from factory.core.structured import JSONNotFound, extract_json, list_answer, strict_object
from factory.tasks.asking import NoUsableAnswer, Unusable, ask_until_usable
from factory.tasks.base import RoleAsker, Task, beside_answers
from factory.tasks.guards import Guards, strip_own_label
from factory.teachers.base import Completion
from factory.inputs.templates import TemplateLibrary

# What the dialogue templates may use besides the seed variables.
TEMPLATE_VARIABLES = frozenset({"turns", "turn", "end_marker", "min_turns", "max_turns", "system_prompt"})


class Rejected(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass
class Conversation:
    unit: int
    seed_values: dict[str, Any]
    planned: int
    system_prompt: str | None
    user_view: list[dict[str, str]]
    turns: list[tuple[str, str]] = field(default_factory=list)
    usage: list[dict[str, Any]] = field(default_factory=list)
    ended: str = "planned_turns"
    closing: str = ""
    models: dict[str, str] = field(default_factory=dict)
    # (turn, role) -> the thinking behind the text kept for that turn
    thinking: dict[tuple[int, str], str] = field(default_factory=dict)

    @property
    def assistant_view(self) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return head + _flat(self.turns)

    def note(self, turn: int, role: str, attempt: int, completion: Completion) -> None:
        # Every attempt was paid for, so every attempt is counted.
        self.usage.append({"turn": turn, "role": role, "attempt": attempt + 1,
                           "prompt_tokens": completion.prompt_tokens,
                           "completion_tokens": completion.completion_tokens})
        self.models[role] = completion.model


def _flat(turns: list[tuple[str, str]]) -> list[dict[str, str]]:
    out = []
    for user, assistant in turns:
        out.append({"role": "user", "content": user})
        if assistant is not None:
            out.append({"role": "assistant", "content": assistant})
    return out


def conversation_schema(lo: int, hi: int) -> dict[str, Any]:
    turn = strict_object({"user": {"type": "string", "minLength": 1}, "assistant": {"type": "string", "minLength": 1}})
    return list_answer("turns", turn, lo, hi)


def parse_conversation(text: str) -> list[tuple[str, str]]:
    """Exchanges from a whole-conversation answer: {"turns": [{user, assistant}]} or
    the messages form [{role, content}] in strict user/assistant alternation."""
    try:
        value = extract_json(text)
    except JSONNotFound as err:
        raise Rejected("unparseable", str(err)) from err
    if isinstance(value, dict):
        value = next((value[k] for k in ("turns", "messages", "conversation") if k in value), None)
    if not isinstance(value, list) or not value:
        raise Rejected("bad_structure", "no list of turns in the answer")
    if all(isinstance(t, dict) and "user" in t and "assistant" in t for t in value):
        pairs = [(t["user"], t["assistant"]) for t in value]
    else:
        roles = [t.get("role") if isinstance(t, dict) else None for t in value]
        expected = ["user", "assistant"] * ((len(value) + 1) // 2)
        if roles != expected[: len(value)] or len(value) % 2:
            raise Rejected("bad_structure", f"roles must alternate user, assistant and end with the assistant; got {roles}")
        pairs = [(value[i].get("content"), value[i + 1].get("content")) for i in range(0, len(value), 2)]
    if not all(isinstance(u, str) and isinstance(a, str) for u, a in pairs):
        raise Rejected("bad_structure", "every turn needs text for both the user and the assistant")
    return [(u.strip(), a.strip()) for u, a in pairs]


class DialogueTask(Task):
    name = "dialogue"
    multi_turn = True

    def __init__(self, pipeline: PipelineFile, seeds: SeedSpace, library: TemplateLibrary):
        super().__init__(pipeline, seeds)
        cfg: DialogueGenerate = self.cfg
        self.reasoning = pipeline.config.output.reasoning
        self.where = f"{pipeline.path}: generate"
        provided = set(seeds.names) | TEMPLATE_VARIABLES
        used = {"assistant_system"} | ({"single_call"} if cfg.mode == "single_call" else {"user_system", "user_opening"})
        self.templates = {role: library.load(name, provided, where=f"{self.where}.templates.{role}")
                          for role, name in cfg.templates.items() if role in used}
        for role in cfg.teachers:
            derived_teacher(pipeline, cfg.teachers[role], f"{self.where}.teachers.{role}")
        g = cfg.guards
        # The simulator's fixed instructions: a turn that repeats a run of them leaked the prompt.
        instructions = [chunk for role in ("user_system", "user_opening", "single_call") if role in self.templates
                        for chunk in self.templates[role].static_text()]
        self.guards = Guards(g.repeat_similarity, g.user_breaks, g.assistant_breaks, g.leak_ngram,
                             cfg.end_marker, instructions)

    def units(self) -> int:
        return self.cfg.count

    def requested(self) -> int:
        return self.cfg.count

    def template_variables(self) -> set[str]:
        return set(TEMPLATE_VARIABLES)

    def roles(self) -> set[str]:
        saves_system = self.cfg.save_system and (self.cfg.system_prompt or "assistant_system" in self.templates)
        return {"user", "assistant"} | ({"system"} if saves_system else set())

    def metadata_fields(self) -> set[str]:
        fields = super().metadata_fields() | {"mode", "turns", "planned_turns", "ended", "teacher_models",
                                              "turn_usage", "reasoning"}
        # Who wrote the turns: each side in `turns` mode, one request in `single_call`.
        writers = ("conversation",) if self.cfg.mode == "single_call" else ("user", "assistant")
        fields |= {f"teacher_models.{role}" for role in writers}
        fields |= {name for name in ("persona", "goal") if name in self.seeds.names}
        if self.cfg.mode == "turns" and self.cfg.end_marker:
            fields.add("closing_message")  # the user's last words when they end the chat
        return fields

    def role_teachers(self, pipeline: PipelineFile) -> dict[str, Any]:
        return {role: derived_teacher(pipeline, overrides, f"{self.where}.teachers.{role}")
                for role, overrides in self.cfg.teachers.items()}

    def describe(self) -> dict[str, Any]:
        lo, hi = self.cfg.turn_range
        return {"task": self.name, "mode": self.cfg.mode, "turns": [lo, hi], "end_marker": self.cfg.end_marker,
                "min_turns": self.cfg.min_turns}

    def summary(self) -> str:
        lo, hi = self.cfg.turn_range
        span = f"{lo}" if lo == hi else f"{lo}-{hi}"
        how = "one request for each" if self.cfg.mode == "single_call" else "one request per turn"
        return f"{self.cfg.count} conversations of {span} exchanges ({how})"

    # -- prompts -----------------------------------------------------------------------

    def _planned_turns(self, unit: int) -> int:
        lo, hi = self.cfg.turn_range
        return lo if lo == hi else random.Random(f"{self.pipeline_seed}:turns:{unit}").randint(lo, hi)

    def _variables(self, unit: int, seed_values: dict[str, Any]) -> dict[str, Any]:
        lo, hi = self.cfg.turn_range
        values = {**seed_values, "turns": self._planned_turns(unit), "turn": 1, "end_marker": self.cfg.end_marker,
                  "min_turns": self.cfg.min_turns, "max_turns": hi, "system_prompt": self.cfg.system_prompt}
        if "assistant_system" in self.templates:
            values["system_prompt"] = self.templates["assistant_system"].render(values)
        return values

    def _start(self, unit: int) -> tuple[Conversation, dict[str, Any]]:
        seed_values = self.seeds.values(unit)
        values = self._variables(unit, seed_values)
        user_view = []
        if self.cfg.mode == "turns":
            user_view = [{"role": "system", "content": self.templates["user_system"].render(values)},
                         {"role": "user", "content": self.templates["user_opening"].render(values)}]
        return Conversation(unit, seed_values, values["turns"], values["system_prompt"] or None, user_view), values

    def check(self) -> list[dict[str, Any]]:
        base = self.seeds.values(0)
        for name, value in self.seeds.checked():
            self._start_prompts({**base, name: value})
        return [{"seed": self.seeds.values(u), "messages": self._example(u)} for u in range(min(3, self.units()))]

    def _start_prompts(self, seed_values: dict[str, Any]) -> None:
        values = self._variables(0, seed_values)
        for role, template in self.templates.items():
            template.render(values)

    def _example(self, unit: int) -> list[dict[str, str]]:
        conversation, values = self._start(unit)
        if self.cfg.mode == "single_call":
            return [{"role": "user", "content": self.templates["single_call"].render(values)}]
        return conversation.user_view

    # -- running -----------------------------------------------------------------------

    async def run_unit(self, unit: int, asker: RoleAsker) -> list[Record | Rejection]:
        conversation, values = self._start(unit)
        try:
            if self.cfg.mode == "single_call":
                await self._single_call(conversation, values, asker)
            else:
                await self._simulate(conversation, asker)
        except Rejected as r:
            return [Rejection(self._id(unit), "generate", r.reason, r.detail,
                              messages=self._messages(conversation) or None, metadata=self._metadata(conversation))]
        return [Record(self._id(unit), self._messages(conversation), self._metadata(conversation))]

    async def _simulate(self, c: Conversation, asker: RoleAsker) -> None:
        for turn in range(1, c.planned + 1):
            previous_user = c.turns[-1][0] if c.turns else ""
            previous_assistant = c.turns[-1][1] if c.turns else ""
            user, ended = await self._turn(c, "user", turn, c.user_view, [previous_assistant, previous_user], asker)
            if ended:
                c.ended, c.closing = "user_ended", user
                return
            c.turns.append((user, None))
            reply, _ = await self._turn(c, "assistant", turn, c.assistant_view, [user, previous_assistant], asker)
            c.turns[-1] = (user, reply)
            c.user_view += [{"role": "assistant", "content": user}, {"role": "user", "content": reply}]

    async def _turn(self, c: Conversation, role: str, turn: int, messages: list[dict[str, str]],
                    previous: list[str], asker: RoleAsker) -> tuple[str, bool]:
        """One turn's text (and whether the user ended there), retried until it passes the guards."""

        def use(completion: Completion, attempt: int) -> tuple[str, bool]:
            c.note(turn, role, attempt, completion)
            if completion.finish_reason == "length":
                raise Unusable("truncated", "the answer hit max_tokens")
            text = strip_own_label(completion.text, role)
            marker = self.cfg.end_marker
            if role == "user" and marker and marker.lower() in text.lower():
                if len(c.turns) >= self.cfg.min_turns:
                    return _without(text, marker), True
                raise Unusable("ended_too_early",
                               f"the user ended after {len(c.turns)} of at least {self.cfg.min_turns} turns")
            problem = self.guards.check(text, role, previous)
            if problem is not None:
                raise Unusable(*problem)
            if completion.reasoning:
                c.thinking[(turn, role)] = completion.reasoning
            return text, False

        try:
            answer = await ask_until_usable(
                asker.for_role(role), list(messages), use, unit=c.unit, pipeline_seed=self.pipeline_seed,
                max_attempts=self.cfg.max_attempts, schema_name=f"dialogue_{role}",
                step=lambda attempt: f"{role}:{turn}:{attempt}")
        except NoUsableAnswer as err:
            raise Rejected(err.reason, f"turn {turn} ({role}), {err.attempts} attempts: {err.detail}") from err
        return answer.value

    async def _single_call(self, c: Conversation, values: dict[str, Any], asker: RoleAsker) -> None:
        lo, hi = self.cfg.turn_range
        messages = [{"role": "user", "content": self.templates["single_call"].render(values)}]

        def use(completion: Completion, attempt: int) -> list[tuple[str, str]]:
            c.note(0, "conversation", attempt, completion)
            try:
                turns = parse_conversation(completion.text)
                if not lo <= len(turns) <= hi:
                    raise Rejected("bad_structure", f"{len(turns)} turns, expected {lo}-{hi}")
                self._check_all(turns)
            except Rejected as r:
                truncated = completion.finish_reason == "length" and r.reason in ("unparseable", "bad_structure")
                raise Unusable("truncated" if truncated else r.reason, f"attempt {attempt + 1}: {r.detail}") from r
            if completion.reasoning:
                c.thinking[(0, "conversation")] = completion.reasoning
            return turns

        try:
            # The pipeline's teacher writes both sides.
            answer = await ask_until_usable(
                asker, messages, use, unit=c.unit, pipeline_seed=self.pipeline_seed,
                max_attempts=self.cfg.max_attempts, schema=conversation_schema(lo, hi), schema_name="conversation",
                step=lambda attempt: f"conversation:{attempt}")
        except NoUsableAnswer as err:
            raise Rejected(err.reason, err.detail) from err
        c.turns, c.ended = answer.value, "single_call"

    def _check_all(self, turns: list[tuple[str, str]]) -> None:
        previous = {"user": "", "assistant": ""}
        for number, (user, assistant) in enumerate(turns, 1):
            for role, text in (("user", user), ("assistant", assistant)):
                other = "assistant" if role == "user" else "user"
                problem = self.guards.check(text, role, [previous[other], previous[role]])
                if problem:
                    raise Rejected(problem[0], f"turn {number} ({role}): {problem[1]}")
                previous[role] = text

    # -- output ------------------------------------------------------------------------

    def _id(self, unit: int) -> str:
        return record_id(self.pipeline_name, self.name, unit)

    def _messages(self, c: Conversation) -> list[dict[str, str]]:
        complete = [(u, a) for u, a in c.turns if a is not None]
        if not complete:
            return []
        head = [{"role": "system", "content": c.system_prompt}] if c.system_prompt and self.cfg.save_system else []
        messages = head + _flat(complete)
        if self.reasoning == "messages":  # the assistant's own thinking beside each reply; the simulated user's is not data
            messages = beside_answers(messages, {len(head) + 2 * i + 1: c.thinking.get((i + 1, "assistant"))
                                                 for i in range(len(complete))})
        return messages

    def _metadata(self, c: Conversation) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "task": self.name,
            "mode": self.cfg.mode,
            "seed": c.seed_values,
            "sample_index": c.unit,
            "templates": {role: {"name": t.name, "sha256": t.short_hash} for role, t in self.templates.items()},
            "turns": sum(1 for _, a in c.turns if a is not None),
            "planned_turns": c.planned,
            "ended": c.ended,
            "teacher_models": c.models,
            "turn_usage": c.usage,
            "usage": {"prompt_tokens": sum(u["prompt_tokens"] for u in c.usage),
                      "completion_tokens": sum(u["completion_tokens"] for u in c.usage)},
        }
        for name in ("persona", "goal"):
            if name in c.seed_values:
                meta[name] = c.seed_values[name]
        if c.closing:
            meta["closing_message"] = c.closing
        if c.thinking and self.reasoning == "metadata":
            meta["reasoning"] = [{"turn": turn, "role": role, "text": text} for (turn, role), text in c.thinking.items()]
        return meta


def _without(text: str, marker: str) -> str:
    at = text.lower().find(marker.lower())
    return (text[:at] + text[at + len(marker):]).strip()
