"""The kept records as a Hugging Face dataset, plus Parquet, JSONL and training formats of the same rows."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Iterable

from factory.outputs import hf_features

from factory.core import jsonlines
from factory.core.errors import InputDataError
from factory.core.files import replace_path
from factory.config.formats import FORMATS
from factory.outputs.formats import NotSingleTurn, conversation_formats, training, writer as format_writer
from factory.outputs.metadata_schema import MetadataSchema
from factory.core.record import Record
from factory.core.spool import Spool
from factory.tasks.base import REASONING_KEY


def features(pairs: bool = False, reasoning_in_messages: bool = False, metadata: Any = None) -> dict[str, Any]:
    """The dataset's columns (name -> type, see hf_features.py); with `output.reasoning:
    messages`, every message also has `reasoning_content` (a string beside an answer, else
    null); `metadata` the merged struct (see metadata_schema.py)."""
    message = {"role": "string", "content": "string"}
    if reasoning_in_messages:
        message[REASONING_KEY] = "string"
    messages = ("list", ("struct", message))
    # Preference rows in TRL's explicit conversational form, without `messages`: TRL reads a
    # row with both as neither kind and refuses it.
    columns = ("prompt", "chosen", "rejected") if pairs else ("messages",)
    return {"id": "string", **{c: messages for c in columns}, "metadata": metadata if metadata is not None else "string"}


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
                  pairs: bool = False, reasoning_in_messages: bool = False, held: bool = False,
                  each_row: Callable[[dict], None] | None = None) -> int:
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
    extra = training(formats)
    text_files = [*extra, *(["jsonl"] if "jsonl" in formats else [])]
    # The rows between the passes: a spool file, or a list when the caller holds every
    # record anyway (`held`), which saves writing and parsing them again.
    kept_rows: list[dict] = []
    schema = MetadataSchema()
    count = 0
    with ExitStack() as files:
        spool = None if held else files.enter_context(Spool(staging / "rows.spool.jsonl"))
        outs = {name: files.enter_context(open(staging / FORMATS[name].file, "w", encoding="utf-8")) for name in extra}
        # A preference pair goes out in the format's pair form: only formats that hold pairs get here (formats.py).
        writers = {name: format_writer(name, pairs) for name in extra}
        for record in records:
            row = pair_row(record) if pairs else record.to_row()
            schema.add(row["metadata"])
            for name, out in outs.items():
                out.write(jsonlines.dumps(_format_row(name, writers[name], record, row)) + "\n")
            if spool is not None:
                spool.add(row)
            else:
                kept_rows.append(row)
            count += 1
    with ExitStack() as files:
        source = spool.values() if spool else kept_rows
        jsonl = files.enter_context(open(staging / "data.jsonl", "wb")) if "jsonl" in formats else None
        columns = features(pairs, reasoning_in_messages, schema.feature())
        tables = _TableWriter(staging, columns, "parquet" in formats)
        files.callback(tables.abort)
        for row in source:
            row = {**row, "metadata": schema.conform(row["metadata"])}
            line = jsonlines.dumpb(row)
            if jsonl is not None:
                jsonl.write(line)
            tables.add(line)
            if each_row is not None:  # each row as written, for whoever summarises them
                each_row(row)
        tables.finish()
    if spool is not None:
        spool.remove()

    replace_path(staging / "dataset", out_dir / "dataset")
    for name in (["parquet"] if "parquet" in formats else []) + text_files:
        replace_path(staging / FORMATS[name].file, out_dir / FORMATS[name].file)
    shutil.rmtree(staging, ignore_errors=True)
    return count


def _format_row(name: str, write: Callable[..., dict], record: Record, row: dict) -> dict:
    if "chosen" in row:  # a preference pair
        return write(row["prompt"], *row["chosen"], *row["rejected"])
    try:
        return write(record.id, record.messages)
    except NotSingleTurn as err:
        raise InputDataError(f"output.formats: {err}; {name} holds single-turn records only "
                             f"(use {conversation_formats()} for conversations)") from err


class _TableWriter:
    """Rows into `dataset/` as `datasets` lays it out (Arrow stream shards of at most
    `datasets.config.MAX_SHARD_SIZE`, state.json, dataset_info.json) and optionally into
    one Parquet file carrying the same features, a batch at a time.

    Rows come as the JSON lines data.jsonl holds, and Arrow's JSON reader turns a batch of
    them into a table against the schema (a key the schema lacks is left out, as
    `Table.from_pylist` leaves it): converting Python objects instead makes pyarrow
    import pandas, a fifth of a second per run."""

    BATCH = 1000
    BATCH_BYTES = 64 << 20  # Arrow's reader takes a batch as one block (an int32 size)

    def __init__(self, staging: Path, columns: dict[str, Any], with_parquet: bool):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.columns = columns
        self.schema = hf_features.arrow_schema(columns)
        self.plain = pa.schema(list(self.schema))  # the reader's schema: fields only
        self.folder = staging / "dataset"
        self.folder.mkdir()
        self.max_shard = _max_shard_size()
        self.parquet = pq.ParquetWriter(str(staging / "data.parquet"), self.schema) if with_parquet else None
        self.shards: list[Path] = []
        self.writer = None
        self.shard_bytes = 0
        self.batch: list[bytes] = []
        self.batch_bytes = 0
        self.digest = hashlib.sha256()

    def add(self, line: bytes) -> None:
        """One row as a line of JSON (newline included) in the columns' shape."""
        self.batch.append(line)
        self.batch_bytes += len(line)
        if len(self.batch) >= self.BATCH or self.batch_bytes >= self.BATCH_BYTES:
            self._flush()

    def _table(self):
        import pyarrow.json as pj

        if not self.batch:
            return self.schema.empty_table()
        data = b"".join(self.batch)
        table = pj.read_json(io.BytesIO(data), read_options=pj.ReadOptions(use_threads=False, block_size=len(data) + 1),
                             parse_options=pj.ParseOptions(explicit_schema=self.plain,
                                                           unexpected_field_behavior="ignore"))
        return table.replace_schema_metadata(self.schema.metadata)

    def _flush(self) -> None:
        if not self.batch and self.shards:
            return
        table = self._table()
        self.batch, self.batch_bytes = [], 0
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
        (self.folder / "dataset_info.json").write_text(hf_features.info_json(self.columns), encoding="utf-8")

    def abort(self) -> None:
        for writer in (self.writer, self.parquet):
            if writer is not None:
                writer.close()


def _max_shard_size() -> int:
    """`datasets.config.MAX_SHARD_SIZE` where `datasets` is loaded (a user may have set
    it), else its default, "500MB", as `save_to_disk` shards."""
    datasets = sys.modules.get("datasets")
    if datasets is None:
        return 500 * 10**6
    from datasets.utils.py_utils import convert_file_size_to_int

    return convert_file_size_to_int(datasets.config.MAX_SHARD_SIZE)
