"""Surface statistics of two sets of texts: lengths, distinct-n, over-used phrases, and
the distance between two distributions.

Words are runs of letters and digits, lower-cased. Distances between two distributions
of one number (length, a record's distinct-n share) are given twice:
- `wasserstein`: the earth mover's distance (Wasserstein-1) between the two empirical
  distributions, in the number's own unit (words; a share): how far, on average, one
  side's values must move to become the other's;
- `js_distance`: the Jensen-Shannon distance (base 2, so 0 = same, 1 = disjoint) between
  the two histograms over shared bins, the bins the report draws.
"""

from __future__ import annotations

import collections
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

NGRAM_SIZES = (1, 2, 3)
BINS = 20
PHRASE_N = 2  # phrases are word bigrams
PHRASE_MIN_COUNT = 5  # uses on one side before a phrase can be called over- or under-used
PHRASES_SHOWN = 12

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> Iterable[tuple[str, ...]]:
    return zip(*(tokens[i:] for i in range(n)))


def record_distinct(tokens: list[str], n: int) -> float | None:
    """The share of a record's n-grams that are distinct (1 = no n-gram repeats); None when it has none."""
    grams = list(ngrams(tokens, n))
    return len(set(grams)) / len(grams) if grams else None


def corpus_distinct(token_lists: list[list[str]], n: int) -> float:
    """distinct-n of Li et al. 2016: distinct n-grams over all n-grams of the set. It falls
    as a set grows, so it is only compared between sets of the same size."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for tokens in token_lists:
        for gram in ngrams(tokens, n):
            seen.add(gram)
            total += 1
    return len(seen) / total if total else 0.0


def summary(counts: Mapping[float, int]) -> dict[str, float]:
    values, weights = _arrays(counts)
    if not len(values):
        return {"count": 0}
    cumulative = np.cumsum(weights) / weights.sum()

    def quantile(q: float) -> float:
        return float(values[min(len(values) - 1, int(np.searchsorted(cumulative, q)))])

    return {"count": int(weights.sum()), "mean": _round(float(np.average(values, weights=weights))),
            "p10": quantile(0.1), "median": quantile(0.5), "p90": quantile(0.9), "max": float(values[-1])}


def compare_distributions(a: Mapping[float, int], b: Mapping[float, int], labels: tuple[str, str]) -> dict[str, Any]:
    """Both summaries, the Wasserstein-1 and Jensen-Shannon distances, and the shared
    histogram (bin edges and each side's share per bin)."""
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import wasserstein_distance

    out: dict[str, Any] = {labels[0]: summary(a), labels[1]: summary(b)}
    (av, aw), (bv, bw) = _arrays(a), _arrays(b)
    if not len(av) or not len(bv):
        return out
    edges = shared_edges(a, b)
    shares = [_shares(av, aw, edges), _shares(bv, bw, edges)]
    out["wasserstein"] = _round(float(wasserstein_distance(av, bv, aw, bw)))
    js = float(jensenshannon(shares[0], shares[1], base=2))
    out["js_distance"] = _round(0.0 if math.isnan(js) else js)
    out["histogram"] = {"edges": [_round(e) for e in edges],
                        labels[0]: [_round(s) for s in shares[0]], labels[1]: [_round(s) for s in shares[1]]}
    return out


def shared_edges(a: Mapping[float, int], b: Mapping[float, int], bins: int = BINS) -> list[float]:
    """`bins` even bins over both sides' values from the lowest to the 99th percentile of the
    pooled values (the few beyond it fall in the last bin, so a long tail does not squeeze
    every other value into one bin)."""
    pooled = collections.Counter(a)
    pooled.update(b)
    values, weights = _arrays(pooled)
    cumulative = np.cumsum(weights) / weights.sum()
    lo = float(values[0])
    hi = float(values[min(len(values) - 1, int(np.searchsorted(cumulative, 0.99)))])
    if hi <= lo:
        hi = float(values[-1]) if values[-1] > lo else lo + 1
    return list(np.linspace(lo, hi, bins + 1))


def _shares(values: np.ndarray, weights: np.ndarray, edges: list[float]) -> np.ndarray:
    index = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    totals = np.bincount(index, weights=weights, minlength=len(edges) - 1)
    return totals / totals.sum()


def phrases(synthetic: list[list[str]], reference: list[list[str]], n: int = PHRASE_N) -> dict[str, list[dict]]:
    """Word n-grams one side uses far more than the other (same-size samples): ranked by
    the log ratio of their counts, each +1 so a phrase absent from one side has a finite
    ratio; only phrases used at least PHRASE_MIN_COUNT times on the side that uses them more."""
    counts = [collections.Counter(g for tokens in side for g in ngrams(tokens, n)) for side in (synthetic, reference)]
    scored = []
    for gram in counts[0].keys() | counts[1].keys():
        s, r = counts[0][gram], counts[1][gram]
        if max(s, r) >= PHRASE_MIN_COUNT:
            scored.append((math.log((s + 1) / (r + 1)), " ".join(gram), s, r))
    scored.sort(key=lambda t: (-t[0], t[1]))
    over = [t for t in scored if t[0] >= math.log(2)][:PHRASES_SHOWN]
    under = [t for t in reversed(scored) if t[0] <= -math.log(2)][:PHRASES_SHOWN]
    return {kind: [{"phrase": p, "synthetic": s, "reference": r, "ratio": _round((s + 1) / (r + 1))}
                   for _, p, s, r in rows] for kind, rows in (("over", over), ("under", under))}


def _arrays(counts: Mapping[float, int]) -> tuple[np.ndarray, np.ndarray]:
    keys = sorted(counts)
    return np.array(keys, dtype=float), np.array([counts[k] for k in keys], dtype=float)


def _round(x: float) -> float:
    return round(x, 4)
