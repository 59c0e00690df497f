"""MinHash signatures in bulk, with numpy instead of a Python loop per shingle.

For a batch of documents at once: fold case (and, for non-ASCII text, punctuation),
find the words in one scan over the batch's bytes, hash each with a polynomial hash
computed from prefix sums, combine n consecutive word hashes into shingle hashes, then apply all
permutations as one matrix operation (multiply-add-shift hashing, 64-bit keys to
32-bit values) and take the minimum per document with `np.minimum.reduceat`.
Nothing here loops in Python per word or per shingle.
"""

from __future__ import annotations

import re
from concurrent.futures import ProcessPoolExecutor
from typing import Sequence

import numpy as np

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
_B = np.uint64(0x100000001B3)  # odd, so it has an inverse modulo 2**64
_C = np.uint64(0x9E3779B97F4A7C15)
_MASK32 = np.uint64(0xFFFFFFFF)
_EMPTY = np.uint64(0x5BD1E995)  # the one "shingle" of an empty document
SIGN_BLOCK = 2048  # shingles per permutation product


def normalise(text: str) -> str:
    """Lower case, punctuation and underscores to spaces, whitespace collapsed."""
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def _powers(base: np.uint64, n: int) -> np.ndarray:
    out = np.empty(n, dtype=np.uint64)
    out[0] = 1
    if n > 1:
        out[1:] = base
        with np.errstate(over="ignore"):
            np.multiply.accumulate(out, out=out)
    return out


_B_INV = np.uint64(pow(int(_B), -1, 2**64))


# Byte classes for the batch scan: ASCII letters and digits (already lower case) are
# word bytes, bytes >= 128 are too (pieces of non-ASCII word characters, which
# `normalise` has already separated from any non-word character), 0 ends a document,
# and everything else separates words.
_WORD_BYTE = np.zeros(256, dtype=bool)
_WORD_BYTE[ord("0"): ord("9") + 1] = True
_WORD_BYTE[ord("a"): ord("z") + 1] = True
_WORD_BYTE[128:] = True


def _lowered(text: str) -> str:
    # ASCII text needs only lower(): the byte scan treats every other byte as a
    # separator. Anything else goes through the Unicode-aware regex first.
    return text.lower() if text.isascii() else normalise(text)


def word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every word of `texts` (as `normalise` splits them), concatenated; and each
    text's word count. One scan over the batch's bytes; no per-word Python."""
    joined = "\0".join(_lowered(t).replace("\0", " ") for t in texts).encode("utf-8")
    data = np.frombuffer(joined, dtype=np.uint8)
    word = _WORD_BYTE[data]
    n = len(data)
    if not word.any():
        return np.empty(0, dtype=np.uint64), np.zeros(len(texts), dtype=np.int64)
    edges = np.diff(word.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    doc_of_byte = np.cumsum(data == 0)
    counts = np.bincount(doc_of_byte[starts], minlength=len(texts)).astype(np.int64)
    values = data.astype(np.uint64)
    with np.errstate(over="ignore"):
        # prefix[i] = sum_{j<i} data[j] * B^(i-1-j): the hash of data[:i]
        scaled = np.cumsum(values * _powers(_B_INV, n), dtype=np.uint64)
        prefix = np.concatenate(([np.uint64(0)], scaled * _powers(_B, n)))
        lengths = (ends - starts).astype(np.int64)
        hashes = prefix[ends] - prefix[starts] * _powers(_B, int(lengths.max()) + 1)[lengths]
        hashes = (hashes + lengths.astype(np.uint64)) * _C  # length mixed in, bits spread
    return hashes, counts


def shingle_hashes(words: np.ndarray, counts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of the word n-grams inside each document; a short doc is one shingle of all its words.

    Returns the hashes and, per document, the offset of its first shingle.
    """
    total = len(words)
    doc_end = np.repeat(np.cumsum(counts), counts)  # for each word, where its document ends
    sh = np.zeros(total, dtype=np.uint64)
    with np.errstate(over="ignore"):
        mult = np.uint64(1)
        for j in range(n):
            sh[: total - j] += words[j:] * mult
            mult = mult * _C
    valid = np.arange(total) + n <= doc_end  # only documents of n words or more have these
    per_doc = np.where(counts >= n, counts - n + 1, 1)  # every document, even an empty one, has a slot
    offsets = np.cumsum(per_doc) - per_doc
    short = np.flatnonzero(counts < n)
    if not len(short):
        return sh[valid], offsets
    # A short document is one shingle of all its words (an empty one, a fixed hash).
    out = np.empty(int(per_doc.sum()), dtype=np.uint64)
    is_short = np.zeros(len(out), dtype=bool)
    is_short[offsets[short]] = True
    out[~is_short] = sh[valid]
    firsts = np.cumsum(counts) - counts
    for d in short:
        ws = words[firsts[d]: firsts[d] + counts[d]]
        with np.errstate(over="ignore"):
            out[offsets[d]] = np.sum(ws * _powers(_C, len(ws)), dtype=np.uint64) if len(ws) else _EMPTY
    return out, offsets


class Permutations:
    """num_perm multiply-add-shift hash functions, fixed by a seed."""

    def __init__(self, num_perm: int, seed: int = 1):
        rng = np.random.default_rng(seed)
        self.a = (rng.integers(0, 2**63, size=(num_perm, 1), dtype=np.uint64) << np.uint64(1)) | np.uint64(1)
        self.b = rng.integers(0, 2**63, size=(num_perm, 1), dtype=np.uint64)
        self.num_perm = num_perm

    def sign(self, shingles: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """(docs, num_perm) uint32 signatures."""
        docs = len(offsets)
        out = np.empty((docs, self.num_perm), dtype=np.uint32)
        bounds = np.append(offsets, len(shingles))
        first = 0
        # Documents in groups of about SIGN_BLOCK shingles: the (num_perm x shingles)
        # products then stay in cache instead of streaming through memory three times.
        while first < docs:
            last = int(np.searchsorted(bounds, bounds[first] + SIGN_BLOCK, side="right")) - 1
            last = min(max(last, first + 1), docs)
            lo, hi = bounds[first], bounds[last]
            with np.errstate(over="ignore"):
                values = np.multiply(self.a, shingles[None, lo:hi])
                np.add(values, self.b, out=values)
            # The shift to 32 bits is monotonic, so it can follow the minimum: one pass, not two.
            lowest = np.minimum.reduceat(values, offsets[first:last] - lo, axis=1)
            out[first:last] = (lowest >> np.uint64(32)).astype(np.uint32).T
            first = last
        return out


def signatures(texts: Sequence[str], num_perm: int = 128, ngram: int = 5, seed: int = 1,
               batch: int = 256) -> np.ndarray:
    """MinHash signatures of `texts`, shape (len(texts), num_perm), dtype uint32."""
    perms = Permutations(num_perm, seed)
    out = np.empty((len(texts), num_perm), dtype=np.uint32)
    for start in range(0, len(texts), batch):
        chunk = texts[start: start + batch]
        words, counts = word_hashes(chunk)
        shingles, offsets = shingle_hashes(words, counts, ngram)
        out[start: start + len(chunk)] = perms.sign(shingles, offsets)
    return out


def _sign_chunk(args) -> np.ndarray:
    texts, num_perm, ngram, seed = args
    return signatures(texts, num_perm, ngram, seed)


def signatures_parallel(texts: Sequence[str], num_perm: int = 128, ngram: int = 5, seed: int = 1,
                        workers: int = 2, chunk: int = 4096):
    """Yield (start, signatures) chunk by chunk, signed in `workers` processes, in order."""
    chunks = [(list(texts[i: i + chunk]), num_perm, ngram, seed) for i in range(0, len(texts), chunk)]
    if workers <= 1 or len(chunks) <= 1:
        for i, c in enumerate(chunks):
            yield i * chunk, _sign_chunk(c)
        return
    with ProcessPoolExecutor(workers) as pool:
        for i, sig in enumerate(pool.map(_sign_chunk, chunks)):
            yield i * chunk, sig
