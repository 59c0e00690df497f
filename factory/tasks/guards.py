"""Quality guards for dialogue turns: empty, repeated, out of role, or leaking the prompt.

Each check is a pure function of the turn, its role and the turns before it, so the
same guards serve the turn-by-turn simulation and conversations written in one call.
"""

from __future__ import annotations

import re
from typing import Iterable

from factory.core.reasoning import has_thinking_tag

# A label naming the speaker's own role at the very start is formatting, not content.
_OWN_LABEL = {
    "user": re.compile(r"^\W{0,4}(?:user|customer|human|client|me)\W{0,4}:\s*", re.I),
    "assistant": re.compile(r"^\W{0,4}(?:assistant|agent|support|ai|bot)\W{0,4}:\s*", re.I),
}
_WORD = re.compile(r"\w+")


def strip_own_label(text: str, role: str) -> str:
    return _OWN_LABEL[role].sub("", text.strip(), count=1).strip()


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    if len(tokens) < n:
        return {tuple(tokens)} if tokens else set()
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def similarity(a: str, b: str) -> float:
    """Jaccard similarity of the two texts' word trigrams (word sets for short texts)."""
    x, y = ngrams(words(a), 3), ngrams(words(b), 3)
    if not x or not y:
        return 0.0
    return len(x & y) / len(x | y)


class Guards:
    def __init__(self, repeat_similarity: float, user_breaks: Iterable[str], assistant_breaks: Iterable[str],
                 leak_ngram: int, end_marker: str | None, instructions: Iterable[str]):
        self.repeat_similarity = repeat_similarity
        flags = re.I | re.M
        self.breaks = {"user": [re.compile(p, flags) for p in user_breaks],
                       "assistant": [re.compile(p, flags) for p in assistant_breaks]}
        self.leak_ngram = leak_ngram
        self.end_marker = end_marker.lower() if end_marker else None
        # Runs of words from the simulator's instructions (the templates' fixed text, not
        # the seed values, which a user is meant to say in their own words).
        self.instruction_grams: set[tuple[str, ...]] = set()
        for text in instructions:
            tokens = words(text)
            if len(tokens) >= leak_ngram:
                self.instruction_grams |= ngrams(tokens, leak_ngram)

    def check(self, text: str, role: str, previous: Iterable[str]) -> tuple[str, str] | None:
        """None when the turn passes, else (reason, detail)."""
        if not text.strip():
            return "empty_turn", f"the {role} turn is empty"
        if has_thinking_tag(text):  # what split_thinking could not take out: a tag mid-text
            return "thinking_in_answer", f"the {role} turn still holds a think tag"
        for before in previous:
            if before and (score := similarity(text, before)) >= self.repeat_similarity:
                return "repeated_turn", f"the {role} turn repeats an earlier turn (word-trigram similarity {score:.2f})"
        for pattern in self.breaks[role]:
            match = pattern.search(text)
            if match:
                who = "the simulated user spoke as the assistant" if role == "user" else "the assistant spoke as the user"
                return "role_break", f"{who}: {_around(text, match.start())!r}"
        lowered = text.lower()
        if self.end_marker and self.end_marker in lowered:
            return "leak", f"the {role} turn contains the end marker"
        if "{{" in text or "{%" in text:
            return "leak", f"the {role} turn contains template syntax"
        if self.instruction_grams:
            shared = ngrams(words(text), self.leak_ngram) & self.instruction_grams
            if shared:
                return "leak", f"the {role} turn repeats the simulator's instructions: {' '.join(next(iter(shared)))!r}"
        return None


def _around(text: str, at: int, width: int = 60) -> str:
    return text[max(0, at - 10): at + width].strip()
