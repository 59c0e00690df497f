"""Alpaca: {"id", "instruction", "input", "output", "system"}: single-turn records only."""

from __future__ import annotations

from typing import Any

from factory.outputs.formats import NotSingleTurn


def write(record_id: str, messages: list[dict[str, str]]) -> dict[str, Any]:
    system = [m["content"] for m in messages if m["role"] == "system"]
    turns = [m for m in messages if m["role"] != "system"]
    if [m["role"] for m in turns] != ["user", "assistant"] or len(system) > 1:
        raise NotSingleTurn(f"record {record_id} is not one question and one answer")
    return {"id": record_id, "instruction": turns[0]["content"], "input": "", "output": turns[1]["content"],
            "system": system[0] if system else ""}


def read(row: dict[str, Any]) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
    return messages + [{"role": "user", "content": prompt}, {"role": "assistant", "content": row["output"]}]
