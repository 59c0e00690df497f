"""The output formats: one table, the one place a format is added.

`output.formats`' allowed values, the CLI's `--format` choices, the files a run folder
holds, the checks before a run (factory/outputs/formats/) and the dataset card's lines
all come from here. A training format is a module in factory/outputs/formats/ with
`write(record_id, messages) -> row` and `read(row) -> messages` (and `write_pair(prompt,
chosen, rejected) -> row` when it holds preference pairs), plus one line below.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Format:
    name: str
    file: str  # beside dataset/ in the run folder
    # The module that writes and reads it; None: the dataset's own rows (outputs/dataset.py).
    module: str | None = None
    card_line: str = ""  # the card: "- `file`: {card_line}"
    pair_card_line: str = ""  # the same, for preference pairs
    pairs: bool = False  # holds preference pairs (its module has write_pair)
    single_turn: bool = False  # holds one instruction and one answer per row


FORMATS: dict[str, Format] = {f.name: f for f in [
    Format("jsonl", "data.jsonl", pairs=True),
    Format("parquet", "data.parquet", pairs=True),
    Format("sharegpt", "data.sharegpt.jsonl", "factory.outputs.formats.sharegpt",
           "ShareGPT (`conversations` of `{from, value}`; human/gpt/system)"),
    Format("alpaca", "data.alpaca.jsonl", "factory.outputs.formats.alpaca",
           "Alpaca (`instruction`, `input`, `output`, `system`)", single_turn=True),
    Format("openai", "data.openai.jsonl", "factory.outputs.formats.openai_finetune",
           "OpenAI fine-tuning JSONL (`messages` only)",
           "OpenAI DPO fine-tuning JSONL (`input.messages`, `preferred_output`, `non_preferred_output`)", pairs=True),
]}
