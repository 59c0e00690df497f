"""Keeping keys out of everything factory writes."""

from __future__ import annotations


class Redactor:
    """Replaces every known secret value with '***' in text about to be written."""

    def __init__(self, secrets: list[str] = ()):
        # Very short values would blank out ordinary words; real keys are long.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 8}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text
