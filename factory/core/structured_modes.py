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

With `teacher.structured_output: auto`, the first request that carries a schema goes
alone (the others wait for it) in the strongest mode; a refusal moves it one rung
down and it is sent again, until a mode is accepted. The engine stores that mode in
the run store, so a rerun starts there and never probes again. Request keys name the
*requested* mode (`auto`), so the probe never changes a key and nothing is paid twice.
"""

from __future__ import annotations

import asyncio

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


class StructuredModes:
    """The mode in use, and the probe that finds it; shared by the replicas of a pool."""

    def __init__(self, requested: str):
        self.requested = requested
        self.rung = 0
        self.settled = requested != "auto"
        self.refused: list[str] = []  # modes the server refused, strongest first
        self._probe: asyncio.Lock | None = None
        self._probed: asyncio.Event | None = None  # set when a probe ends, however it ends

    async def wait_for_probe(self) -> None:
        """While another request probes, wait for it to end: every waiter wakes at once
        (through the lock they would wake one by one, and a full window trickles out)."""
        if self._probe is not None and self._probe.locked() and self._probed is not None:
            await self._probed.wait()

    def probing(self) -> "asyncio.Event":
        self._probed = asyncio.Event()
        return self._probed

    @property
    def current(self) -> str:
        return LADDER[self.rung] if self.requested == "auto" else self.requested

    @property
    def probe(self) -> asyncio.Lock:
        if self._probe is None:
            self._probe = asyncio.Lock()
        return self._probe

    def refuse(self) -> bool:
        """The server refused the current mode: step down; False when there is none below."""
        if self.requested != "auto" or self.rung >= len(LADDER) - 1:
            return False
        self.refused.append(self.current)
        self.rung += 1
        return True

    def settle(self) -> None:
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
