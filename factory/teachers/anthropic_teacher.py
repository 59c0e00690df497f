"""Anthropic's native API through the official `anthropic` package: the Messages API
online (`backend: anthropic`); its Message Batches (`mode: batch`) are in
batch/anthropic_batches.py, which builds its requests with AnthropicAPI.

The chat-format messages become a Messages request: system messages go to `system`,
the sampling maps to Claude's (temperature, max_tokens, stop_sequences; Claude models
take temperature or top_p, not both, so top_p is not sent; there is no seed). A
schema goes as `output_config.format` (structured outputs), in the subset Claude
takes (the package's transform_schema moves other constraints, like an array's
length, into the description; the task checks them as always), or into the prompt
with `structured_output: prompt`. Extended thinking (`extra_body: {thinking: {type:
enabled, budget_tokens: N}}`) comes back in thinking blocks, which become the answer's
reasoning (output.reasoning says where it goes), never its text; prompt-cache reads
are the cached tokens priced at price.cached_input.

base_url is the API's root (https://api.anthropic.com by default); a trailing /v1, as
OpenAI-style addresses have, is dropped.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from factory.core import constants
from factory.config.pipeline import TeacherConfig, thinking_enabled
from factory.core.errors import BadResponse, ConfigError, RequestRefused, TeacherError, TeacherMisconfigured
from factory.core.structured import with_schema_instructions
from factory.teachers.base import Completion, Request, Teacher
from factory.teachers.request_bounds import answer_byte_cap, request_timeout
from factory.teachers.openai_teacher import _short, redact_url

# Claude's stop reasons in the chat-completions words the tasks read.
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "refusal": "content_filter"}


def import_anthropic():
    try:
        import anthropic
    except ImportError as err:
        raise ConfigError("teacher.backend anthropic needs the anthropic package: pip install 'factory[anthropic]'") from err
    return anthropic


class AnthropicAPI:
    """What the online teacher and the batch provider share: the key, the client, the request shape."""

    def __init__(self, config: TeacherConfig):
        import_anthropic()
        self.config = config
        self.api_key = "not-needed"  # the loopback teacher takes any key
        if config.api_key_env:
            key = os.environ.get(config.api_key_env)
            if not key:
                raise ConfigError(f"teacher.api_key_env: environment variable {config.api_key_env} is not set "
                                  f"(export {config.api_key_env}=... before running)")
            self.api_key = key
        self.base_url = config.base_url.removesuffix("/").removesuffix("/v1") if config.base_url else None
        self.client = None
        self._schemas: dict[int, tuple[dict, dict]] = {}  # id(schema) -> (schema, Claude's form of it)

    def where(self) -> str:
        return redact_url(self.base_url) if self.base_url else "api.anthropic.com"

    def secrets(self) -> list[str]:
        return [self.api_key] if self.config.api_key_env else []

    def connect(self, timeout: float, on_response: Callable[..., None] | None = None) -> None:
        anthropic = import_anthropic()
        import httpx2

        async def observe(response) -> None:
            if on_response is not None:
                on_response(response.status_code, response.headers)

        limit = httpx2.Timeout(timeout, connect=constants.CONNECT_TIMEOUT_S)
        http_client = anthropic.DefaultAsyncHttpxClient(timeout=limit, event_hooks={"response": [observe]})
        self.client = anthropic.AsyncAnthropic(api_key=self.api_key, base_url=self.base_url,
                                               max_retries=self.config.max_retries, timeout=limit,
                                               http_client=http_client)

    def payload(self, request: Request, use_schema: bool = True) -> dict[str, Any]:
        s = self.config.sampling
        messages = request.messages
        body: dict[str, Any] = {"model": self.config.model, **self.config.extra_body, "max_tokens": s.max_tokens}
        # Null is not sent; with extended thinking Claude takes no temperature but its own, so
        # factory's default is not sent either (one the user wrote is checked at load: config.py).
        thinks = thinking_enabled(self.config.extra_body)
        if s.temperature is not None and not (thinks and "temperature" not in s.model_fields_set):
            body["temperature"] = s.temperature
        if s.stop:
            body["stop_sequences"] = s.stop
        if request.schema is not None:
            if use_schema and self.config.structured_output != "prompt":
                body["output_config"] = {"format": {"type": "json_schema", "schema": self._claude_schema(request.schema)}}
            else:
                messages = with_schema_instructions(messages, request.schema)
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        if system:
            body["system"] = system
        body["messages"] = [{"role": m["role"], "content": m["content"]} for m in messages if m["role"] != "system"]
        return body

    def _claude_schema(self, schema: dict) -> dict:
        # A task asks with one schema object for all its requests: transformed once.
        cached = self._schemas.get(id(schema))
        if cached is None or cached[0] is not schema:
            cached = self._schemas[id(schema)] = (schema, import_anthropic().transform_schema(schema))
        return cached[1]

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()


def completion_from_message(message: Any, model: str, max_tokens: int) -> Completion:
    """A Messages API answer (a dict) as a Completion; BadResponse when it is not one."""
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        raise BadResponse(f"response is not a message: {str(message)[:120]!r}")
    blocks = [block for block in message["content"] if isinstance(block, dict)]
    text = "".join(block.get("text", "") for block in blocks if block.get("type") == "text")
    # Extended thinking comes in blocks of its own (a redacted one holds nothing readable).
    reasoning = "".join(block.get("thinking", "") for block in blocks if block.get("type") == "thinking") or None
    usage = message.get("usage") or {}
    prompt = sum(int(usage.get(k) or 0) for k in ("input_tokens", "cache_read_input_tokens",
                                                  "cache_creation_input_tokens"))
    if len(text) > answer_byte_cap(max_tokens):
        raise BadResponse(f"answer of {len(text):,} characters, far beyond max_tokens {max_tokens}")
    stop = message.get("stop_reason") or "unknown"
    return Completion(text=text, finish_reason=FINISH.get(stop, stop), prompt_tokens=prompt,
                      completion_tokens=int(usage.get("output_tokens") or 0), model=message.get("model") or model,
                      reasoning=reasoning, cached_tokens=int(usage.get("cache_read_input_tokens") or 0))


class AnthropicTeacher(Teacher):
    backend = "anthropic"
    default_concurrency = 64  # a hosted API: the adaptive window and the rate limits take it from there

    def __init__(self, config: TeacherConfig, on_response: Callable[..., None] | None = None):
        self.config = config
        self.model = config.model
        self.api = AnthropicAPI(config)
        self.on_response = on_response
        self.use_schema = config.structured_output != "prompt"
        self.schema_refused = False

    def secrets(self) -> list[str]:
        return self.api.secrets()

    async def start(self) -> None:
        self.api.connect(request_timeout(self.config), self.on_response)

    def prefer_prompt(self) -> None:
        if self.config.structured_output == "auto":
            self.use_schema, self.schema_refused = False, True

    async def complete(self, request: Request) -> Completion:
        anthropic = import_anthropic()
        body = self.api.payload(request, self.use_schema)
        try:
            message = await self.api.client.post("/v1/messages", cast_to=object, body=body)
        except anthropic.BadRequestError as err:
            if "output_config" in body and self.config.structured_output == "auto" and _names_schema(err):
                self.prefer_prompt()
                return await self.complete(request)
            raise RequestRefused(f"teacher refused the request: {_short(err)}") from err
        except (anthropic.AuthenticationError, anthropic.PermissionDeniedError) as err:
            raise TeacherMisconfigured(f"{self.api.where()} refused the key: check {self.config.api_key_env}") from err
        except anthropic.NotFoundError as err:
            raise TeacherMisconfigured(f"{self.api.where()} answered 404 for model {self.model!r}: {_short(err)}") from err
        except anthropic.APIStatusError as err:
            raise TeacherError(f"HTTP {err.status_code} after {self.config.max_retries} retries: {_short(err)}") from err
        except anthropic.APIConnectionError as err:
            raise TeacherError(f"cannot reach {self.api.where()}: {_short(err.__cause__ or err)}") from err
        except ValueError as err:
            raise BadResponse(f"malformed response body: {_short(err)}") from err
        return completion_from_message(message, self.model, self.config.sampling.max_tokens)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "model": self.model, "base_url": self.api.where(),
                "structured_output": "prompt (server refused output_config)" if self.schema_refused
                else self.config.structured_output}

    async def close(self) -> None:
        await self.api.close()


def _names_schema(err: Exception) -> bool:
    text = str(err).lower()
    return any(word in text for word in ("output_config", "output_format", "json_schema", "schema"))
