"""ROUGE-L between short texts, and a pool to test new texts against: Self-Instruct's
novelty check ("too similar to an instruction already in the pool").

ROUGE-L F1 over words: 2·LCS / (len(a) + len(b)), with rouge-score's tokenizer (lower
case, anything but letters and digits splits words, no stemming), as the Self-Instruct
paper computed it. Unlike word-set measures (MinHash Jaccard) it keeps word order, so
"list three ways to save water" and "water three ways to save list" are not the same
instruction, and it needs no shingle size to tune for texts of ten to thirty words. The
longest common subsequences against the whole pool are computed in one call to
rapidfuzz's C++ `cdist`, so a pool of thousands costs a fraction of a millisecond per
new text.
"""

from __future__ import annotations

import re

import numpy as np

_SPLIT = re.compile(r"[^a-z0-9]+")


def words(text: str) -> list[str]:
    return [w for w in _SPLIT.split(text.lower()) if w]


def rouge_l(a: str, b: str) -> float:
    from rapidfuzz.distance import LCSseq

    x, y = words(a), words(b)
    if not x or not y:
        return 0.0
    return 2 * LCSseq.similarity(x, y) / (len(x) + len(y))


class RougePool:
    """Texts seen so far; `nearest` says which one a new text is closest to.

    Each text is kept as a string with one character per word (a word's number in the
    pool's vocabulary), so rapidfuzz compares plain strings in C++ rather than hashing
    lists of Python strings on every call.
    """

    def __init__(self, texts: list[str] = ()):
        self.texts: list[str] = []
        self._coded: list[str] = []
        self._lengths: list[int] = []
        self._vocabulary: dict[str, str] = {}
        for text in texts:
            self.add(text)

    def __len__(self) -> int:
        return len(self.texts)

    def _code(self, tokens: list[str], grow: bool) -> str:
        chars = []
        for word in tokens:
            char = self._vocabulary.get(word)
            if char is None:
                if not grow:
                    char = "\x00"  # a word the pool has never seen matches nothing in it
                else:
                    char = self._vocabulary[word] = _character(len(self._vocabulary))
            chars.append(char)
        return "".join(chars)

    def add(self, text: str) -> None:
        tokens = words(text)
        self.texts.append(text)
        self._coded.append(self._code(tokens, grow=True))
        self._lengths.append(len(tokens))

    def nearest(self, text: str) -> tuple[float, str | None]:
        """(ROUGE-L F1, the pool's text) of the closest text in the pool; (0.0, None) when empty."""
        from rapidfuzz.distance import LCSseq
        from rapidfuzz.process import cdist

        tokens = words(text)
        if not tokens or not self.texts:
            return 0.0, None
        common = cdist([self._code(tokens, grow=False)], self._coded, scorer=LCSseq.similarity, dtype=np.int32)[0]
        scores = 2 * common / (len(tokens) + np.asarray(self._lengths, dtype=np.float64))
        best = int(np.argmax(scores))
        return float(scores[best]), self.texts[best]


def _character(number: int) -> str:
    """The number-th character from U+0001 on, skipping the surrogates (not characters)."""
    code = number + 1
    return chr(code if code < 0xD800 else code + 0x800)
