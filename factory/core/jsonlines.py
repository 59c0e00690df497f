"""JSON lines read and written at orjson's speed, with the standard library's answer
wherever orjson refuses, so that speed never changes what a file means.

orjson refuses what the standard library takes: NaN and Infinity literals, integers
beyond 64 bits and lone surrogates in input, and those integers in output. A line it
refuses is handed to `json`, which reads and writes them as Python always has. Output is
compact UTF-8 (no ASCII escapes, as `ensure_ascii=False`); NaN is written as null.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS


def loads(line: bytes | str) -> Any:
    """One JSON value; raises ValueError (json.JSONDecodeError) as `json.loads` would."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)


def dumps(value: Any, default: Callable[[Any], Any] | None = None, sort_keys: bool = False) -> str:
    """`value` as one line of JSON text (no newline); `sort_keys`: canonical, keys in order."""
    try:
        return orjson.dumps(value, default=default, option=_OPTIONS | (orjson.OPT_SORT_KEYS if sort_keys else 0)).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False, default=default, sort_keys=sort_keys)


def dumpb(value: Any) -> bytes:
    """`value` as one line of JSON, newline included, as UTF-8 bytes."""
    try:
        return orjson.dumps(value, option=_OPTIONS | orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return (json.dumps(value, ensure_ascii=False) + "\n").encode()
