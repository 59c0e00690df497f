"""Topic clusters over both sides: which the synthetic side has too much or too little of.

Both same-size samples are clustered together (k-means over the embeddings). With the
sides the same size, a cluster the two share evenly holds about as many of each; a
cluster is `over` (or `under`) represented when the synthetic side has at least
RATIO times as many (or as few) records there and a two-sided binomial test of its
counts against an even split gives p < 0.05 / clusters (Bonferroni). Each cluster is
named by its most distinctive words (class-based TF-IDF, as BERTopic labels topics)
and shown with the records of each side nearest its centre.
"""

from __future__ import annotations

import collections
import math
from typing import Any

import numpy as np

from factory.compare.metrics import kmeans
from factory.compare.text_stats import words

MAX_TOPICS = 20
RATIO = 1.5
ALPHA = 0.05
LABEL_WORDS = 4
EXAMPLES = 3
EXAMPLE_CHARS = 300


def default_topics(sample: int) -> int:
    """About sqrt(2n)/2 clusters for n records a side (10 for 200), between 2 and MAX_TOPICS."""
    return int(min(MAX_TOPICS, max(2, round(math.sqrt(2 * sample) / 2))))


def topic_clusters(synthetic: np.ndarray, reference: np.ndarray, synthetic_texts: list[str],
                   reference_texts: list[str], k: int, seed: int) -> list[dict[str, Any]]:
    """One entry per cluster, the most over-represented first."""
    from scipy.stats import binomtest

    data = np.vstack([synthetic, reference])
    texts = synthetic_texts + reference_texts
    fitted = kmeans(data, k, seed + 3, restarts=4)
    labels = fitted.labels_
    n_syn = len(synthetic)
    is_syn = np.arange(len(data)) < n_syn
    names = _names(texts, labels, k)
    clusters = []
    for c in range(k):
        members = np.flatnonzero(labels == c)
        if not len(members):
            continue
        s = int(is_syn[members].sum())
        r = len(members) - s
        p_value = float(binomtest(s, s + r, n_syn / len(data)).pvalue)
        ratio = (s / n_syn + 0.5 / n_syn) / (r / len(reference) + 0.5 / len(reference))
        significant = p_value < ALPHA / k
        status = "over" if significant and ratio >= RATIO else "under" if significant and ratio <= 1 / RATIO else "balanced"
        distance = np.linalg.norm(data[members] - fitted.cluster_centers_[c], axis=1)
        nearest = members[np.argsort(distance, kind="stable")]
        clusters.append({
            "label": ", ".join(names[c]),
            "words": names[c],
            "synthetic": s, "reference": r,
            "synthetic_share": round(s / n_syn, 4), "reference_share": round(r / len(reference), 4),
            "ratio": round(ratio, 3), "p_value": float(f"{p_value:.3g}"), "status": status,
            "examples": {
                "synthetic": [_clip(texts[i]) for i in nearest if is_syn[i]][:EXAMPLES],
                "reference": [_clip(texts[i]) for i in nearest if not is_syn[i]][:EXAMPLES],
            },
        })
    clusters.sort(key=lambda t: (-(t["synthetic_share"] - t["reference_share"]), t["label"]))
    for number, cluster in enumerate(clusters, 1):
        cluster["topic"] = number
    return clusters


def _names(texts: list[str], labels: np.ndarray, k: int) -> list[list[str]]:
    """Each cluster's LABEL_WORDS most distinctive words: c-TF-IDF, a word's share of the
    cluster's words times log(1 + average words per cluster / the word's count in all)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    per_cluster = [collections.Counter() for _ in range(k)]
    for text, c in zip(texts, labels):
        per_cluster[c].update(w for w in words(text) if len(w) > 2 and not w.isdigit() and w not in ENGLISH_STOP_WORDS)
    overall = collections.Counter()
    for counts in per_cluster:
        overall.update(counts)
    average = sum(overall.values()) / max(1, sum(1 for c in per_cluster if c))
    names = []
    for counts in per_cluster:
        size = sum(counts.values()) or 1
        scored = sorted(counts, key=lambda w: (-(counts[w] / size) * math.log(1 + average / overall[w]), w))
        names.append(scored[:LABEL_WORDS])
    return names


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 1] + "\u2026"
