"""Person names and street addresses, from a token-classification model on this machine.

The optional tier of the pii stage: patterns cannot tell a name from any capitalised
word, a model can. Any Hugging Face token-classification model works (a CoNLL-style
NER model tags PER; PII models tag GIVENNAME, SURNAME, STREET ...); its labels are
mapped to kinds, and adjacent pieces of one kind become one span. Nothing is
downloaded: the model must be a local folder or already in the Hugging Face cache.
"""

from __future__ import annotations

from typing import Iterable

from factory.core import hub
from factory.core.errors import ConfigError
from filters.pii.detect import Span

WINDOW_CHARS = 1500  # text per model call: well inside a BERT-sized model's 512 tokens


class EntityFinder:
    def __init__(self, model: str, labels: dict[str, str], min_score: float, device: str | None,
                 kinds: list[str], where: str):
        if not hub.local_folder(model) and not hub.cached(model):
            raise ConfigError(f"{where}: {model!r} is neither a local folder nor in the Hugging Face cache; "
                              "the pii stage downloads nothing: give the folder of a token-classification model")
        from transformers import pipeline

        self.labels = {k.upper(): v for k, v in labels.items()}
        self.min_score = min_score
        self.kinds = set(kinds)
        self.tagger = hub.load("named-entity model", model,
                               lambda source: pipeline("token-classification", model=source, device=device,
                                                       aggregation_strategy="simple"),
                               "set the pii stage's ner.model to a local folder")

    def __call__(self, text: str) -> Iterable[Span]:
        spans: list[Span] = []
        for offset, window in _windows(text):
            for entity in self.tagger(window):
                label = str(entity.get("entity_group") or entity.get("entity", "")).upper()
                label = label[2:] if label[:2] in ("B-", "I-") else label
                kind = self.labels.get(label)
                if kind not in self.kinds or float(entity["score"]) < self.min_score:
                    continue
                start, end = offset + int(entity["start"]), offset + int(entity["end"])
                last = spans[-1] if spans else None
                if last is not None and last.kind == kind and not text[last.end:start].strip():
                    spans[-1] = Span(kind, last.start, end)  # "Ada" + "Lovelace": one name
                else:
                    spans.append(Span(kind, start, end))
        return spans


def _windows(text: str) -> Iterable[tuple[int, str]]:
    """Consecutive pieces of `text` of at most WINDOW_CHARS, cut at whitespace."""
    start = 0
    while start < len(text):
        end = min(len(text), start + WINDOW_CHARS)
        if end < len(text):
            cut = text.rfind(" ", start, end)
            end = cut if cut > start else end
        yield start, text[start:end]
        start = end
