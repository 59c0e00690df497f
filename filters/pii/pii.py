"""Personal data and secrets: redacted with a typed placeholder, or the record dropped.

Redaction rewrites the text of every message (and, by default, every string in the
metadata, where a grounded answer keeps its source passage) and leaves the record's
shape alone: the same messages, roles and metadata keys, with `pii_redacted` added
to say which kinds were replaced and how often. What is found is in filters/pii/detect.py;
person names and street addresses come from a named-entity model, only when one is
configured and on this machine (`ner`).
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal

from pydantic import Field, field_validator, model_validator

from factory.config.pipeline import PipelineFile
from factory.core.record import Record
from filters.base import Stage
from filters.pii.detect import KINDS, LOOK_ALIKE_FINDERS, PATTERN_FINDERS, Span, normalize, phone_finder, resolve

NER_KINDS = ("name", "address")
PLACEHOLDERS = {kind: f"[{kind.upper()}]" for kind in (*KINDS, *NER_KINDS)}
# Entity labels of common token-classification models, and the kind each one is.
DEFAULT_NER_LABELS = {
    "PER": "name", "PERSON": "name", "NAME": "name", "GIVENNAME": "name", "SURNAME": "name", "FIRSTNAME": "name",
    "LASTNAME": "name", "FULLNAME": "name",
    "ADDRESS": "address", "STREET": "address", "STREETADDRESS": "address", "STREET_ADDRESS": "address",
    "BUILDINGNUM": "address", "BUILDINGNUMBER": "address",
}


class NerConfig(Stage.Config):
    # A Hugging Face token-classification model: a local folder, or a Hub id in the local cache.
    model: str
    # Entity label -> kind (name or address); merged over DEFAULT_NER_LABELS.
    labels: dict[str, Literal["name", "address"]] = Field(default_factory=dict)
    min_score: float = Field(0.6, ge=0, le=1)
    device: str | None = None


class Pii(Stage):
    name = "pii"
    adds_metadata = frozenset({"pii_redacted"})

    class Config(Stage.Config):
        action: Literal["redact", "drop"] = "redact"
        # Which kinds to look for; default every pattern kind, plus name and address with `ner`.
        kinds: list[str] | None = Field(None, min_length=1)
        # Regions whose national phone formats are read (ISO 3166 codes); international
        # numbers (+44 ...) are found whatever these are.
        regions: list[str] = Field(default_factory=lambda: ["US"], min_length=1)
        # Roles whose messages are checked; default all of them, the system prompt too.
        roles: list[str] | None = None
        # Also redact the strings of each record's metadata (a grounded answer's passage and quote).
        metadata: bool = True
        # Values that are public on purpose and stay (a support address, a company switchboard);
        # compared as written, case aside.
        allow: list[str] = Field(default_factory=list)
        ner: NerConfig | None = None

        @field_validator("kinds")
        @classmethod
        def _known_kinds(cls, value: list[str] | None) -> list[str] | None:
            for kind in value or ():
                if kind not in PLACEHOLDERS:
                    raise ValueError(f"unknown kind {kind!r} (kinds: {', '.join(PLACEHOLDERS)})")
            return value

        @field_validator("regions")
        @classmethod
        def _known_regions(cls, value: list[str]) -> list[str]:
            import phonenumbers

            for region in value:
                if region.upper() not in phonenumbers.SUPPORTED_REGIONS:
                    raise ValueError(f"{region!r} is not a region code libphonenumber knows (ISO 3166: US, GB, DE ...)")
            return [r.upper() for r in value]

        @model_validator(mode="after")
        def _ner_kinds_need_a_model(self):
            wanted = [k for k in self.kinds or () if k in NER_KINDS]
            if wanted and self.ner is None:
                raise ValueError(f"kinds {', '.join(wanted)} are found by a named-entity model: set ner.model "
                                 "to a token-classification model on this machine")
            return self

        def reads(self) -> list[tuple[str, str, str]]:
            return [("roles", "role", role) for role in self.roles or ()]

        def chosen_kinds(self) -> list[str]:
            if self.kinds is not None:
                return list(dict.fromkeys(self.kinds))
            return [*KINDS, *(NER_KINDS if self.ner is not None else ())]

    def __init__(self, config: "Pii.Config | None" = None) -> None:
        super().__init__(config)
        kinds = self.config.chosen_kinds()
        self.kinds = kinds
        self._finders: list[Callable[[str], Iterable[Span]]] = [
            *LOOK_ALIKE_FINDERS, *(f for k, f in PATTERN_FINDERS.items() if k in kinds or k == "iban")]
        if "phone" in kinds:
            self._finders.append(phone_finder(self.config.regions))
        self._allowed = {value.casefold() for value in self.config.allow}
        self._ner = None
        self.found: collections.Counter[str] = collections.Counter()  # values found, per kind
        self.records_with: collections.Counter[str] = collections.Counter()  # records holding each kind

    def prepare(self, pipeline: PipelineFile, where: str) -> None:
        # Loaded now, so a model that is not on this machine is one line before anything is sent.
        self._load_ner(where)

    def _load_ner(self, where: str) -> None:
        ner = self.config.ner
        if ner is not None and self._ner is None and any(k in NER_KINDS for k in self.kinds):
            from filters.pii.ner import EntityFinder

            self._ner = EntityFinder(ner.model, {**DEFAULT_NER_LABELS, **ner.labels}, ner.min_score, ner.device,
                                     [k for k in self.kinds if k in NER_KINDS], f"{where}.ner.model")

    def data_digest(self) -> str:
        # libphonenumber's rules change between releases, and a model folder can be replaced.
        import phonenumbers

        parts = [phonenumbers.__version__]
        if self.config.ner is not None:
            folder = Path(self.config.ner.model).expanduser()
            if folder.is_dir():
                parts += [f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in sorted(folder.iterdir()) if f.is_file()]
        return "\n".join(parts)

    def spans(self, text: str) -> list[Span]:
        """Every kind found in `text`, overlaps resolved in the detectors' order of precedence."""
        found: list[Span] = []
        plain = normalize(text)  # same offsets as `text`
        for finder in self._finders:
            found.extend(finder(plain))
        if self._ner is not None:
            found.extend(self._ner(text))
        return [s for s in resolve(found) if s.kind in self.kinds and text[s.start:s.end].casefold() not in self._allowed]

    def process(self, records: Iterable[Record]) -> Iterator[Record]:
        self._load_ner(self.where or "pii")  # a stage built directly, not from a pipeline file
        for record in records:
            counts: collections.Counter[str] = collections.Counter()
            messages = [self._message(m, counts) for m in record.messages]
            metadata = self._redacted(record.metadata, counts) if self.config.metadata else record.metadata
            self.found.update(counts)
            self.records_with.update(counts.keys())
            if not counts:
                yield record
            elif self.config.action == "drop":
                kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items()))
                # The rejection carries the redacted text: rejected.jsonl is published beside the data.
                self.drop(Record(record.id, messages, metadata), "pii", f"found {kinds}", pii_found=dict(counts))
            else:
                metadata = dict(metadata)
                metadata["pii_redacted"] = dict(sorted(counts.items()))
                yield Record(record.id, messages, metadata)

    def _message(self, message: dict[str, str], counts: collections.Counter[str]) -> dict[str, str]:
        roles = self.config.roles
        if roles is not None and message["role"] not in roles:
            return message
        text = self._redact(message["content"], counts)
        return message if text is message["content"] else {**message, "content": text}

    def _redacted(self, value: Any, counts: collections.Counter[str]) -> Any:
        if isinstance(value, str):
            return self._redact(value, counts)
        if isinstance(value, dict):
            return {k: self._redacted(v, counts) for k, v in value.items()}
        if isinstance(value, list):
            return [self._redacted(v, counts) for v in value]
        return value

    def _redact(self, text: str, counts: collections.Counter[str]) -> str:
        spans = self.spans(text)
        if not spans:
            return text
        parts, at = [], 0
        for span in spans:
            parts += [text[at: span.start], PLACEHOLDERS[span.kind]]
            counts[span.kind] += 1
            at = span.end
        parts.append(text[at:])
        return "".join(parts)

    def funnel(self) -> dict[str, Any]:
        return {**super().funnel(), "action": self.config.action, "kinds": self.kinds,
                "found": dict(sorted(self.found.items())), "records_with": dict(sorted(self.records_with.items()))}


