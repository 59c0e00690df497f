"""The column types of the datasets factory writes, in `datasets`' own serialised form,
without importing `datasets` (over half a second, in every `factory filter` and run).

A type is a scalar dtype name ("string", "int64", "float64", "bool"), ("list", type)
or ("struct", {field: type}). `to_dict` gives what `datasets.Features.to_dict()` gives
(datasets >= 4: lists as `List`), `arrow_schema` what `Features.arrow_schema` gives,
its `huggingface` metadata included, and `info_json` the dataset_info.json that
`DatasetInfo.write_to_directory` writes; tests/test_outputs.py checks all three
against the installed `datasets` (the info file by its features, and by `datasets`
reading it back), so a change of its format cannot pass unseen.
"""

from __future__ import annotations

import json
from typing import Any

_ARROW = {"string": "string", "int64": "int64", "float64": "float64", "bool": "bool_"}


def to_dict(kind: Any) -> dict[str, Any]:
    if isinstance(kind, tuple):
        if kind[0] == "list":
            return {"feature": to_dict(kind[1]), "_type": "List"}
        return {name: to_dict(field) for name, field in kind[1].items()}
    return {"dtype": kind, "_type": "Value"}


def arrow_type(kind: Any):
    import pyarrow as pa

    if isinstance(kind, tuple):
        if kind[0] == "list":
            return pa.list_(arrow_type(kind[1]))
        return pa.struct([(name, arrow_type(field)) for name, field in kind[1].items()])
    return getattr(pa, _ARROW[kind])()


def arrow_schema(columns: dict[str, Any]):
    """The Arrow schema of `columns` (name -> type), carrying the features as `datasets` does."""
    import pyarrow as pa

    features = json.dumps({"info": {"features": {name: to_dict(kind) for name, kind in columns.items()}}})
    return pa.schema([(name, arrow_type(kind)) for name, kind in columns.items()],
                     metadata={"huggingface": features})


def info_json(columns: dict[str, Any]) -> str:
    info = {"description": "", "citation": "", "homepage": "", "license": "",
            "features": {name: to_dict(kind) for name, kind in columns.items()}}
    return json.dumps(info, indent=4)
