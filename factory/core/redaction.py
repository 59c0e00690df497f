"""Keeping keys out of everything factory writes."""

from __future__ import annotations

import os
import re
from typing import Any, Iterator

# A provider key's own form (OpenAI, Anthropic, Hugging Face, GitHub, GitLab, Slack, AWS,
# Google, Groq, Replicate, Perplexity, NVIDIA; a JWT), or a credential written with its
# scheme: a secret whatever the field holding it is called.
_KEY_FORM = re.compile(r"(?:sk-|sk_|rk_|hf_|ghp_|gho_|ghs_|github_pat_|glpat-|xox[abpors]-|gsk_|r8_|pplx-|nvapi-"
                       r"|AKIA[0-9A-Z]{16}|AIza|eyJ[\w-]+\.[\w-]+\.|(?:Bearer|Basic|Token)\s)")
# Words of a field's name that say its value is a credential (api_key, x-api-key,
# accessToken, client_secret, password, Authorization, Cookie ...).
_SECRET_WORDS = frozenset({"key", "apikey", "token", "secret", "password", "passwd", "pwd", "auth",
                           "authorization", "credential", "credentials", "bearer", "cookie"})
# Request fields whose names hold such a word but whose values are no credential.
_PUBLIC_FIELDS = frozenset({"prompt_cache_key"})  # OpenAI's prompt-cache routing hint


def looks_like_a_key(value: str) -> bool:
    """Whether a text has a provider key's form, or is a long opaque string of letters and
    digits (hex and base62 keys: Together, Mistral, Cohere ...), not an environment
    variable's name."""
    return bool(_KEY_FORM.match(value)) or (len(value) >= 20 and "_" not in value
                                            and any(c.isdigit() for c in value))


def secret_fields(node: Any, path: str = "") -> Iterator[str]:
    """The dotted paths of the text values in `node` that are credentials, by their
    field's name (api_key, token, password ...) or by their own form (sk-..., Bearer ...);
    numbers, booleans and public fields are never."""
    if isinstance(node, dict):
        for name, value in node.items():
            where = f"{path}.{name}" if path else str(name)
            if isinstance(value, str) and value and (
                    _KEY_FORM.match(value) or (str(name) not in _PUBLIC_FIELDS and _secret_name(str(name)))):
                yield where
            else:
                yield from secret_fields(value, where)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from secret_fields(item, f"{path}[{i}]")
    elif isinstance(node, str) and _KEY_FORM.match(node):
        yield path


def _secret_name(name: str) -> bool:
    words = re.findall(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])", name)
    return any(word.lower() in _SECRET_WORDS for word in words)


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
