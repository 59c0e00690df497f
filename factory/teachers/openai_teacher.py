"""Any OpenAI-compatible server: OpenAI, vLLM, SGLang, Ollama, llama.cpp, TGI.

Transport failures (429, 5xx, timeouts, resets) are retried by the openai client
itself, with its backoff and Retry-After handling; a response hook hands every
response's status and headers to the engine (`on_response`), so a 429 slows the whole
run, not just one request, and rate-limit headers tune the request buckets.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from factory import constants
from factory.config import TeacherConfig
from factory.errors import BadResponse, ConfigError, RequestRefused, TeacherError
from factory.structured import with_schema_instructions
from factory.teachers.base import Completion, Request, Teacher

# Servers that cannot do json_schema answer 400 and name the parameter; anything else
# that is a 400 is a real error and must not silently switch modes.
_SCHEMA_REFUSAL_HINTS = ("response_format", "json_schema", "guided", "structured")


class OpenAITeacher(Teacher):
    backend = "openai"
    default_concurrency = constants.DEFAULT_MAX_CONCURRENCY

    def __init__(self, config: TeacherConfig, on_response=None):
        self.config = config
        self.model = config.model
        self.base_url = config.base_url
        self.on_response = on_response
        self.use_schema = config.structured_output != "prompt"
        self.schema_refused = False
        self._client = None
        self._api_key = "not-needed"  # local servers want some key; OpenAI itself needs a real one
        if config.api_key_env:
            key = os.environ.get(config.api_key_env)
            if not key:
                raise ConfigError(
                    f"teacher.api_key_env: environment variable {config.api_key_env} is not set "
                    f"(export {config.api_key_env}=... before running)"
                )
            self._api_key = key
        elif not config.base_url:
            raise ConfigError("teacher.base_url: the openai backend needs a base_url (or api_key_env for api.openai.com)")

    def secrets(self) -> list[str]:
        return [self._api_key] if self.config.api_key_env else []

    async def start(self) -> None:
        import openai  # deferred: importing openai costs a noticeable part of a second

        async def observe(response) -> None:
            if self.on_response is not None:
                self.on_response(response.status_code, response.headers)

        window = self.config.max_concurrency or self.default_concurrency
        http_client = openai.DefaultAioHttpClient(
            limits=_limits(window),
            timeout=self.config.timeout,
            event_hooks={"response": [observe]},
        )
        self._client = openai.AsyncOpenAI(
            api_key=self._api_key,
            base_url=self.base_url,
            max_retries=self.config.max_retries,
            timeout=self.config.timeout,
            http_client=http_client,
        )

    def _payload(self, request: Request) -> dict[str, Any]:
        s = self.config.sampling
        messages = request.messages
        body: dict[str, Any] = {
            "model": self.model,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
        }
        for name in ("stop", "presence_penalty", "frequency_penalty"):
            if getattr(s, name) is not None:
                body[name] = getattr(s, name)
        if request.seed is not None and self.config.send_seed:
            body["seed"] = request.seed
        if request.schema is not None:
            if self.use_schema:
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": request.schema_name, "schema": request.schema, "strict": True},
                }
            else:
                messages = with_schema_instructions(messages, request.schema)
        body["messages"] = messages
        return body

    def request_payload(self, request: Request) -> dict[str, Any]:
        # Exactly what goes over the wire: a switch to prompt mode makes new keys.
        return self._payload(request)

    async def complete(self, request: Request) -> Completion:
        import openai

        body = self._payload(request)
        try:
            # The client's raw post keeps its retries, backoff and error types but skips
            # the typed-params walk and response models, which cost over 1 ms a request
            # (a schema in response_format is walked key by key): at hundreds of
            # requests a second that CPU is the bottleneck.
            response = await self._client.post("/chat/completions", cast_to=object, body=body)
        except openai.BadRequestError as err:
            if "response_format" in body and self.config.structured_output == "auto" and _refuses_schema(err):
                self.use_schema, self.schema_refused = False, True
                return await self.complete(request)
            raise RequestRefused(f"teacher refused the request: {_short(err)}") from err
        except openai.APIResponseValidationError as err:
            raise BadResponse(f"malformed response body: {_short(err)}") from err
        except openai.AuthenticationError as err:
            raise RequestRefused(f"authentication failed at {self.where()}: check {self.config.api_key_env or 'the API key'}") from err
        except openai.NotFoundError as err:
            raise RequestRefused(f"{self.where()} answered 404 for model {self.model!r}: {_short(err)}") from err
        except openai.APIStatusError as err:
            raise TeacherError(f"HTTP {err.status_code} after {self.config.max_retries} retries: {_short(err)}") from err
        except openai.APITimeoutError as err:
            if "connect" in type(err.__cause__).__name__.lower():  # refused or unroutable, not slow
                raise TeacherError(f"cannot reach {self.where()}: {_short(err.__cause__)}") from err
            raise TeacherError(f"timed out after {self.config.timeout:g}s, {self.config.max_retries} retries") from err
        except openai.APIConnectionError as err:
            raise TeacherError(f"cannot reach {self.where()}: {_short(err.__cause__ or err)}") from err
        except ValueError as err:  # a body that is not JSON at all
            raise BadResponse(f"malformed response body: {_short(err)}") from err
        return _completion(response, self.model)

    def where(self) -> str:
        return redact_url(self.base_url) if self.base_url else "api.openai.com"

    def describe(self) -> dict[str, Any]:
        out = {"backend": self.backend, "model": self.model, "base_url": self.where()}
        out["structured_output"] = "prompt (server refused json_schema)" if self.schema_refused else self.config.structured_output
        return out

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


def _completion(response: Any, model: str) -> Completion:
    if not isinstance(response, dict):
        raise BadResponse(f"response is not a JSON object: {str(response)[:120]!r}")
    choices = response.get("choices")
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise BadResponse("response has no choices")
    choice = choices[0]
    message = choice.get("message") or {}
    text = message.get("content") if isinstance(message, dict) else None
    usage = response.get("usage") or {}
    return Completion(
        text=text if isinstance(text, str) else "",
        finish_reason=choice.get("finish_reason") or "unknown",
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        model=response.get("model") or model,
    )


def _limits(window: int):
    import httpx2

    # One connection per in-flight request, and keep them all alive between requests:
    # reconnecting costs more than the request itself on a fast local server.
    return httpx2.Limits(max_connections=window, max_keepalive_connections=window)


def _refuses_schema(err: Exception) -> bool:
    text = str(err).lower()
    return any(h in text for h in _SCHEMA_REFUSAL_HINTS)


def _short(err: BaseException) -> str:
    return " ".join(str(err).split())[:300]


def redact_url(url: str) -> str:
    """Drop any user:password@ part, so a URL can be logged and stored."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        parts = parts._replace(netloc=host)
    return urlunsplit(parts)
