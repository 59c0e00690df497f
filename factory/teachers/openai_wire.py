"""What goes over the wire to an OpenAI-compatible server, and what comes back.

`request_body` turns a request and the teacher's settings into the JSON body of one
chat completion (online, or one line of a provider's batch file); `read_completion`
turns the JSON answer into a Completion. Both are pure functions of their arguments.
"""

from __future__ import annotations

from typing import Any

from factory.config.pipeline import TeacherConfig, reasoning_family
from factory.core.errors import BadResponse, OversizedAnswer
from factory.core.structured import with_schema_instructions
from factory.teachers.base import Completion, Request
from factory.teachers.request_bounds import answer_byte_cap, answer_token_cap


def token_limit_param(config: TeacherConfig) -> str:
    """max_tokens or max_completion_tokens: what this model and server take."""
    if config.token_limit_param != "auto":
        return config.token_limit_param
    # api.openai.com takes max_completion_tokens for every chat model (max_tokens is
    # deprecated there, and refused by its reasoning models wherever they are served).
    if not config.base_url or reasoning_family(config.model):
        return "max_completion_tokens"
    return "max_tokens"


def request_body(config: TeacherConfig, request: Request, mode: str) -> dict[str, Any]:
    """The chat completion body for `request`, asking for structured output in `mode`
    (structured_modes.LADDER) when the request has a schema. Sampling keys left null
    are not sent; `extra_body` goes in as is."""
    s = config.sampling
    body: dict[str, Any] = {"model": config.model, **config.extra_body, token_limit_param(config): s.max_tokens}
    for name in ("temperature", "top_p", "stop", "presence_penalty", "frequency_penalty"):
        if getattr(s, name) is not None:
            body[name] = getattr(s, name)
    if request.seed is not None and config.send_seed:
        body["seed"] = request.seed
    messages = request.messages
    if request.schema is not None:
        if mode != "json_schema":
            messages = with_schema_instructions(messages, request.schema)
        if mode == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": request.schema_name, "schema": request.schema, "strict": True},
            }
        elif mode == "json_object_schema":
            body["response_format"] = {"type": "json_object", "schema": request.schema}
        elif mode == "structured_outputs":
            body["structured_outputs"] = {"json": request.schema}
        elif mode == "guided_json":
            body["guided_json"] = request.schema
        elif mode == "json_object":
            body["response_format"] = {"type": "json_object"}
    body["messages"] = messages
    return body


def read_completion(response: Any, model: str, max_tokens: int, raw: bool = False) -> Completion:
    """The Completion in a chat completion response (`raw`: a /v1/completions one, whose
    choice holds `text`); BadResponse when there is none, OversizedAnswer when it is far
    beyond `max_tokens`."""
    if not isinstance(response, dict):
        raise BadResponse(f"response is not a JSON object: {str(response)[:120]!r}")
    choices = response.get("choices")
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise BadResponse("response has no choices")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    text = choice.get("text") if raw else message.get("content")
    # vLLM's reasoning parsers: `reasoning` (0.10+), `reasoning_content` (before, and DeepSeek's API).
    thinking = message.get("reasoning") or message.get("reasoning_content")
    usage = response.get("usage") if isinstance(response.get("usage"), dict) else {}
    completion = Completion(
        text=text if isinstance(text, str) else "",
        finish_reason=choice.get("finish_reason") or "unknown",
        prompt_tokens=_count(usage.get("prompt_tokens")),
        completion_tokens=_count(usage.get("completion_tokens")),
        model=response.get("model") or model,
        reasoning=thinking if isinstance(thinking, str) and thinking.strip() else None,
        cached_tokens=_count(_detail(usage, "prompt_tokens_details", "cached_tokens")),
        reasoning_tokens=_count(_detail(usage, "completion_tokens_details", "reasoning_tokens")),
    ).thinking_apart()
    # The body was capped on the wire; a compressed one may still decode to more, and a
    # server's own count says what it generated (and may charge for).
    if len(completion.text) > answer_byte_cap(max_tokens):
        raise OversizedAnswer(f"answer of {len(completion.text):,} characters, far beyond max_tokens {max_tokens}")
    if completion.completion_tokens > answer_token_cap(max_tokens):
        raise OversizedAnswer(f"answer of {completion.completion_tokens:,} tokens, far beyond max_tokens {max_tokens}")
    return completion


def _detail(usage: dict, group: str, name: str) -> Any:
    details = usage.get(group)
    return details.get(name) if isinstance(details, dict) else None


def _count(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0
