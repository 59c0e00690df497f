"""Registries name what they list as "module:attr" strings: listing a task, a teacher
backend or an output format imports nothing (no heavy library, and no import up a
layer from the config that lists them); the one chosen is imported when it is used."""

from __future__ import annotations

import importlib
from typing import Any


def load(path: str) -> Any:
    """The object that "package.module:attr" names."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)
