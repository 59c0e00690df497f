"""Spherical k-means over unit-length embeddings that gives the same clusters everywhere.

Why our own, not scikit-learn's or faiss's: their assignments and centroid sums are
float32 reductions whose last bits follow the thread count (OpenMP chunks, BLAS), so a
record near a boundary can land in another cluster on another machine, and the
diversity selection built on the clusters would differ. Here every decision is exact:
assignments go through `Products.top` (float32 to find candidates, float64 rounded to
float32 to decide, ties to the lowest cluster), and centroid sums are float64 over a
fixed chunking, rounded to float32. Training follows faiss's practice: Lloyd's
iterations on a seeded sample of at most TRAIN_PER_CLUSTER records a cluster, started
from seeded sample records (Forgy: they follow the data's density, so clusters come out
of similar sizes, which bounds the work per cluster); then every record is assigned once.

`factory compare` keeps scikit-learn's Euclidean k-means for MAUVE and its topics
(factory/compare/metrics.py says why): a different algorithm on a different space, not
this one written twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from filters.diversity.select import Products

TRAIN_PER_CLUSTER = 256  # sample records per cluster that the centroids are trained on
ITERATIONS = 12          # Lloyd's iterations at most (it stops earlier when nothing moves)
SUM_CHUNK = 65_536       # rows summed in float64 at a time


@dataclass
class Clusters:
    centroids: np.ndarray  # k x dim, unit length, float32
    labels: np.ndarray     # the cluster of every record
    probes: np.ndarray     # records x probes: each record's next nearest clusters, nearest first


def train(x: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """k unit-length centroids for the rows of `x` (k at most the number of rows)."""
    n = len(x)
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, k * TRAIN_PER_CLUSTER), replace=False))
    train_x = np.ascontiguousarray(x[sample], dtype=np.float32)
    products = Products(train_x)
    centroids = train_x[np.sort(rng.choice(len(train_x), size=k, replace=False))]
    labels = None
    for _ in range(ITERATIONS):
        similarity, nearest = products.top(centroids, 1)
        new_labels = nearest[:, 0]
        if labels is not None and np.array_equal(new_labels, labels):
            break
        labels = new_labels
        centroids = _means(train_x, labels, k, similarity[:, 0], centroids)
    return centroids


def assign(x: np.ndarray, centroids: np.ndarray, probes: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's nearest centroid and its `probes` next nearest (exact, ties to the lowest)."""
    _, nearest = Products(x).top(centroids, 1 + probes)
    return nearest[:, 0], nearest[:, 1:]


def _means(x: np.ndarray, labels: np.ndarray, k: int, similarity: np.ndarray, old: np.ndarray) -> np.ndarray:
    """The normalised mean of each cluster's rows; an empty cluster takes the row least
    similar to its own centroid (the worst-served one), each empty cluster another row."""
    sums = np.zeros((k, x.shape[1]), dtype=np.float64)
    for start in range(0, len(x), SUM_CHUNK):
        chunk = slice(start, start + SUM_CHUNK)
        np.add.at(sums, labels[chunk], x[chunk].astype(np.float64))
    counts = np.bincount(labels, minlength=k)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        worst = np.lexsort((np.arange(len(x)), similarity))[: len(empty)]  # least similar first, then lowest index
        sums[empty[: len(worst)]] = x[worst]
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    out = np.where(norms > 0, sums / np.where(norms > 0, norms, 1), old)
    return out.astype(np.float32)
