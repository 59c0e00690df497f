"""Benchmark items read for decontamination: local files, or datasets on this machine.

A file is JSONL, JSON (a list of rows), CSV or Parquet; a dataset is a folder written
by `save_to_disk`, a dataset repository on disk (its data files), or a Hugging Face
dataset in the local datasets cache (loaded offline: nothing is downloaded). Each row is one item, whose text is every string
value of the row (inside lists and mappings too), in column order, or only those of
`columns`. An item is named by its `id_column` (default `id` when rows have one),
else by its row number.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from pydantic import model_validator

from factory.core import jsonlines
from factory.core.errors import ConfigError
from factory.core.strict import Strict

FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


class BenchmarkSource(Strict):
    file: str | None = None
    dataset: str | None = None  # a Hub id (cached) or a save_to_disk folder
    config: str | None = None  # the dataset's configuration (subset), when it has several
    split: str = "test"
    columns: list[str] | None = None
    id_column: str | None = None
    name: str | None = None  # how rejections name it; default the file stem or the dataset id

    @model_validator(mode="after")
    def _one_source(self):
        if (self.file is None) == (self.dataset is None):
            raise ValueError("give either file (a local JSONL, JSON, CSV or Parquet file) or dataset")
        return self

    def label(self) -> str:
        if self.name:
            return self.name
        return Path(self.file).stem if self.file else self.dataset


@dataclass
class Benchmark:
    name: str
    ids: list[str]
    texts: list[str]

    def digest(self) -> str:
        h = hashlib.sha256(self.name.encode())
        for item_id, text in zip(self.ids, self.texts):
            h.update(b"\x1e" + item_id.encode() + b"\x1f" + text.encode())
        return h.hexdigest()


def load_benchmark(source: BenchmarkSource, base_dir: Path, where: str) -> Benchmark:
    """The items of `source`; a missing or malformed source is a ConfigError naming `where`."""
    if source.file is not None:
        path = Path(source.file).expanduser()
        path = path if path.is_absolute() else base_dir / path
        rows = _file_rows(path, f"{where}.file")
        label = f"{where}.file ({path})"
    else:
        rows = _dataset_rows(source, base_dir, f"{where}.dataset")
        label = f"{where}.dataset ({source.dataset})"
    rows = list(rows)
    if not rows:
        raise ConfigError(f"{label}: no rows")
    for key, wanted in (("columns", source.columns or ()), ("id_column", [source.id_column] if source.id_column else ())):
        for column in wanted:
            if not any(isinstance(r, dict) and column in r for r in rows):
                have = sorted({k for r in rows[:100] if isinstance(r, dict) for k in r})
                raise ConfigError(f"{where}.{key}: no row has a column {column!r} (columns: {', '.join(have) or 'none'})")
    ids, texts = [], []
    id_column = source.id_column or ("id" if all(isinstance(r, dict) and "id" in r for r in rows[:100]) else None)
    for number, row in enumerate(rows):
        picked = {c: row.get(c) for c in source.columns} if source.columns and isinstance(row, dict) else row
        if isinstance(picked, dict) and id_column and not source.columns:
            picked = {k: v for k, v in picked.items() if k != id_column}
        texts.append("\n".join(_strings(picked)))
        named = row.get(id_column) if isinstance(row, dict) and id_column else None
        ids.append(str(named) if named not in (None, "") else f"row {number}")
    return Benchmark(source.label(), ids, texts)


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        if value.strip():
            yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def _file_rows(path: Path, where: str) -> Iterable[Any]:
    if not path.is_file():
        raise ConfigError(f"{where}: benchmark file {path} not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            return [row for _, row in jsonlines.read(path, lambda message: ConfigError(f"{where}: {message}"))]
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict):  # {"data": [...]} or a mapping of columns
                lists = [v for v in data.values() if isinstance(v, list)]
                if len(lists) == 1:
                    return lists[0]
                if lists and all(isinstance(v, list) and len(v) == len(lists[0]) for v in data.values()):
                    return [dict(zip(data, values)) for values in zip(*data.values())]
            if not isinstance(data, list):
                raise ConfigError(f"{where}: {path}: expected a JSON list of rows")
            return data
        if suffix == ".csv":
            with open(path, encoding="utf-8", newline="") as f:
                return list(csv.DictReader(f))
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
    except ConfigError:
        raise
    except UnicodeDecodeError as err:
        raise ConfigError(f"{where}: {path} is not UTF-8 text") from err
    except json.JSONDecodeError as err:
        raise ConfigError(f"{where}: {path}: invalid JSON ({err.msg} at line {err.lineno})") from err
    except Exception as err:  # pyarrow's and csv's own errors: a damaged file
        raise ConfigError(f"{where}: cannot read {path} ({type(err).__name__}: {' '.join(str(err).split())[:200]})") from err
    raise ConfigError(f"{where}: {path}: unsupported file type {suffix or '(none)'} (use {', '.join(FILE_SUFFIXES)})")


def _dataset_rows(source: BenchmarkSource, base_dir: Path, where: str) -> Iterable[Any]:
    import datasets

    folder = Path(source.dataset).expanduser()
    folder = folder if folder.is_absolute() else base_dir / folder
    if not folder.is_dir():
        return _load_offline(source.dataset, source, where).to_list()
    if not any((folder / marker).exists() for marker in ("dataset_dict.json", "state.json")):
        # A dataset repository on disk (a clone, a snapshot): its data files, read as the Hub would.
        return _load_offline(str(folder), source, where).to_list()
    loaded = datasets.load_from_disk(str(folder))
    if isinstance(loaded, datasets.DatasetDict):
        if source.split not in loaded:
            raise ConfigError(f"{where}: {folder} has no split {source.split!r} (splits: {', '.join(loaded)})")
        loaded = loaded[source.split]
    return loaded.to_list()


def _load_offline(path: str, source: BenchmarkSource, where: str):
    import datasets
    import datasets.config

    # Offline for this load only: a dataset not in the local cache is one line now,
    # not a minute of retries against a Hub that may be out of reach.
    was = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = True
    try:
        return datasets.load_dataset(path, source.config, split=source.split)
    except (ConnectionError, FileNotFoundError) as err:
        if Path(path).is_dir():
            raise ConfigError(f"{where}: {path} holds no data files datasets can read, and is not a save_to_disk "
                              f"folder ({' '.join(str(err).split())[:200]})") from err
        raise ConfigError(f"{where}: {source.dataset!r} is not on this machine (not a folder, and not in the datasets "
                          f"cache {datasets.config.HF_DATASETS_CACHE}); load it once with datasets.load_dataset "
                          "where the Hub can be reached, or give the benchmark as a file") from err
    except ValueError as err:  # an unknown split or configuration
        raise ConfigError(f"{where}: {source.dataset!r}: {' '.join(str(err).split())[:300]}") from err
    finally:
        datasets.config.HF_HUB_OFFLINE = was
