"""Existing datasets read as records, for `factory filter`.

Accepted: JSONL (or a JSON array), Parquet, or a folder written by `save_to_disk`;
each row in one of the common shapes:
- `messages`: a list of {role, content} (OpenAI / TRL chat format);
- `instruction` (+ optional `input`) and `output` (Alpaca);
- `prompt` and `completion`;
- `prompt`, `chosen` and `rejected` as message lists (a preference pair): the prompt and
  the chosen answer are the messages, the rejected answer goes to `metadata.rejected.content`;
- `text`: one document, kept as a single assistant message.
An `id` column is kept; a `metadata` column (JSON text or a mapping, as factory writes
it) is carried over, so judge scores survive a second filtering; any other columns go
into metadata too, so nothing in the input is lost. Every row is checked before any
stage runs: a bad row stops the command with its file and row, and nothing is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator

from factory.core import jsonlines
from factory.core.errors import InputDataError
from factory.core.record import Record, record_id

SHAPES = "messages, instruction/output, prompt/completion or text"
ROLES = {"system", "user", "assistant", "tool"}


def is_dataset(value: Any) -> bool:
    """A `datasets.Dataset` (checked by shape, so datasets need not be imported to ask)."""
    return hasattr(value, "to_list") and hasattr(value, "column_names")


def is_pair(record: Record) -> bool:
    """A preference pair: the prompt and the chosen answer, the rejected one in metadata."""
    rejected = record.metadata.get("rejected")
    return (isinstance(rejected, dict) and isinstance(rejected.get("content"), str)
            and bool(record.messages) and record.messages[-1]["role"] == "assistant")


def read_records(path: Path) -> list[Record]:
    """All rows of `path` as records; raises InputDataError naming the file and row."""
    records = []
    seen_ids: dict[str, str] = {}
    for label, record in iter_records(path):
        if record.id in seen_ids:
            raise InputDataError(f"{label}: id {record.id!r} repeats the id of {seen_ids[record.id]}")
        seen_ids[record.id] = label
        records.append(record)
    return records


def check_input(path: Path) -> None:
    """Raise InputDataError now, reading nothing, when `path` is missing or of a kind not read here."""
    _rows(path)


def iter_records(path: Path) -> Iterator[tuple[str, Record]]:
    """(a 'file:row' label, the record) for each row of `path`, read as a stream: a caller
    that keeps aggregates holds one row at a time. Raises InputDataError on a bad row."""
    rows, where = _rows(path)
    stem = path.name
    for number, row in rows:
        label = where(number)
        if not isinstance(row, dict):
            raise InputDataError(f"{label}: expected an object with {SHAPES}, got {type(row).__name__}")
        yield label, to_record(row, label, default_id=lambda: record_id(stem, "input", number))


def to_record(row: dict[str, Any], label: str, default_id: str | Callable[[], str]) -> Record:
    messages, used = _messages(row, label)
    meta = _metadata(row.get("metadata"), label)
    if "chosen" in used:
        rejected = _chat(row["rejected"], label)
        meta["rejected"] = {**(meta.get("rejected") or {}), "content": rejected[-1]["content"]}
    used = used | {"id", "metadata"}
    extra = {k: v for k, v in row.items() if k not in used and v is not None}
    if extra:
        meta.setdefault("input_columns", {}).update(_jsonable(extra))
    raw_id = row.get("id")
    if raw_id not in (None, ""):
        return Record(str(raw_id), messages, meta)
    # The default id is a hash: made only for the rows that need it.
    return Record(default_id() if callable(default_id) else default_id, messages, meta)


def _messages(row: dict[str, Any], label: str) -> tuple[list[dict[str, str]], set[str]]:
    if row.get("messages") is not None:
        return _chat(row["messages"], label), {"messages"}
    if row.get("instruction") is not None and row.get("output") is not None:
        prompt = _text(row, "instruction", label)
        extra = row.get("input")
        if extra is not None and not isinstance(extra, str):
            raise InputDataError(f"{label}: input: expected text, got {type(extra).__name__}")
        if extra and extra.strip():
            prompt = f"{prompt}\n\n{extra.strip()}"
        chat = [{"role": "user", "content": prompt}, {"role": "assistant", "content": _text(row, "output", label)}]
        if isinstance(row.get("system"), str) and row["system"].strip():
            chat.insert(0, {"role": "system", "content": row["system"].strip()})
            return chat, {"instruction", "input", "output", "system"}
        return chat, {"instruction", "input", "output"}
    if isinstance(row.get("prompt"), list) and row.get("chosen") is not None and row.get("rejected") is not None:
        # A preference pair (TRL's explicit conversational form): read as the prompt and the
        # chosen answer, as the preference task's records are; to_record keeps the rejected one.
        return _chat(row["prompt"], label) + _chat(row["chosen"], label), {"prompt", "chosen", "rejected"}
    if row.get("prompt") is not None and row.get("completion") is not None:
        return [{"role": "user", "content": _text(row, "prompt", label)},
                {"role": "assistant", "content": _text(row, "completion", label)}], {"prompt", "completion"}
    if row.get("text") is not None:
        return [{"role": "assistant", "content": _text(row, "text", label)}], {"text"}
    columns = ", ".join(sorted(row)) or "none"
    raise InputDataError(f"{label}: row has none of {SHAPES} (its columns: {columns})")


def _chat(value: Any, label: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise InputDataError(f"{label}: messages: expected a non-empty list of {{role, content}}")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise InputDataError(f"{label}: messages[{i}]: expected {{role, content}}, got {type(m).__name__}")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise InputDataError(f"{label}: messages[{i}].role: {role!r} is not one of {', '.join(sorted(ROLES))}")
        if not isinstance(content, str):
            raise InputDataError(f"{label}: messages[{i}].content: expected text, got {type(content).__name__}")
        out.append({"role": role, "content": content})
    return out


def _text(row: dict[str, Any], key: str, label: str) -> str:
    value = row[key]
    if not isinstance(value, str):
        raise InputDataError(f"{label}: {key}: expected text, got {type(value).__name__}")
    return value


def _metadata(value: Any, label: str) -> dict[str, Any]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise InputDataError(f"{label}: metadata: not valid JSON text") from None
    if not isinstance(value, dict):
        raise InputDataError(f"{label}: metadata: expected a mapping, got {type(value).__name__}")
    return dict(value)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _rows(path: Path):
    """(numbered rows, a function from row number to a 'file:where' label)."""
    if not path.exists():
        raise InputDataError(f"{path}: input not found")
    if path.is_dir():
        return _saved_dataset(path), lambda n: f"{path}: row {n}"
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _jsonl(path), lambda n: f"{path}:{n}"
    if suffix == ".json":
        return _json_array(path), lambda n: f"{path}: item {n}"
    if suffix == ".parquet":
        return _parquet(path), lambda n: f"{path}: row {n}"
    raise InputDataError(f"{path}: unsupported input (use .jsonl, .json, .parquet or a save_to_disk folder)")


def _jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    return jsonlines.read(path, InputDataError)


def _json_array(path: Path) -> Iterator[tuple[int, Any]]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputDataError(f"{path}: not a JSON file ({err.__class__.__name__})") from None
    if not isinstance(value, list):
        raise InputDataError(f"{path}: expected a JSON array of rows (or use .jsonl)")
    yield from enumerate(value)


def _parquet(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise InputDataError(f"{path}: not a readable Parquet file ({' '.join(str(err).split())[:200]})") from None
    number = 0
    for batch in table.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            yield number, row
            number += 1


def _saved_dataset(path: Path) -> Iterator[tuple[int, Any]]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as err:
        raise InputDataError(f"{path}: not a dataset saved with save_to_disk ({' '.join(str(err).split())[:200]})") from None
    if isinstance(loaded, datasets.DatasetDict):
        if "train" in loaded:
            loaded = loaded["train"]
        elif len(loaded) == 1:
            loaded = next(iter(loaded.values()))
        else:
            raise InputDataError(f"{path}: holds splits {', '.join(loaded)}; save the one to filter on its own")
    yield from enumerate(loaded)
