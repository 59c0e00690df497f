"""What the registries share (tasks: config/tasks.py; teacher backends: config/backends.py;
output formats: config/formats.py).

A table names what it lists as "module:attr" strings: listing a task, a backend or a
format imports nothing (no heavy library, and no import up a layer from the config
that lists them); the one chosen is imported when it is used.
"""

from __future__ import annotations

import importlib
from typing import Any, Iterable


def load(path: str) -> Any:
    """The object that "package.module:attr" names."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def one_of(names: Iterable[str]) -> str:
    """"a, b or c": a table's names in a message."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
