"""MinHash signatures in bulk, with numpy instead of a Python loop per shingle.

For a batch of documents at once: normalise (case, punctuation, whitespace folded),
hash every word with a polynomial hash computed from prefix sums over the batch's
bytes, combine n consecutive word hashes into shingle hashes, then apply all
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


def word_hashes(docs: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every word of normalised `docs`, concatenated; and each doc's word count."""
    counts = np.fromiter((d.count(" ") + 1 if d else 0 for d in docs), dtype=np.int64, count=len(docs))
    joined = " ".join(d for d in docs if d).encode("utf-8")
    if not joined:
        return np.empty(0, dtype=np.uint64), counts
    data = np.frombuffer(joined, dtype=np.uint8).astype(np.uint64)
    n = len(data)
    with np.errstate(over="ignore"):
        # prefix[i] = sum_{j<i} data[j] * B^(i-1-j): the hash of data[:i]
        scaled = np.cumsum(data * _powers(_B_INV, n), dtype=np.uint64)
        prefix = np.concatenate(([np.uint64(0)], scaled * _powers(_B, n)))
        spaces = np.flatnonzero(data == 32)
        starts = np.concatenate(([0], spaces + 1))
        ends = np.concatenate((spaces, [n]))
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
        with np.errstate(over="ignore"):
            values = np.multiply(self.a, shingles[None, :])
            np.add(values, self.b, out=values)
        # The shift to 32 bits is monotonic, so it can follow the minimum: one pass, not two.
        lowest = np.minimum.reduceat(values, offsets, axis=1)
        return (lowest >> np.uint64(32)).astype(np.uint32).T.copy()


def signatures(texts: Sequence[str], num_perm: int = 128, ngram: int = 5, seed: int = 1,
               batch: int = 256) -> np.ndarray:
    """MinHash signatures of `texts`, shape (len(texts), num_perm), dtype uint32."""
    perms = Permutations(num_perm, seed)
    out = np.empty((len(texts), num_perm), dtype=np.uint32)
    for start in range(0, len(texts), batch):
        docs = [normalise(t) for t in texts[start: start + batch]]
        words, counts = word_hashes(docs)
        shingles, offsets = shingle_hashes(words, counts, ngram)
        out[start: start + len(docs)] = perms.sign(shingles, offsets)
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
