"""Splitting a document into overlapping chunks that keep their offsets.

A chunk is a span of the document's text, so `text[start:end]` is exactly the chunk
and every pair made from it can be traced back. Spans break at the largest boundary
that fits: paragraphs first, then lines, sentences, clauses, words, and characters
only when a single word is longer than a chunk. Consecutive chunks share up to
`overlap` (characters or tokens) of whole pieces, so a fact on a boundary is whole in
at least one chunk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

Measure = Callable[[str], int]
# Each level splits after its separator, so the pieces cover the text with no gaps.
_LEVELS = [re.compile(p) for p in (r"\n\s*\n", r"\n", r"(?<=[.!?])\s+", r"(?<=[;:,])\s+", r"\s+")]


@dataclass(frozen=True)
class Span:
    start: int
    end: int


def chunk_text(text: str, size: int, overlap: int, measure: Measure = len) -> list[Span]:
    """Spans of `text`, each measuring at most `size` (but for a single over-long
    piece at character level), overlapping by whole pieces up to `overlap`."""
    pieces = _pieces(text, 0, len(text), size, measure, 0)
    sizes = [measure(text[p.start:p.end]) for p in pieces]
    chunks: list[Span] = []
    i, n = 0, len(pieces)
    while i < n:
        j, total = i, 0
        while j < n and (j == i or total + sizes[j] <= size):
            total += sizes[j]
            j += 1
        span = _trimmed(text, pieces[i].start, pieces[j - 1].end)
        if span is not None and (not chunks or span.end > chunks[-1].end):
            chunks.append(span)
        if j >= n:
            break
        # Step back over whole trailing pieces that fit in the overlap, always moving forward.
        k, back = j, 0
        while k - 1 > i and back + sizes[k - 1] <= overlap:
            back += sizes[k - 1]
            k -= 1
        i = k
    return chunks


def _pieces(text: str, start: int, end: int, size: int, measure: Measure, level: int) -> list[Span]:
    if measure(text[start:end]) <= size:
        return [Span(start, end)]
    if level == len(_LEVELS):
        return _hard_split(text, start, end, size, measure)
    cuts = [m.end() for m in _LEVELS[level].finditer(text, start, end) if start < m.end() < end]
    if not cuts:
        return _pieces(text, start, end, size, measure, level + 1)
    out: list[Span] = []
    for a, b in zip([start, *cuts], [*cuts, end]):
        out += _pieces(text, a, b, size, measure, level + 1)
    return out


def _hard_split(text: str, start: int, end: int, size: int, measure: Measure) -> list[Span]:
    out = []
    while start < end:
        lo, hi = start + 1, end  # the longest prefix that fits (at least one character)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if measure(text[start:mid]) <= size:
                lo = mid
            else:
                hi = mid - 1
        out.append(Span(start, lo))
        start = lo
    return out


def _trimmed(text: str, start: int, end: int) -> Span | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return Span(start, end) if end > start else None
