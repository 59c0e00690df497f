"""OpenAI fine-tuning: {"messages": [...]}, exactly what its upload accepts; for
preference pairs, its DPO form {"input": {"messages"}, "preferred_output",
"non_preferred_output"}."""

from __future__ import annotations

from typing import Any


def write(record_id: str, messages: list[dict[str, str]]) -> dict[str, Any]:
    return {"messages": [{"role": m["role"], "content": m["content"]} for m in messages]}


def read(row: dict[str, Any]) -> list[dict[str, str]]:
    return row["messages"]


def write_pair(prompt: list[dict[str, str]], chosen: dict[str, str], rejected: dict[str, str]) -> dict[str, Any]:
    return {"input": {"messages": [{"role": m["role"], "content": m["content"]} for m in prompt]},
            "preferred_output": [{"role": "assistant", "content": chosen["content"]}],
            "non_preferred_output": [{"role": "assistant", "content": rejected["content"]}]}
