"""Which structured-output mode to ask a server for, found once and remembered.

Servers differ in how they take a JSON schema. From strongest to weakest:

- `json_schema`: OpenAI's `response_format: {type: json_schema, json_schema: {...}}`
  (OpenAI, vLLM, SGLang, Ollama, llama.cpp's own server);
- `json_object_schema`: `response_format: {type: json_object, schema: {...}}`, the form
  llama-cpp-python's server (and Anyscale-style endpoints) constrain with a grammar;
- `structured_outputs`: vLLM's own field (`structured_outputs: {json: ...}`, vLLM 0.10.2+);
- `guided_json`: vLLM's older field (removed in vLLM 0.12);
- `json_object`: any valid JSON, the schema stated in the prompt;
- `prompt`: the schema in the prompt only, the answer read tolerantly.

Every mode but `json_schema` also states the schema in the prompt: a server that
silently ignores a field it does not know (vLLM and llama-cpp-python drop unknown
keys) still gets an answer of the right shape.

With `teacher.structured_output: auto`, requests go in the strongest mode not yet
refused, as many at once as the window holds: none waits for a probe, so the server
is never idle while the mode is found. A refusal costs nothing (the server did no
work): the first one of a mode moves every later request one rung down, and the
refused request is asked again (by the engine, through its window and its stop) in
the mode then current. The first answer settles the mode; the engine stores it in
the run store, so a rerun starts there and never probes again. Request keys name the
*requested* mode (`auto`), so the probe never changes a key and nothing is paid twice.
"""

from __future__ import annotations

LADDER = ("json_schema", "json_object_schema", "structured_outputs", "guided_json", "json_object", "prompt")
MODES = ("auto", *LADDER)

# What a server's refusal of a structured-output field mentions: the field's name, or
# the type it does not take. A 400 that names none of these is about something else,
# and must not silently switch modes.
REFUSAL_WORDS = ("response_format", "json_schema", "json_object", "structured_outputs", "guided_json", "guided")


def setting_key(model: str) -> str:
    """The run store setting that remembers the mode found for `model`."""
    return f"structured_mode:{model}"


def legacy_setting_key(model: str) -> str:
    """What the run store recorded before the ladder: json_schema refused, for `model`."""
    return f"json_schema_refused:{model}"


class ModeRefused(Exception):
    """The server refused the structured-output mode a request asked for, and a weaker
    one is left: the engine asks again, in `StructuredModes.current`."""


class StructuredModes:
    """The mode in use, and how it is found; shared by the replicas of a pool."""

    def __init__(self, requested: str):
        self.requested = requested
        self.rung = 0
        self.settled = requested != "auto"
        self.refused: list[str] = []  # modes the server refused, strongest first

    @property
    def current(self) -> str:
        return LADDER[self.rung] if self.requested == "auto" else self.requested

    def refuse(self, mode: str) -> bool:
        """The server refused `mode`: True when the request may be asked again in the mode
        now current (one rung down, or lower already when another request was refused
        first); False when nothing is left to try (the last rung, or a settled mode)."""
        if self.requested != "auto":
            return False
        if mode != self.current:
            return True
        if self.settled or self.rung >= len(LADDER) - 1:
            return False
        self.refused.append(mode)
        self.rung += 1
        return True

    def settle(self, mode: str) -> None:
        """A request in `mode` was answered: the mode in use from now on, when it still is
        the current one (a weaker one may be current already, where replicas disagree)."""
        if mode == self.current:
            self.settled = True

    def resume(self, mode: str | None, json_schema_refused: bool = False) -> None:
        """Start from what an earlier invocation found (no probe), or below json_schema
        when an older store only says that json_schema was refused (probe from there)."""
        if self.requested != "auto":
            return
        if mode in LADDER:
            self.rung, self.settled = LADDER.index(mode), True
        elif json_schema_refused:
            self.rung = 1

    def describe(self) -> str:
        if self.requested != "auto":
            return self.requested
        if not self.settled:
            return "auto (not probed: no request carried a schema)"
        refused = f"; refused: {', '.join(self.refused)}" if self.refused else ""
        return f"auto: {self.current}{refused}"
