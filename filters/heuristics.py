"""Cheap per-record checks: length bounds, refusals and boilerplate, cut-off answers, role order.

Every check is off unless its key is set in the pipeline.
"""

from __future__ import annotations

import re
from typing import Iterable

from pydantic import Field

from factory.record import Record
from filters.base import RecordFilter, Verdict

DEFAULT_REFUSALS = (
    "as an ai language model",
    "as an ai assistant",
    "as a language model",
    "i'm sorry, but i can't",
    "i am sorry, but i cannot",
    "i cannot assist with",
    "i can't assist with",
    "i'm unable to help",
    "i am unable to provide",
    "i don't have personal opinions",
    "my knowledge cutoff",
    "i cannot fulfill",
)


class Heuristics(RecordFilter):
    name = "heuristics"

    class Config(RecordFilter.Config):
        # Per role, in characters: {assistant: 40} ...
        min_chars: dict[str, int] = Field(default_factory=dict)
        max_chars: dict[str, int] = Field(default_factory=dict)
        # true for the built-in list of refusal and boilerplate phrases, or your own list.
        refusals: bool | list[str] = False
        # Drop records whose answer stopped at the token limit (finish_reason "length").
        drop_truncated: bool = False
        # Require user/assistant turns to alternate (after an optional system message).
        alternating_roles: bool = False

    def __init__(self, config: "Heuristics.Config | None" = None):
        super().__init__(config)
        phrases: Iterable[str] = ()
        if self.config.refusals is True:
            phrases = DEFAULT_REFUSALS
        elif isinstance(self.config.refusals, list):
            phrases = [p.lower() for p in self.config.refusals]
        self._refusal = re.compile("|".join(re.escape(p) for p in phrases)) if phrases else None

    def keep(self, record: Record) -> Verdict:
        c = self.config
        for m in record.messages:
            n = len(m["content"])
            low, high = c.min_chars.get(m["role"]), c.max_chars.get(m["role"])
            if low is not None and n < low:
                return False, "too_short", f"{m['role']} has {n} characters, minimum {low}"
            if high is not None and n > high:
                return False, "too_long", f"{m['role']} has {n} characters, maximum {high}"
        if self._refusal is not None:
            for m in record.messages:
                if m["role"] == "assistant":
                    found = self._refusal.search(m["content"].lower())
                    if found:
                        return False, "refusal", f"assistant says {found.group(0)!r}"
        if c.drop_truncated and record.metadata.get("finish_reason") == "length":
            return False, "truncated", "the teacher stopped at max_tokens"
        if c.alternating_roles and not _alternates(record.messages):
            return False, "roles_not_alternating", " ".join(m["role"] for m in record.messages)
        return True


def _alternates(messages: list[dict]) -> bool:
    roles = [m["role"] for m in messages]
    if roles and roles[0] == "system":
        roles = roles[1:]
    if not roles or roles[0] != "user" or roles[-1] != "assistant":
        return False
    return all(role == ("user" if i % 2 == 0 else "assistant") for i, role in enumerate(roles))
