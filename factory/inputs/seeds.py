"""Seed variables: inline lists or files, combined lazily into one value set per request.

`product` walks the full cartesian product (cycling when more requests than
combinations are asked for); `sample` draws each variable independently from a
generator seeded by (pipeline seed, request index). Both are pure functions of the
index, so prompts are rendered on demand, in a fixed order, and a rerun asks for
exactly the same prompts.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any, Callable, Iterator

from factory.config.pipeline import SeedFile
from factory.core import jsonlines
from factory.core.errors import SeedError


def load_seed_values(name: str, source: list | SeedFile, resolve: Callable[[str], Path], where: str) -> list:
    if isinstance(source, SeedFile):
        values = read_seed_file(resolve(source.file), source.field)
    else:
        values = list(source)
        if not values:
            raise SeedError(f"{where}: seeds.{name}: the list is empty")
    return values


def read_seed_file(path: Path, field: str | None = None) -> list:
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".jsonl", ".csv"):
        raise SeedError(f"{path}: unsupported seed file type {suffix or '(none)'}; use .txt, .jsonl or .csv")
    try:
        if suffix == ".jsonl":
            values: list[Any] = [value for _, value in jsonlines.read(path, SeedError)]
        else:
            # utf-8-sig: a byte-order mark (Windows editors write one) is not part of the first value.
            text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as err:
        raise SeedError(f"{path}: seed file not found") from err
    except IsADirectoryError as err:
        raise SeedError(f"{path}: is a folder, not a seed file") from err
    except UnicodeDecodeError as err:
        raise SeedError(f"{path}: not UTF-8 text (byte {err.start})") from err
    except OSError as err:
        raise SeedError(f"{path}: cannot read seed file ({err.strerror or err})") from err

    if suffix == ".txt":
        values = [line.strip() for line in text.splitlines() if line.strip()]
    elif suffix == ".csv":
        rows = csv.DictReader(text.splitlines())
        if not rows.fieldnames:
            raise SeedError(f"{path}: empty CSV file (expected a header row)")
        values = []
        for lineno, row in enumerate(rows, 2):
            if None in row:
                raise SeedError(f"{path}:{lineno}: more cells than header columns")
            values.append(dict(row))
    if not values:
        raise SeedError(f"{path}: seed file has no values")
    if field is None:
        row = next((i for i, v in enumerate(values, 1) if isinstance(v, (dict, list))), None)
        if row is not None:
            # Rendered whole, an object would put a Python dict into every prompt.
            value = values[row - 1]
            keys = f" (keys: {', '.join(map(str, list(value)[:8]))})" if isinstance(value, dict) else ""
            raise SeedError(f"{path}: row {row} is an object{keys}; set `field: KEY` on this seed to use one "
                            f"field's value, or `field: \"*\"` to give templates the whole row ({{{{ name.KEY }}}})")
    elif field != "*":
        values = [_field(path, i, v, field) for i, v in enumerate(values, 1)]
    return values


def _field(path: Path, row: int, value: Any, field: str) -> Any:
    if not isinstance(value, dict) or field not in value:
        raise SeedError(f"{path}: row {row} has no field {field!r}")
    return value[field]


# Validation renders every value of a seed list up to CHECK_ALL values; beyond, the
# first and CHECK_SAMPLE random ones, and the first of each of at most CHECK_SHAPES shapes.
CHECK_ALL = 1000
CHECK_SAMPLE = 200
CHECK_SHAPES = 100


def check_sample(values: list, seed: int) -> list[int]:
    """Indices of `values` to render at validation (all of a short list)."""
    n = len(values)
    if n <= CHECK_ALL:
        return list(range(n))
    picked = dict.fromkeys(range(CHECK_SAMPLE))
    picked.update(dict.fromkeys(sorted(random.Random(f"{seed}:check").sample(range(n), CHECK_SAMPLE))))
    shapes: set = set()
    for i, value in enumerate(values):
        shape = (type(value).__name__, tuple(sorted(map(str, value))) if isinstance(value, dict) else None)
        if shape not in shapes:
            shapes.add(shape)
            picked[i] = None
            if len(shapes) >= CHECK_SHAPES:
                break
    return list(picked)


class SeedSpace:
    """Maps a request index to the seed values it is made from."""

    def __init__(self, variables: dict[str, list], combine: str, seed: int):
        self.names = list(variables)
        self.lists = [variables[n] for n in self.names]
        self.combine = combine
        self.seed = seed
        self.size = 1
        for values in self.lists:
            self.size *= len(values)

    def values(self, index: int) -> dict[str, Any]:
        if not self.names:
            return {}
        if self.combine == "product":
            out, rest = {}, index % self.size
            for name, values in zip(reversed(self.names), reversed(self.lists)):
                rest, pick = divmod(rest, len(values))
                out[name] = values[pick]
            return {n: out[n] for n in self.names}
        rng = random.Random(f"{self.seed}:{index}")
        return {name: values[rng.randrange(len(values))] for name, values in zip(self.names, self.lists)}

    def checked(self) -> Iterator[tuple[str, Any]]:
        """(name, value) pairs that validation renders: every value of a short list; of a
        long one (a seed file of millions of lines) a sample that stays fast: the first
        values, seeded random ones, and the first of every shape (type, and keys of an
        object), since a template fails on a shape, rarely on one value."""
        for name, values in zip(self.names, self.lists):
            for index in check_sample(values, self.seed):
                yield name, values[index]

    def describe(self) -> dict[str, Any]:
        return {
            "combine": self.combine,
            "variables": {n: len(v) for n, v in zip(self.names, self.lists)},
            "combinations": self.size,
        }


def build_seed_space(pipeline) -> SeedSpace:
    cfg = pipeline.config
    variables = {
        name: load_seed_values(name, source, lambda rel: pipeline.resolve(rel), str(pipeline.path))
        for name, source in cfg.seeds.items()
    }
    return SeedSpace(variables, cfg.generate.combine, cfg.seed)
