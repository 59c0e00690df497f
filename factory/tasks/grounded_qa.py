"""Question/answer pairs grounded in the user's documents, k per chunk.

Documents are read and chunked before anything is sent. Each unit is one chunk (the
chunks are walked in order, and again with other seed values when more pairs are
asked for than one pass gives). The teacher returns, per pair, the question, a quote
from the chunk that supports the answer, the answer, and whether the chunk supports
it. A pair marked unsupported, or whose quote is not in the chunk, is rejected with
that reason. Every record carries the chunk's text (`context`, which the judge's
groundedness criterion reads) and where it came from (`source`: document, chunk id,
character offsets).
"""

from __future__ import annotations

import hashlib

import re
from typing import Any

from factory.inputs.chunking import Span, chunk_text
from factory.config.pipeline import PipelineFile
from factory.inputs.documents import Document, Skipped, find_documents, read_documents
from factory.core.errors import DocumentError
from factory.inputs.seeds import SeedSpace
from factory.core.structured import list_answer, strict_object
from factory.tasks.qa import QATask, pair_items
from factory.inputs.templates import TemplateLibrary

_SPACE = re.compile(r"\s+")
_ELLIPSIS = re.compile(r"\s*(?:\.\.\.|…|\[\.\.\.\])\s*")
_QUOTES = "\"'“”‘’«»"


class Chunk:
    __slots__ = ("document", "index", "span", "text")

    def __init__(self, document: Document, index: int, span: Span):
        self.document, self.index, self.span = document, index, span
        self.text = document.text[span.start:span.end]

    @property
    def id(self) -> str:
        return f"{self.document.id}#{self.index}"


def grounded_schema(k: int, quote: bool) -> dict[str, Any]:
    props: dict[str, Any] = {"question": {"type": "string"}}
    if quote:
        props["quote"] = {"type": "string"}
    props["answer"] = {"type": "string"}
    props["supported"] = {"type": "boolean"}
    return list_answer("pairs", strict_object(props), k, k)


def quote_found(quote: str, source: str) -> bool:
    """The quote's words appear in the source in order: case, spacing, quotation marks
    and `...` elisions aside."""
    haystack = _normal(source)
    at = 0
    for part in _ELLIPSIS.split(quote):
        part = _normal(part)
        if not part:
            continue
        found = haystack.find(part, at)
        if found < 0:
            return False
        at = found + len(part)
    return at > 0


def _normal(text: str) -> str:
    return _SPACE.sub(" ", text.strip().strip(_QUOTES).lower()).strip()


class GroundedQATask(QATask):
    name = "grounded_qa"
    schema_name = "grounded_pairs"

    def __init__(self, pipeline: PipelineFile, seeds: SeedSpace, library: TemplateLibrary):
        cfg = pipeline.config.generate
        where = f"{pipeline.path}: generate"
        base = pipeline.base_dir
        patterns = [cfg.documents] if isinstance(cfg.documents, str) else list(cfg.documents)
        try:
            documents, self.skipped = read_documents(find_documents(patterns, base), base, cfg.text_field, cfg.id_field)
        except DocumentError as err:
            raise DocumentError(f"{where}.documents: {err}") from err
        measure = _measure(cfg.chunking, pipeline)
        self.documents = documents
        self.chunks: list[Chunk] = []
        for doc in documents:
            spans = chunk_text(doc.text, cfg.chunking.size, cfg.chunking.overlap, measure)
            kept = [s for s in spans if s.end - s.start >= cfg.chunking.min_chars]
            if not kept:
                self.skipped.append(Skipped(doc.id, f"shorter than chunking.min_chars ({cfg.chunking.min_chars})"))
            self.chunks += [Chunk(doc, i, span) for i, span in enumerate(kept)]
        if not self.chunks:
            reasons = "; ".join(f"{s.document}: {s.reason}" for s in self.skipped[:3])
            raise DocumentError(f"{where}.documents: no document has text to ask about ({reasons})")
        super().__init__(pipeline, seeds, library)

    def data_digest(self) -> str:
        digest = hashlib.sha256(super().data_digest().encode())
        for doc in self.documents:
            digest.update(f"\x1f{doc.id}\x1f{doc.text}".encode())
        return digest.hexdigest()

    def pairs_per_unit(self) -> int:
        return self.cfg.pairs_per_chunk

    def make_schema(self) -> dict[str, Any]:
        return grounded_schema(self.k, self.cfg.quote_support)

    def template_variables(self) -> set[str]:
        return {"k", "context", "source", "chunk_id", "quote_support"}

    def requested(self) -> int:
        return self.cfg.count or len(self.chunks) * self.k

    def chunk(self, unit: int) -> Chunk:
        return self.chunks[unit % len(self.chunks)]

    def variables(self, unit: int) -> dict[str, Any]:
        chunk = self.chunk(unit)
        return {**self.seeds.values(unit), "k": self.k, "context": chunk.text, "source": chunk.document.path,
                "chunk_id": chunk.id, "quote_support": self.cfg.quote_support}

    def unit_metadata(self, unit: int) -> dict[str, Any]:
        chunk = self.chunk(unit)
        source = {"document": chunk.document.id, "path": chunk.document.path, "chunk_id": chunk.id,
                  "chunk_index": chunk.index, "start": chunk.span.start, "end": chunk.span.end}
        if chunk.document.line is not None:
            source["line"] = chunk.document.line
        return {"source": source, "context": chunk.text}

    def parse(self, text: str) -> list[dict[str, Any]]:
        pairs = []
        for item in pair_items(text):
            quote = item.get("quote")
            pairs.append({"question": item["question"], "answer": item["answer"],
                          "quote": quote.strip() if isinstance(quote, str) else "",
                          "supported": item.get("supported", True)})
        return pairs

    def verdict(self, pair: dict[str, Any], unit: int) -> tuple[str, str] | None:
        if pair["supported"] is False or str(pair["supported"]).lower() == "false":
            return "unsupported", "the teacher marked the answer as not supported by the chunk"
        if self.cfg.quote_support:
            if not pair["quote"]:
                return "no_quote", "the answer gave no supporting quote"
            if not quote_found(pair["quote"], self.chunk(unit).text):
                return "quote_not_in_source", f"quote not found in the chunk: {pair['quote'][:200]!r}"
        return None

    def pair_metadata(self, pair: dict[str, Any]) -> dict[str, Any]:
        return {"quote": pair["quote"]} if self.cfg.quote_support else {}

    def metadata_fields(self) -> set[str]:
        source = {"document", "path", "chunk_id", "chunk_index", "start", "end", "line"}
        return (super().metadata_fields() | {"context", "source"} | {f"source.{key}" for key in source}
                | ({"quote"} if self.cfg.quote_support else set()))

    def describe(self) -> dict[str, Any]:
        c = self.cfg.chunking
        return {"task": self.name, "documents": len(self.documents), "chunks": len(self.chunks),
                "chunking": c.model_dump(), "pairs_per_chunk": self.k, "quote_support": self.cfg.quote_support,
                "skipped_documents": [{"document": s.document, "reason": s.reason} for s in self.skipped]}

    def summary(self) -> str:
        skipped = f", {len(self.skipped)} skipped" if self.skipped else ""
        return (f"{self.requested()} pairs from {len(self.chunks)} chunks of {len(self.documents)} documents"
                f"{skipped} ({self.units()} requests)")


def _measure(chunking, pipeline: PipelineFile):
    if chunking.by == "chars":
        return len
    from transformers import AutoTokenizer

    from factory.core import hub

    name = chunking.tokenizer or pipeline.config.teacher.model
    if pipeline.resolve(name).exists():  # a folder beside the pipeline file
        name = str(pipeline.resolve(name))
    tokenizer = hub.load("tokenizer", name, AutoTokenizer.from_pretrained,
                         "set generate.chunking.tokenizer to a local tokenizer folder, or chunk by chars")
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))
