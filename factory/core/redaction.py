"""Keeping keys out of everything factory writes."""

from __future__ import annotations

import os
from typing import Any, Iterator


class Redactor:
    """Replaces every known secret value with '***' in text about to be written, and
    then each (text, shown) of `replacements` (local paths: factory/core/path_hiding.py)."""

    def __init__(self, secrets: list[str] = (), replacements: list[tuple[str, str]] = ()):
        # Very short values would blank out ordinary words; real keys are long.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 8}, key=len, reverse=True)
        self.replacements = list(replacements)
        # Text holding none of these holds nothing to replace: every secret and local path
        # contains one (a path's `dir/` form contains `dir`), and there are fewer of them
        # to look for in every line written.
        wanted = sorted({*self.secrets, *(local for local, _ in self.replacements)}, key=len)
        self.sentinels = [w for i, w in enumerate(wanted) if not any(s in w for s in wanted[:i])]

    def with_replacements(self, replacements: list[tuple[str, str]]) -> "Redactor":
        return Redactor(self.secrets, [*self.replacements, *replacements])

    @classmethod
    def for_config(cls, raw: Any) -> "Redactor":
        """Every key named by an `api_key_env` anywhere in the pipeline (teacher, judge ...)."""
        return cls([os.environ.get(name, "") for name in _key_env_names(raw)])

    def __call__(self, text: str) -> str:
        if not any(s in text for s in self.sentinels):
            return text
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "***")
        for local, shown in self.replacements:
            if local in text:
                text = text.replace(local, shown)
        return text


def _key_env_names(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "api_key_env" and isinstance(value, str):
                yield value
            else:
                yield from _key_env_names(value)
    elif isinstance(node, list):
        for item in node:
            yield from _key_env_names(item)
