"""Training formats written beside the `messages` dataset, and read back.

- `sharegpt`: {"id", "conversations": [{"from": "system"|"human"|"gpt", "value"}]}
- `alpaca`: {"id", "instruction", "input", "output", "system"}: single-turn records only
- `openai`: {"messages": [...]}, exactly what OpenAI's fine-tuning upload accepts; for
  preference pairs, its DPO form {"input": {"messages"}, "preferred_output",
  "non_preferred_output"}

Preference pairs fit only the formats in PAIR_WRITERS (and jsonl / parquet, which hold
the dataset's own prompt / chosen / rejected columns); the others are refused before the run.

Each has a reader (`from_*`) that gives the messages back, so a file can be checked
against the rows it came from.
"""

from __future__ import annotations

from typing import Any, Callable

from factory.core.errors import ConfigError

FILES = {"sharegpt": "data.sharegpt.jsonl", "alpaca": "data.alpaca.jsonl", "openai": "data.openai.jsonl"}
_TO_SHAREGPT = {"system": "system", "user": "human", "assistant": "gpt"}
_FROM_SHAREGPT = {v: k for k, v in _TO_SHAREGPT.items()}


class NotSingleTurn(ValueError):
    pass


def to_sharegpt(record_id: str, messages: list[dict[str, str]]) -> dict[str, Any]:
    return {"id": record_id,
            "conversations": [{"from": _TO_SHAREGPT.get(m["role"], m["role"]), "value": m["content"]} for m in messages]}


def from_sharegpt(row: dict[str, Any]) -> list[dict[str, str]]:
    return [{"role": _FROM_SHAREGPT.get(t["from"], t["from"]), "content": t["value"]} for t in row["conversations"]]


def to_alpaca(record_id: str, messages: list[dict[str, str]]) -> dict[str, Any]:
    system = [m["content"] for m in messages if m["role"] == "system"]
    turns = [m for m in messages if m["role"] != "system"]
    if [m["role"] for m in turns] != ["user", "assistant"] or len(system) > 1:
        raise NotSingleTurn(f"record {record_id} is not one question and one answer")
    return {"id": record_id, "instruction": turns[0]["content"], "input": "", "output": turns[1]["content"],
            "system": system[0] if system else ""}


def from_alpaca(row: dict[str, Any]) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
    return messages + [{"role": "user", "content": prompt}, {"role": "assistant", "content": row["output"]}]


def to_openai(record_id: str, messages: list[dict[str, str]]) -> dict[str, Any]:
    return {"messages": [{"role": m["role"], "content": m["content"]} for m in messages]}


def from_openai(row: dict[str, Any]) -> list[dict[str, str]]:
    return row["messages"]


WRITERS: dict[str, Callable[[str, list[dict[str, str]]], dict[str, Any]]] = {
    "sharegpt": to_sharegpt, "alpaca": to_alpaca, "openai": to_openai}
READERS = {"sharegpt": from_sharegpt, "alpaca": from_alpaca, "openai": from_openai}


def to_openai_preference(prompt: list[dict[str, str]], chosen: dict[str, str],
                         rejected: dict[str, str]) -> dict[str, Any]:
    return {"input": {"messages": [{"role": m["role"], "content": m["content"]} for m in prompt]},
            "preferred_output": [{"role": "assistant", "content": chosen["content"]}],
            "non_preferred_output": [{"role": "assistant", "content": rejected["content"]}]}


# The formats that can carry a chosen and a rejected answer: (prompt, chosen, rejected) -> row.
PAIR_WRITERS: dict[str, Callable[..., dict[str, Any]]] = {"openai": to_openai_preference}


def check_formats(formats: list[str], multi_turn: bool, where: str, pairs: bool = False) -> None:
    """Refuse, before anything runs, a format that cannot hold the task's records."""
    unpaired = [f for f in formats if f in WRITERS and f not in PAIR_WRITERS]
    if pairs and unpaired:
        raise ConfigError(f"{where}: {unpaired[0]} holds one answer per prompt, and these records are preference "
                          f"pairs (chosen and rejected); use jsonl, parquet or openai (its DPO form) instead")
    if "alpaca" in formats and multi_turn:
        raise ConfigError(f"{where}: alpaca holds one instruction and one answer per row, and these records "
                          "are multi-turn conversations; use sharegpt or openai instead")
