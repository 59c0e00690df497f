"""ShareGPT: {"id", "conversations": [{"from": "system"|"human"|"gpt", "value"}]}."""

from __future__ import annotations

from typing import Any

_TO_SHAREGPT = {"system": "system", "user": "human", "assistant": "gpt"}
_FROM_SHAREGPT = {v: k for k, v in _TO_SHAREGPT.items()}


def write(record_id: str, messages: list[dict[str, str]]) -> dict[str, Any]:
    return {"id": record_id,
            "conversations": [{"from": _TO_SHAREGPT.get(m["role"], m["role"]), "value": m["content"]} for m in messages]}


def read(row: dict[str, Any]) -> list[dict[str, str]]:
    return [{"role": _FROM_SHAREGPT.get(t["from"], t["from"]), "content": t["value"]} for t in row["conversations"]]
