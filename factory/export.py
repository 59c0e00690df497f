"""The kept records as a Hugging Face dataset, plus Parquet, JSONL and training formats of the same rows."""

from __future__ import annotations

import json
import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Iterable

from factory.errors import InputDataError
from factory.files import replace_path
from factory.formats import FILES, WRITERS, NotSingleTurn
from factory.record import Record


def features():
    import datasets

    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "messages": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")}),
            "metadata": datasets.Value("string"),
        }
    )


def write_dataset(records: Iterable[Record], out_dir: Path, work_dir: Path, formats: list[str]) -> int:
    """Write `dataset/` (save_to_disk) and the requested extra formats; returns the row count.

    Rows stream through a JSONL file into Arrow on disk, so memory stays flat; every
    output is built beside its final place and moved in when complete.
    """
    import datasets

    staging = work_dir / "export"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    rows_path = staging / "data.jsonl"
    extra = [f for f in formats if f in FILES]
    count = 0
    with ExitStack() as files:
        f = files.enter_context(open(rows_path, "w", encoding="utf-8"))
        outs = {name: files.enter_context(open(staging / FILES[name], "w", encoding="utf-8")) for name in extra}
        for record in records:
            f.write(json.dumps(record.to_row(), ensure_ascii=False) + "\n")
            for name, out in outs.items():
                try:
                    row = WRITERS[name](record.id, record.messages)
                except NotSingleTurn as err:
                    raise InputDataError(f"output.formats: {err}; alpaca holds single-turn records only "
                                         "(use sharegpt or openai for conversations)") from err
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1

    datasets.disable_progress_bars()
    if count:
        ds = datasets.Dataset.from_json(str(rows_path), features=features(), cache_dir=str(staging / "cache"))
    else:
        ds = datasets.Dataset.from_dict({"id": [], "messages": [], "metadata": []}, features=features())
    # With no rows, datasets writes no shard at all unless told, and cannot load the folder back.
    ds.save_to_disk(str(staging / "dataset"), **({} if count else {"num_shards": 1}))
    if "parquet" in formats:
        ds.to_parquet(str(staging / "data.parquet"))
    del ds

    replace_path(staging / "dataset", out_dir / "dataset")
    if "parquet" in formats:
        replace_path(staging / "data.parquet", out_dir / "data.parquet")
    for name in extra:
        replace_path(staging / FILES[name], out_dir / FILES[name])
    if "jsonl" in formats:
        replace_path(rows_path, out_dir / "data.jsonl")
    shutil.rmtree(staging, ignore_errors=True)
    return count
