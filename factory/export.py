"""The kept records as a Hugging Face dataset, plus Parquet, JSONL and training formats of the same rows."""

from __future__ import annotations

import hashlib
import json
import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterable

from factory.errors import InputDataError
from factory.files import replace_path
from factory.formats import FILES, PAIR_WRITERS, WRITERS, NotSingleTurn
from factory.metadata_schema import MetadataSchema
from factory.record import Record
from factory.tasks.base import REASONING_KEY


def features(pairs: bool = False, reasoning_in_messages: bool = False, metadata=None):
    """The dataset's columns; with `output.reasoning: messages`, every message also has
    `reasoning_content` (a string beside an answer, else null); `metadata` the merged
    struct (see metadata_schema.py)."""
    import datasets

    message = {"role": datasets.Value("string"), "content": datasets.Value("string")}
    if reasoning_in_messages:
        message[REASONING_KEY] = datasets.Value("string")
    messages = datasets.List(message)
    # Preference rows in TRL's explicit conversational form, without `messages`: TRL reads a
    # row with both as neither kind and refuses it.
    columns = ("prompt", "chosen", "rejected") if pairs else ("messages",)
    return datasets.Features({"id": datasets.Value("string"), **{c: messages for c in columns},
                              "metadata": metadata if metadata is not None else datasets.Value("string")})


def pair_row(record: Record) -> dict[str, Any]:
    """A preference record (messages = prompt + chosen; metadata.rejected holds the other
    answer) as a dataset row: `prompt` the messages before the answer, `chosen` and
    `rejected` one assistant message each. The rejected text leaves the metadata, which
    keeps its scores, model and temperature."""
    meta = dict(record.metadata)
    rejected = dict(meta.get("rejected") or {})
    content = rejected.pop("content", "")
    meta["rejected"] = rejected
    return {"id": record.id, "prompt": record.messages[:-1], "chosen": record.messages[-1:],
            "rejected": [{"role": "assistant", "content": content}],
            "metadata": meta}


def write_dataset(records: Iterable[Record], out_dir: Path, work_dir: Path, formats: list[str],
                  pairs: bool = False, reasoning_in_messages: bool = False) -> int:
    """Write `dataset/` (the layout `save_to_disk` writes) and the requested extra formats;
    returns the row count. `pairs`: the records are preference pairs (see `pair_row`).

    Rows stream in two passes, a line or a batch at a time, so memory stays flat however
    many rows there are: the first writes the training formats and a spool of the rows
    while it merges the shape of their metadata (metadata_schema.py); the second gives
    every spooled row that one shape and writes it into the Arrow shards, the Parquet
    file and the JSONL at once (`metadata` the same struct in all three). Every output is
    built beside its final place and moved in when complete.
    """
    staging = work_dir / "export"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    extra = [f for f in formats if f in FILES]
    text_files = [*extra, *(["jsonl"] if "jsonl" in formats else [])]
    spool = staging / "rows.spool.jsonl"
    schema = MetadataSchema()
    count = 0
    with ExitStack() as files:
        rows = files.enter_context(open(spool, "w", encoding="utf-8"))
        outs = {name: files.enter_context(open(staging / _file_name(name), "w", encoding="utf-8")) for name in extra}
        for record in records:
            row = pair_row(record) if pairs else record.to_row()
            schema.add(row["metadata"])
            for name, out in outs.items():
                out.write(json.dumps(_format_row(name, record, row), ensure_ascii=False) + "\n")
            rows.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    with ExitStack() as files:
        source = files.enter_context(open(spool, encoding="utf-8"))
        jsonl = files.enter_context(open(staging / "data.jsonl", "w", encoding="utf-8")) if "jsonl" in formats else None
        columns = features(pairs, reasoning_in_messages, schema.feature())
        tables = _TableWriter(staging, columns, "parquet" in formats)
        files.callback(tables.abort)
        for line in source:
            row = json.loads(line)
            row["metadata"] = schema.conform(row["metadata"])
            if jsonl is not None:
                jsonl.write(json.dumps(row, ensure_ascii=False) + "\n")
            tables.add(row)
        tables.finish()
    spool.unlink()

    replace_path(staging / "dataset", out_dir / "dataset")
    for name in (["parquet"] if "parquet" in formats else []) + text_files:
        replace_path(staging / _file_name(name), out_dir / _file_name(name))
    shutil.rmtree(staging, ignore_errors=True)
    return count


def _file_name(name: str) -> str:
    return {"jsonl": "data.jsonl", "parquet": "data.parquet"}.get(name) or FILES[name]


def _format_row(name: str, record: Record, row: dict) -> dict:
    if "chosen" in row:  # a preference pair: only PAIR_WRITERS' formats are let through (formats.py)
        return PAIR_WRITERS[name](row["prompt"], *row["chosen"], *row["rejected"])
    try:
        return WRITERS[name](record.id, record.messages)
    except NotSingleTurn as err:
        raise InputDataError(f"output.formats: {err}; alpaca holds single-turn records only "
                             "(use sharegpt or openai for conversations)") from err


class _TableWriter:
    """Rows into `dataset/` as `datasets` lays it out (Arrow stream shards of at most
    `datasets.config.MAX_SHARD_SIZE`, state.json, dataset_info.json) and optionally into
    one Parquet file carrying the same features, a batch at a time."""

    BATCH = 1000

    def __init__(self, staging: Path, columns, with_parquet: bool):
        import datasets
        import pyarrow.parquet as pq

        self.features = columns
        self.schema = self.features.arrow_schema
        self.folder = staging / "dataset"
        self.folder.mkdir()
        self.max_shard = datasets.config.MAX_SHARD_SIZE
        if isinstance(self.max_shard, str):
            from datasets.utils.py_utils import convert_file_size_to_int

            self.max_shard = convert_file_size_to_int(self.max_shard)
        self.parquet = pq.ParquetWriter(str(staging / "data.parquet"), self.schema) if with_parquet else None
        self.shards: list[Path] = []
        self.writer = None
        self.shard_bytes = 0
        self.batch: list[dict] = []
        self.digest = hashlib.sha256()

    def add(self, row: dict) -> None:
        self.batch.append(row)
        if len(self.batch) >= self.BATCH:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if not self.batch and self.shards:
            return
        table = pa.Table.from_pylist(self.batch, schema=self.schema)
        self.batch = []
        if self.writer is None or self.shard_bytes >= self.max_shard:
            self._next_shard()
        self.writer.write_table(table)
        self.shard_bytes += table.nbytes
        if self.parquet is not None:
            self.parquet.write_table(table)
        for column in table.columns:
            for chunk in column.chunks:
                for buffer in chunk.buffers():
                    if buffer is not None:
                        self.digest.update(buffer)

    def _next_shard(self) -> None:
        import pyarrow as pa

        if self.writer is not None:
            self.writer.close()
        path = self.folder / f"shard-{len(self.shards)}.arrow"
        self.shards.append(path)
        self.writer = pa.ipc.new_stream(str(path), self.schema)
        self.shard_bytes = 0

    def finish(self) -> None:
        import datasets

        self._flush()  # with no rows at all, one empty shard: load_from_disk needs one
        self.writer.close()
        self.writer = None
        if self.parquet is not None:
            self.parquet.close()
            self.parquet = None
        total = len(self.shards)
        names = []
        for i, path in enumerate(self.shards):
            name = f"data-{i:05d}-of-{total:05d}.arrow"
            path.rename(self.folder / name)
            names.append({"filename": name})
        state = {"_data_files": names, "_fingerprint": self.digest.hexdigest()[:16], "_format_columns": None,
                 "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False, "_split": None}
        (self.folder / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
        datasets.DatasetInfo(features=self.features).write_to_directory(str(self.folder), pretty_print=True)

    def abort(self) -> None:
        for writer in (self.writer, self.parquet):
            if writer is not None:
                writer.close()
