"""MinHash signatures in bulk: one hash per shingle, not one per shingle and permutation.

For a batch of documents at once: fold case, find the words with a code-point table
(the same word characters as `normalise`), hash each word from prefix sums, and
combine n consecutive word hashes into shingle hashes. Nothing loops in Python per
word or per shingle.

The signature is one-permutation MinHash (Li, Owen and Zhang, 2012): each shingle's
mixed 64-bit hash picks one of num_perm bins with its high bits and competes for that
bin's minimum with its low 32 bits. A bin that no shingle fell in borrows the value of
the first non-empty bin along a probe sequence of its own, fixed by the seed ("optimal
densification", Shrivastava, 2017). Two documents then agree in a slot with
probability equal to the Jaccard similarity of their shingle sets, as with num_perm
independent permutations, for 1/num_perm of the hashing.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import multiprocessing
import re
import threading
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterator, Sequence

import numpy as np

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_B = np.uint64(0x100000001B3)  # odd, so it has an inverse modulo 2**64
_B_INV = np.uint64(pow(int(_B), -1, 2**64))
_C = np.uint64(0x9E3779B97F4A7C15)
_EMPTY = np.uint64(0x5BD1E995)  # the one "shingle" of an empty document
_MASK32 = np.uint64(0xFFFFFFFF)
_U32_MAX = np.uint32(0xFFFFFFFF)


def normalise(text: str) -> str:
    """Lower case, punctuation and underscores to spaces, whitespace collapsed."""
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def digest(text: str) -> bytes:
    """16 bytes naming the text once case, whitespace and punctuation are folded: the
    exact_dedup stage's key, local and on Ray (the same folding as the shingles here)."""
    return hashlib.blake2b(normalise(text).encode(), digest_size=16).digest()


@functools.cache
def _folding() -> np.ndarray:
    """For every code point: 0 where `normalise` treats it as a separator (the same regex),
    otherwise the code point itself, ASCII capitals lowered. The rest of the case folding
    is str.lower's, which only non-ASCII text needs."""
    every = np.arange(0x110000, dtype=np.uint32)
    word = np.zeros(len(every), dtype=bool)
    for run in _WORD.finditer(every.tobytes().decode("utf-32-le", "surrogatepass")):
        word[run.start(): run.end()] = True
    folded = np.where(word, every, 0).astype(np.uint32)
    folded[ord("A"): ord("Z") + 1] += 32
    return folded


def _powers(base: np.uint64, n: int) -> np.ndarray:
    out = np.empty(n, dtype=np.uint64)
    out[0] = 1
    if n > 1:
        out[1:] = base
        with np.errstate(over="ignore"):
            np.multiply.accumulate(out, out=out)
    return out


_power_cache: dict[int, np.ndarray] = {}


def cached_powers(base: np.uint64, n: int) -> np.ndarray:
    """base**0 .. base**(n-1), kept between batches (each batch needs about as many)."""
    known = _power_cache.get(int(base))
    if known is None or len(known) < n:
        known = _power_cache[int(base)] = _powers(base, max(n, 2 * len(known) if known is not None else n))
    return known[:n]


def word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every word of `texts` (as `normalise` splits them), concatenated; and each
    text's word count. One scan over the batch's code points; no per-word Python."""
    joined = "\0".join(t.replace("\0", " ") if t.isascii() else t.replace("\0", " ").lower() for t in texts)
    points = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    folded = _folding()[points]
    word = folded != 0
    edges = np.diff(word.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    bounds = np.searchsorted(starts, np.flatnonzero(points == 0))  # words before each separator
    counts = np.diff(np.concatenate(([0], bounds, [len(starts)]))).astype(np.int64)
    if not len(starts):
        return np.empty(0, dtype=np.uint64), counts
    n = len(points)
    with np.errstate(over="ignore"):
        # scaled[i] = sum_{j<i} c_j * B^-j, so a word's polynomial hash
        # sum_{start<=j<end} c_j * B^(end-1-j) is (scaled[end] - scaled[start]) * B^(end-1).
        scaled = np.zeros(n + 1, dtype=np.uint64)
        np.cumsum(folded * cached_powers(_B_INV, n), dtype=np.uint64, out=scaled[1:])
        hashes = (scaled[ends] - scaled[starts]) * cached_powers(_B, n)[ends - 1]
        hashes = (hashes + (ends - starts).astype(np.uint64)) * _C  # length mixed in, bits spread
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
        for j in range(min(n, total)):  # (a batch may hold fewer than n words in all)
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


class OnePermutation:
    """num_perm bins and their probe sequences, fixed by a seed."""

    def __init__(self, num_perm: int, seed: int = 1):
        rng = np.random.default_rng(seed)
        self.num_perm = num_perm
        self.key = rng.integers(0, 2**63, dtype=np.uint64)
        # Row i: every other bin, in an order of its own; an empty bin i borrows from the first non-empty one.
        probes = np.empty((num_perm, max(num_perm - 1, 1)), dtype=np.int64)
        for i in range(num_perm):
            order = rng.permutation(num_perm - 1)
            probes[i, : num_perm - 1] = order + (order >= i)
        self.probes = probes

    def _mix(self, shingles: np.ndarray) -> np.ndarray:
        """MurmurHash3's 64-bit finaliser over the seeded shingle hashes: every output bit
        depends on every input bit, so the high and low halves act as independent hashes."""
        h = shingles ^ self.key
        with np.errstate(over="ignore"):
            h ^= h >> np.uint64(33)
            h *= np.uint64(0xFF51AFD7ED558CCD)
            h ^= h >> np.uint64(33)
            h *= np.uint64(0xC4CEB9FE1A85EC53)
            h ^= h >> np.uint64(33)
        return h

    def sign(self, shingles: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """(docs, num_perm) uint32 signatures; every document has at least one shingle."""
        docs, k = len(offsets), self.num_perm
        h = self._mix(shingles)
        per_doc = np.diff(np.append(offsets, len(shingles)))
        cell = np.repeat(np.arange(docs, dtype=np.int64) * k, per_doc)
        cell += ((h >> np.uint64(32)) * np.uint64(k) >> np.uint64(32)).astype(np.int64)  # the bin: high bits
        out = np.full(docs * k, _U32_MAX, dtype=np.uint32)
        np.minimum.at(out, cell, (h & _MASK32).astype(np.uint32))  # the value: low bits
        filled = np.zeros(docs * k, dtype=bool)
        filled[cell] = True
        empty = np.flatnonzero(~filled)
        for step in range(k - 1):
            if not len(empty):
                break
            source = empty - empty % k + self.probes[empty % k, step]
            found = filled[source]
            out[empty[found]] = out[source[found]]
            empty = empty[~found]
        return out.reshape(docs, k)


def text_batches(texts: Sequence[str], docs: int, chars: int):
    """Consecutive slices of `texts` with at most `docs` documents and, past the first
    document, `chars` characters: batch arrays (and the cached powers) stay small
    whatever the documents' lengths."""
    start = 0
    while start < len(texts):
        end, size = start + 1, len(texts[start])
        while end < len(texts) and end - start < docs and size + len(texts[end]) <= chars:
            size += len(texts[end])
            end += 1
        yield start, end
        start = end


def signatures(texts: Sequence[str], num_perm: int = 128, ngram: int = 5, seed: int = 1,
               batch: int = 256, batch_chars: int = 1 << 20) -> np.ndarray:
    """MinHash signatures of `texts`, shape (len(texts), num_perm), dtype uint32."""
    perm = OnePermutation(num_perm, seed)
    out = np.empty((len(texts), num_perm), dtype=np.uint32)
    for start, end in text_batches(texts, batch, batch_chars):
        words, counts = word_hashes(texts[start:end])
        shingles, offsets = shingle_hashes(words, counts, ngram)
        out[start:end] = perm.sign(shingles, offsets)
    return out


_SHARED: Sequence[str] = ()  # the texts forked workers sign, set while they are forked
_FORKING = threading.Lock()


def _sign_range(args) -> np.ndarray:
    start, end, num_perm, ngram, seed = args
    return signatures(_SHARED[start:end], num_perm, ngram, seed)


def _sign_texts(args) -> np.ndarray:
    texts, num_perm, ngram, seed = args
    return signatures(texts, num_perm, ngram, seed)


@contextlib.contextmanager
def signing(texts: Sequence[str], num_perm: int = 128, ngram: int = 5, seed: int = 1,
            workers: int = 2, chunk: int = 4096) -> Iterator[Callable[[], np.ndarray]]:
    """Start signing `texts` in `workers` processes and give a function that waits for
    the signatures, so the caller can do its own setup meanwhile; leaving the block
    stops the workers. Where processes fork, the workers are forked with the texts
    already in memory and are sent only ranges: pickling 100 MB of text to them cost
    this process more than a core's share of the signing. With one worker, or one
    chunk of work, the signing happens in this process when the function is called."""
    global _SHARED
    starts = range(0, len(texts), chunk)
    if workers <= 1 or len(starts) <= 1:
        yield lambda: signatures(texts, num_perm, ngram, seed)
        return
    forking = "fork" in multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if forking else None)
    if forking:
        jobs = [(_sign_range, (i, i + chunk, num_perm, ngram, seed)) for i in starts]
    else:
        jobs = [(_sign_texts, (list(texts[i: i + chunk]), num_perm, ngram, seed)) for i in starts]
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        # A forking pool forks all its workers at the first submit: until then no other
        # signing (another thread's) may change the texts they are forked with.
        with _FORKING:
            _SHARED = texts
            try:
                pending = [pool.submit(function, args) for function, args in jobs]
            finally:
                _SHARED = ()
        try:
            yield lambda: np.concatenate([p.result() for p in pending])
        finally:
            for p in pending:
                p.cancel()
