"""The data files runs read and write: JSON lines, Parquet, saved datasets."""

from __future__ import annotations

import json
from pathlib import Path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_input(tmp_path: Path, form: str, rows: list[dict]) -> Path:
    """`rows` as an input file or folder of the given form: jsonl, parquet or a saved dataset."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Columnar files give every row every column: the ones a row lacks are null.
    columns = list(dict.fromkeys(k for row in rows for k in row))
    table = pa.Table.from_pylist([{k: row.get(k) for k in columns} for row in rows])
    if form == "jsonl":
        path = tmp_path / "in.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif form == "parquet":
        path = tmp_path / "in.parquet"
        pq.write_table(table, path)
    else:
        path = tmp_path / "saved"
        datasets.Dataset(table).save_to_disk(str(path))
    return path
