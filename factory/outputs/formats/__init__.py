"""Training formats written beside the `messages` dataset, and read back: one module
each (sharegpt, alpaca, openai_finetune), listed in factory/config/formats.py.

Each module has `write(record_id, messages) -> row` and a reader, `read(row) ->
messages`, so a file can be checked against the rows it came from; a format that holds
preference pairs also has `write_pair(prompt, chosen, rejected) -> row`. Preference
pairs fit only those formats (and jsonl / parquet, which hold the dataset's own prompt /
chosen / rejected columns); the others are refused before the run.
"""

from __future__ import annotations

from typing import Any, Callable

from factory.config.formats import FORMATS
from factory.core.errors import ConfigError
from factory.core.registry import load, one_of


class NotSingleTurn(ValueError):
    pass


def training(formats: list[str]) -> list[str]:
    """Those of `formats` written by a module of their own (not the dataset's own rows)."""
    return [f for f in formats if FORMATS[f].module]


def writer(name: str, pairs: bool = False) -> Callable[..., dict[str, Any]]:
    """`write(record_id, messages)`, or with `pairs` `write_pair(prompt, chosen, rejected)`."""
    return load(f"{FORMATS[name].module}:{'write_pair' if pairs else 'write'}")


def reader(name: str) -> Callable[[dict[str, Any]], list[dict[str, str]]]:
    return load(f"{FORMATS[name].module}:read")


def conversation_formats() -> str:
    """The training formats that hold multi-turn conversations, for messages."""
    return one_of(f.name for f in FORMATS.values() if f.module and not f.single_turn)


def check_formats(formats: list[str], multi_turn: bool, where: str, pairs: bool = False) -> None:
    """Refuse, before anything runs, a format that cannot hold the task's records."""
    unpaired = [f for f in formats if not FORMATS[f].pairs]
    if pairs and unpaired:
        holders = [f.name + (" (its DPO form)" if f.module else "") for f in FORMATS.values() if f.pairs]
        raise ConfigError(f"{where}: {unpaired[0]} holds one answer per prompt, and these records are preference "
                          f"pairs (chosen and rejected); use {one_of(holders)} instead")
    single = [f for f in formats if FORMATS[f].single_turn]
    if single and multi_turn:
        raise ConfigError(f"{where}: {single[0]} holds one instruction and one answer per row, and these records "
                          f"are multi-turn conversations; use {conversation_formats()} instead")
