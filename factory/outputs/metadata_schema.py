"""One Arrow schema for the `metadata` column of a whole dataset.

Records' metadata are objects whose shape varies: a seed variable may be text in one
pipeline and a mapping in another, a judge adds fields only to what it graded. Arrow
(and the Hub's viewer, and `ds.filter`) need one struct type per column, so the shape
is merged over every row first, with these rules:

- a field missing from a row is null there (a struct holds the union of all keys);
- integers and floats in one field become floats;
- a field whose values differ in kind anywhere else (text in one row, a number or a
  mapping in another), or a mapping that never has a key, is stored as JSON text in
  every row of the dataset (`json.loads` gives the value back);
- a field that is null (or an empty list) in every row is typed as text.
"""

from __future__ import annotations

import math
from typing import Any

from factory.core import jsonlines

JSON = "json"  # the kind of a field stored as JSON text
NULL = "null"
_INT64 = 2**63


def kind_of(value: Any) -> Any:
    """The shape of one value: NULL, a scalar name, ("list", kind) or ("struct", {key: kind})."""
    if value is None:
        return NULL
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64" if -_INT64 <= value < _INT64 else JSON
    if isinstance(value, float):
        # NaN and infinities are null, as JSON (and so every JSONL factory writes) has them.
        return "float64" if math.isfinite(value) else NULL
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return ("struct", {str(k): kind_of(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        element = NULL
        for item in value:
            element = merge(element, kind_of(item))
        return ("list", element)
    return JSON


def merge(a: Any, b: Any) -> Any:
    """The one kind that holds values of both kinds."""
    if a == NULL:
        return b
    if b == NULL or a == b:
        return a
    if JSON in (a, b):
        return JSON
    if isinstance(a, str) and isinstance(b, str) and {a, b} == {"int64", "float64"}:
        return "float64"
    if isinstance(a, tuple) and isinstance(b, tuple) and a[0] == b[0]:
        if a[0] == "list":
            return ("list", merge(a[1], b[1]))
        fields = dict(a[1])
        for key, kind in b[1].items():
            fields[key] = merge(fields.get(key, NULL), kind)
        return ("struct", fields)
    return JSON


def settle(kind: Any) -> Any:
    """The kind as stored: an empty mapping becomes JSON text, all-null becomes text."""
    if kind == NULL:
        return "string"
    if isinstance(kind, tuple):
        if kind[0] == "list":
            return ("list", settle(kind[1]))
        if not kind[1]:
            return JSON
        # Fields in name order: the schema does not depend on which row came first or on
        # the order a row's keys were set in.
        return ("struct", {k: settle(v) for k, v in sorted(kind[1].items())})
    return kind


def feature(kind: Any) -> Any:
    """The column type (factory/outputs/hf_features.py) for a settled kind: JSON is text."""
    if kind == JSON:
        return "string"
    if isinstance(kind, tuple):
        if kind[0] == "list":
            return ("list", feature(kind[1]))
        return ("struct", {k: feature(v) for k, v in kind[1].items()})
    return kind


def conform(value: Any, kind: Any) -> Any:
    """`value` in the settled `kind`'s shape (JSON text where the kind is JSON)."""
    if kind == JSON:
        return None if value is None else jsonlines.dumps(value, sort_keys=True)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if isinstance(kind, tuple):
        if kind[0] == "list":
            return [conform(v, kind[1]) for v in value]
        return {k: conform(value.get(k), v) for k, v in kind[1].items()}
    if kind == "float64":
        return float(value)
    return value


class MetadataSchema:
    """Grows with every row seen; then conforms rows to the one schema."""

    def __init__(self) -> None:
        self.kind: Any = ("struct", {})

    def add(self, metadata: dict[str, Any]) -> None:
        self.kind = merge(self.kind, kind_of(metadata))

    def feature(self):
        """The `metadata` feature: a struct of the merged fields (JSON text when no row
        has any field: Parquet cannot hold a struct without fields)."""
        return feature(settle(self.kind))

    def conform(self, metadata: dict[str, Any]) -> Any:
        return conform(metadata, settle(self.kind))
