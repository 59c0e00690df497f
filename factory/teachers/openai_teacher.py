"""Any OpenAI-compatible server: OpenAI, vLLM, SGLang, Ollama, llama.cpp, TGI.

Transport failures (429, 5xx, timeouts, resets) are retried by the openai client
itself, with its backoff and Retry-After handling; a response hook hands every
response's status and headers to the engine (`on_response`), so a 429 slows the whole
run, not just one request, and rate-limit headers tune the request buckets.

Every attempt has a deadline and every answer a size cap, both from max_tokens
(teachers/bounds.py, enforced while the body is read by teachers/transport.py): a
server that stalls ends in a TeacherError, one that floods in an `oversized` rejection.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from factory import constants
from factory.config import TeacherConfig
from factory.errors import BadResponse, ConfigError, OversizedAnswer, RequestRefused, TeacherError, TeacherMisconfigured
from factory.structured import with_schema_instructions
from factory.teachers.base import Completion, Request, Teacher
from factory.teachers.bounds import answer_byte_cap, answer_token_cap, fd_cap, request_timeout

# Servers that cannot do json_schema answer 400 and name the parameter; anything else
# that is a 400 is a real error and must not silently switch modes.
_SCHEMA_REFUSAL_HINTS = ("response_format", "json_schema", "guided", "structured")


class OpenAITeacher(Teacher):
    backend = "openai"
    # /v1/completions: vLLM, SGLang, llama.cpp, TGI and Ollama serve it; api.openai.com
    # does not for chat models (the magpie task refuses it before the run).
    completes_text = True
    default_concurrency = constants.DEFAULT_MAX_CONCURRENCY

    def __init__(self, config: TeacherConfig, on_response=None, share: int = 1):
        self.config = config
        self.share = share  # endpoints of one pool, sharing the process's file descriptors
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
        import httpx2
        import openai  # deferred: importing openai costs a noticeable part of a second

        from factory.teachers.transport import BoundedClient

        async def observe(response) -> None:
            if self.on_response is not None:
                self.on_response(response.status_code, response.headers)

        window = min(self.config.max_concurrency or self.default_concurrency, fd_cap(self.share))
        # The read timeout is the whole attempt's deadline (transport.py); connecting has its own.
        timeout = httpx2.Timeout(request_timeout(self.config), connect=constants.CONNECT_TIMEOUT_S)
        http_client = BoundedClient(
            answer_cap=answer_byte_cap(self.config.sampling.max_tokens),
            limits=_limits(window),
            timeout=timeout,
            event_hooks={"response": [observe]},
        )
        self._client = openai.AsyncOpenAI(
            api_key=self._api_key,
            base_url=self.base_url,
            max_retries=self.config.max_retries,
            timeout=timeout,
            http_client=http_client,
        )

    def _payload(self, request: Request, use_schema: bool | None = None) -> dict[str, Any]:
        s = self.config.sampling
        use_schema = self.use_schema if use_schema is None else use_schema
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
            if use_schema:
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": request.schema_name, "schema": request.schema, "strict": True},
                }
            else:
                messages = with_schema_instructions(messages, request.schema)
        body["messages"] = messages
        return body

    def prefer_prompt(self) -> None:
        if self.config.structured_output == "auto":
            self.use_schema, self.schema_refused = False, True

    def legacy_payloads(self, request: Request) -> list[dict[str, Any]]:
        # 0.1 keyed what went over the wire, in whichever mode the process was in then.
        modes = [True, False] if request.schema is not None and self.config.structured_output == "auto" else [None]
        return [self._payload(request, mode) for mode in modes]

    async def complete(self, request: Request) -> Completion:
        import openai

        body = self._payload(request)
        try:
            response = await self._post("/chat/completions", body)
        except RequestRefused as err:
            if ("response_format" in body and self.config.structured_output == "auto"
                    and isinstance(err.__cause__, openai.BadRequestError) and _refuses_schema(err.__cause__)):
                self.prefer_prompt()
                return await self.complete(request)
            raise
        return _completion(response, self.model, self.config.sampling.max_tokens)

    async def complete_text(self, request: Request) -> Completion:
        import openai

        s = self.config.sampling
        body: dict[str, Any] = {"model": self.model, "prompt": request.prompt, "temperature": s.temperature,
                                "top_p": s.top_p, "max_tokens": s.max_tokens}
        for name in ("stop", "presence_penalty", "frequency_penalty"):
            if getattr(s, name) is not None:
                body[name] = getattr(s, name)
        if request.seed is not None and self.config.send_seed:
            body["seed"] = request.seed
        try:
            response = await self._post("/completions", body)
        except TeacherMisconfigured as err:
            if isinstance(err.__cause__, openai.NotFoundError):
                raise TeacherMisconfigured(f"{self.where()} does not serve /v1/completions (raw text completion), "
                                           f"which this task needs: {_short(err.__cause__)}") from err
            raise
        return _completion(response, self.model, s.max_tokens, raw=True)

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        """POST `body`; the openai client's errors become the engine's (refused, misconfigured,
        failed, bad response), the client's own error as the cause."""
        import openai

        try:
            # The client's raw post keeps its retries, backoff and error types but skips
            # the typed-params walk and response models, which cost over 1 ms a request
            # (a schema in response_format is walked key by key): at hundreds of
            # requests a second that CPU is the bottleneck.
            return await self._client.post(path, cast_to=object, body=body)
        except openai.BadRequestError as err:
            raise RequestRefused(f"teacher refused the request: {_short(err)}") from err
        except openai.APIResponseValidationError as err:
            raise BadResponse(f"malformed response body: {_short(err)}") from err
        except openai.AuthenticationError as err:
            raise TeacherMisconfigured(f"authentication failed at {self.where()}: check {self.config.api_key_env or 'the API key'}") from err
        except openai.NotFoundError as err:
            raise TeacherMisconfigured(f"{self.where()} answered 404 for model {self.model!r}: {_short(err)}") from err
        except openai.APIStatusError as err:
            raise TeacherError(f"HTTP {err.status_code} after {self.config.max_retries} retries: {_short(err)}") from err
        except openai.APITimeoutError as err:
            if "connect" in type(err.__cause__).__name__.lower():  # refused or unroutable, not slow
                raise TeacherError(f"cannot reach {self.where()}: {_short(err.__cause__)}") from err
            raise TeacherError(f"timed out after {request_timeout(self.config):g}s, {self.config.max_retries} retries"
                               + ("" if self.config.timeout else
                                  " (derived from max_tokens; a slower server needs teacher.timeout)")) from err
        except openai.APIConnectionError as err:
            raise TeacherError(f"cannot reach {self.where()}: {_short(err.__cause__ or err)}") from err
        except ValueError as err:  # a body that is not JSON at all
            raise BadResponse(f"malformed response body: {_short(err)}") from err

    def where(self) -> str:
        return redact_url(self.base_url) if self.base_url else "api.openai.com"

    def describe(self) -> dict[str, Any]:
        out = {"backend": self.backend, "model": self.model, "base_url": self.where()}
        out["structured_output"] = "prompt (server refused json_schema)" if self.schema_refused else self.config.structured_output
        return out

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


def _completion(response: Any, model: str, max_tokens: int, raw: bool = False) -> Completion:
    if not isinstance(response, dict):
        raise BadResponse(f"response is not a JSON object: {str(response)[:120]!r}")
    choices = response.get("choices")
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise BadResponse("response has no choices")
    choice = choices[0]
    if raw:  # /v1/completions: the continuation is the choice's text
        text = choice.get("text")
    else:
        message = choice.get("message") or {}
        text = message.get("content") if isinstance(message, dict) else None
    usage = response.get("usage") or {}
    completion = Completion(
        text=text if isinstance(text, str) else "",
        finish_reason=choice.get("finish_reason") or "unknown",
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        model=response.get("model") or model,
    )
    # The body was capped on the wire; a compressed one may still decode to more, and a
    # server's own count says what it generated (and may charge for).
    if len(completion.text) > answer_byte_cap(max_tokens):
        raise OversizedAnswer(f"answer of {len(completion.text):,} characters, far beyond max_tokens {max_tokens}")
    if completion.completion_tokens > answer_token_cap(max_tokens):
        raise OversizedAnswer(f"answer of {completion.completion_tokens:,} tokens, far beyond max_tokens {max_tokens}")
    return completion


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
