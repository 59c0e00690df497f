"""JSON lines read and written at orjson's speed, with the standard library's answer
wherever orjson refuses, so that speed never changes what a file means.

orjson refuses what the standard library takes: NaN and Infinity literals and lone
surrogates in input, integers beyond 64 bits in output. A line it refuses is handed to
`json`, which reads and writes them as Python always has. An integer beyond 64 bits in
input orjson does not refuse but reads as a float: `read` (files people write) hands
such lines to `json` too; `loads` (the spools of our own records) does not look. Output is
compact UTF-8 (no ASCII escapes, as `ensure_ascii=False`); NaN is written as null.

`read` is the one reader of JSON-lines files that people write (seeds, documents,
`factory filter`'s input, benchmarks, a run's own files for the report): a line that is
not JSON, or a file that is not UTF-8, stops with the file and line in the caller's own
error class.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS
_BOM = b"\xef\xbb\xbf"
# orjson reads an integer beyond 64 bits as a float, silently (1e+29 for a 30-digit id).
# Such an integer is a run of at least 19 digits, found with `translate` at about orjson's
# own cost per line (a regex costs ten times that); a line holding one is read by `json`.
_DIGITS_ONLY = bytes(48 if 48 <= i < 58 else 32 for i in range(256))  # every digit "0", the rest " "
_LONG_NUMBER = b"0" * 19


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


def read(path: Path, error: Callable[[str], Exception] = ValueError) -> Iterator[tuple[int, Any]]:
    """(line number, value) for each line of the JSON-lines file `path` that is not blank,
    read as a stream. A line that is not JSON raises `error(f"{path}:{n}: invalid JSON
    ({msg})")`, a line that is not UTF-8 `error(f"{path}: not UTF-8 text (byte {offset})")`;
    a UTF-8 byte-order mark before the first line is passed over. OSError (no such file, a
    folder) is the caller's to name, in its own words."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if number == 1 and line.startswith(_BOM):
                line = line[len(_BOM):]
            try:
                value = orjson.loads(line)
                if _LONG_NUMBER in line.translate(_DIGITS_ONLY):
                    value = json.loads(line.decode())
            except orjson.JSONDecodeError:
                # The slow path, only for lines orjson refuses: blank, not UTF-8, what only
                # `json` reads (module docstring), or not JSON at all.
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError as err:
                    offset = f.tell() - len(line) + err.start
                    raise error(f"{path}: not UTF-8 text (byte {offset})") from None
                if not text.strip():
                    continue
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as err:
                    raise error(f"{path}:{number}: invalid JSON ({err.msg})") from None
            yield number, value
