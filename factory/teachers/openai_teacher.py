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

from factory.core import constants
from factory.config.pipeline import TeacherConfig
from factory.core.errors import BadResponse, ConfigError, RequestRefused, TeacherError, TeacherMisconfigured
from factory.core.structured_modes import REFUSAL_WORDS, ModeRefused, StructuredModes
from factory.teachers.base import Completion, Request, Teacher
from factory.teachers.request_bounds import answer_byte_cap, fd_cap, request_timeout
from factory.teachers.openai_wire import read_completion, request_body

class OpenAITeacher(Teacher):
    backend = "openai"
    # /v1/completions: vLLM, SGLang, llama.cpp, TGI and Ollama serve it; api.openai.com
    # does not for chat models (the magpie task refuses it before the run).
    completes_text = True
    default_concurrency = constants.DEFAULT_MAX_CONCURRENCY

    def __init__(self, config: TeacherConfig, on_response=None, share: int = 1,
                 modes: StructuredModes | None = None):
        self.config = config
        self.share = share  # endpoints of one pool, sharing the process's file descriptors
        self.model = config.model
        self.base_url = config.base_url
        self.on_response = on_response
        # Replicas of a pool share one: what one server refused, its twins refuse too.
        self.modes = modes or StructuredModes(config.structured_output)
        self._client = self._probe_client = None
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
        self._probe_client = self._client.with_options(max_retries=0)

    def body(self, request: Request, mode: str | None = None) -> dict[str, Any]:
        return request_body(self.config, request, mode or self.modes.current)

    def legacy_payloads(self, request: Request) -> list[dict[str, Any]]:
        # 0.1 keyed what went over the wire (max_tokens, temperature and top_p always sent),
        # in whichever of its two modes the process was in then.
        modes = ["json_schema", "prompt"] if request.schema is not None and self.config.structured_output == "auto" \
            else [self.config.structured_output if self.config.structured_output in ("json_schema", "prompt")
                  else "json_schema"]
        legacy = self.config.model_copy(update={"token_limit_param": "max_tokens", "extra_body": {}})
        return [request_body(legacy, request, mode) for mode in modes]

    async def complete(self, request: Request) -> Completion:
        modes = self.modes
        if request.schema is None:
            return await self._ask(request, modes.current)
        # auto, not yet known: sent in the strongest mode not refused yet, with the rest
        # of the window (structured_modes.py); a refusal steps down and the engine asks again.
        mode, probing = modes.current, not modes.settled
        try:
            completion = await self._ask(request, mode, probing=probing)
        except ModeRefused as refused:
            if modes.refuse(mode):
                raise
            if modes.settled:
                raise TeacherMisconfigured(f"teacher refused structured_output {mode}, which it had taken: "
                                           f"{refused}") from refused
            raise RequestRefused(f"teacher refused every structured-output mode: {refused}") from refused
        if probing:
            modes.settle(mode)
        return completion

    async def _ask(self, request: Request, mode: str, probing: bool = False) -> Completion:
        body = self.body(request, mode)
        # Before the mode is settled the client retries nothing: a refusal that comes as a
        # 500 (llama-cpp-python) must not cost six backed-off retries; any other failure is
        # asked again by the engine.
        client = self._probe_client if probing else self._client
        response = await self._post(client, "/chat/completions", body, mode, probing)
        return read_completion(response, self.model, self.config.sampling.max_tokens)

    async def complete_text(self, request: Request) -> Completion:
        import openai

        s = self.config.sampling
        # /v1/completions takes max_tokens, also where chat wants max_completion_tokens.
        body: dict[str, Any] = {"model": self.model, "prompt": request.prompt, "max_tokens": s.max_tokens}
        for name in ("temperature", "top_p", "stop", "presence_penalty", "frequency_penalty"):
            if getattr(s, name) is not None:
                body[name] = getattr(s, name)
        if request.seed is not None and self.config.send_seed:
            body["seed"] = request.seed
        body.update(self.config.extra_body)
        try:
            response = await self._post(self._client, "/completions", body)
        except TeacherMisconfigured as err:
            if isinstance(err.__cause__, openai.NotFoundError):
                raise TeacherMisconfigured(f"{self.where()} does not serve /v1/completions (raw text completion), "
                                           f"which this task needs: {_short(err.__cause__)}") from err
            raise
        return read_completion(response, self.model, s.max_tokens, raw=True)

    async def _post(self, client, path: str, body: dict[str, Any], mode: str | None = None,
                    probing: bool = False) -> Any:
        """POST `body`; the openai client's errors become the engine's (refused, misconfigured,
        failed, bad response), the client's own error as the cause. `mode`: the structured
        mode `body` asks for, whose refusal while `probing` steps down the ladder."""
        import openai

        try:
            # The client's raw post keeps its retries, backoff and error types but skips
            # the typed-params walk and response models, which cost over 1 ms a request
            # (a schema in response_format is walked key by key): at hundreds of
            # requests a second that CPU is the bottleneck.
            return await client.post(path, cast_to=object, body=body)
        except openai.AuthenticationError as err:
            raise TeacherMisconfigured(f"authentication failed at {self.where()}: check {self.config.api_key_env or 'the API key'}") from err
        except openai.NotFoundError as err:
            raise TeacherMisconfigured(f"{self.where()} answered 404 for model {self.model!r}: {_short(err)}") from err
        except openai.APIStatusError as err:
            if mode is not None and _refuses_structured(err, body):
                if probing:
                    raise ModeRefused(f"{mode}: HTTP {err.status_code} {_short(err)}") from err
                raise TeacherMisconfigured(f"teacher refused structured_output {mode}: {_short(err)} (teacher."
                                           "structured_output: auto finds a mode the server takes)") from err
            if err.status_code in (400, 422):
                hint = _hint(err)
                # A sampling key the model does not take is refused in every request alike.
                refusal = TeacherMisconfigured if hint else RequestRefused
                raise refusal(f"teacher refused the request: {_short(err)}{hint}") from err
            raise TeacherError(f"HTTP {err.status_code} after {0 if probing else self.config.max_retries} retries: "
                               f"{_short(err)}") from err
        except openai.APIResponseValidationError as err:
            raise BadResponse(f"malformed response body: {_short(err)}") from err
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
        out["structured_output"] = self.modes.describe()
        return out

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


def _limits(window: int):
    import httpx2

    # One connection per in-flight request, and keep them all alive between requests:
    # reconnecting costs more than the request itself on a fast local server.
    return httpx2.Limits(max_connections=window, max_keepalive_connections=window)


def _refuses_structured(err, body: dict[str, Any]) -> bool:
    """Whether an error status is the server refusing the structured-output field of
    `body`: a 400 or 422 (validation), or a 500 (llama-cpp-python wraps its validation
    errors in one), whose message names the field. Not the status alone: a 400 for a
    bad max_tokens, or a 500 from a crash, is not a refusal of the mode."""
    if err.status_code not in (400, 422, 500):
        return False
    if not any(key in body for key in ("response_format", "structured_outputs", "guided_json")):
        return False
    text = f"{err} {err.body}".lower()
    return any(word in text for word in REFUSAL_WORDS)


# What to change when a server refuses a sampling key (OpenAI's reasoning models say which).
_PARAM_HINTS = {
    "max_tokens": "set teacher.token_limit_param: max_completion_tokens",
    "max_completion_tokens": "set teacher.token_limit_param: max_tokens",
    "temperature": "set teacher.sampling.temperature: null (the model's default)",
    "top_p": "set teacher.sampling.top_p: null (the model's default)",
}


def _hint(err) -> str:
    body = err.body if isinstance(err.body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else body
    param = error.get("param") if isinstance(error.get("param"), str) else ""
    hint = _PARAM_HINTS.get(param)
    return f" ({hint})" if hint else ""


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
