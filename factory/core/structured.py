"""JSON answers: asking for them in the prompt, and reading them tolerantly.

The schema path (`response_format` json_schema) is preferred; when a server refuses
it, or a backend has no constrained decoding, the schema goes into the prompt and the
answer is read by `extract_json`, which accepts the usual wrappings: code fences,
chatter before and after, a trailing comma.
"""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")

SCHEMA_INSTRUCTION = (
    "Respond with a single JSON value that follows this JSON schema, and nothing else:\n```json\n{schema}\n```"
)


def strict_object(properties: dict[str, Any]) -> dict[str, Any]:
    """An object with exactly these properties, all required (what json_schema `strict` wants)."""
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def list_answer(field: str, item: dict[str, Any], lo: int, hi: int) -> dict[str, Any]:
    """An answer that is one list, `field`, of `lo` to `hi` items."""
    return strict_object({field: {"type": "array", "items": item, "minItems": lo, "maxItems": hi}})


def with_schema_instructions(messages: list[dict[str, str]], schema: dict[str, Any]) -> list[dict[str, str]]:
    """A copy of `messages` whose last user message also states the schema."""
    note = SCHEMA_INSTRUCTION.format(schema=json.dumps(schema, indent=1))
    out = [dict(m) for m in messages]
    for m in reversed(out):
        if m["role"] == "user":
            m["content"] = f"{m['content']}\n\n{note}"
            break
    else:
        out.append({"role": "user", "content": note})
    return out


class JSONNotFound(ValueError):
    pass


def extract_json(text: str) -> Any:
    """The first JSON object or array in `text`; raises JSONNotFound with a short reason."""
    if not text or not text.strip():
        raise JSONNotFound("empty answer")
    candidates = [text.strip()]
    candidates += [m.group(1).strip() for m in _FENCE.finditer(text)]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        for attempt in (candidate, _TRAILING_COMMA.sub(r"\1", candidate)):
            try:
                return json.loads(attempt)
            except json.JSONDecodeError:
                pass
    # Chatter around the JSON: decode from each opening bracket until one parses.
    starts = [i for i, ch in enumerate(text) if ch in "{["][:64]  # bounded: answers can be long
    for start in starts:
        for attempt in (text[start:], _TRAILING_COMMA.sub(r"\1", text[start:])):
            try:
                value, _ = decoder.raw_decode(attempt)
                return value
            except json.JSONDecodeError:
                continue
    raise JSONNotFound("no JSON value found" if "{" not in text else "JSON is malformed or cut off")
