"""Distances between two same-size sets of sentence embeddings.

- precision, recall, density, coverage: Naeem et al. 2020, "Reliable Fidelity and
  Diversity Metrics for Generative Models" (the definitions of their `prdc` package),
  with the reference as the real set. Distances are Euclidean between unit vectors, so
  nearest by distance is nearest by cosine. Computed a block of rows at a time: memory
  grows with the sample, not with its square.
- MAUVE: Pillutla et al. 2021, from the paper's definition (the reference package is
  GPL-3.0 and pulls in faiss; this one needs only scikit-learn): both sets are reduced
  by PCA to 90% of the variance, quantised together by k-means into n/10 buckets, and
  MAUVE is the area under the divergence frontier exp(-c KL) of the two histograms, c = 5.
- Vendi score: Friedman and Dieng 2023, the exponential of the entropy of the
  eigenvalues of the cosine-similarity matrix over n, from the d x d dual (n x n never forms).

Callers run these on one thread (measure.py): scikit-learn's k-means sums its threads'
partial centroids in the order they finish, so more threads could move a borderline
point from one run to the next.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MAUVE_SCALING = 5.0  # c of the paper
MAUVE_EXPLAINED_VARIANCE = 0.9
MAUVE_MIXTURES = 25  # points on the divergence frontier
KMEANS_RESTARTS = 5
KMEANS_MAX_ITER = 500
DISTANCE_MEMORY_MB = 256  # a block of the distance matrix at a time


def prdc(reference: np.ndarray, synthetic: np.ndarray, k: int) -> dict[str, float]:
    """Precision, recall, density and coverage of `synthetic` against `reference` (Naeem et al.)."""
    from sklearn.metrics import pairwise_distances_chunked

    real_radii = knn_radii(reference, k)
    fake_radii = knn_radii(synthetic, k)
    in_real_ball = np.zeros(len(synthetic), dtype=bool)  # precision: a synthetic point near the reference
    real_balls_hit = np.zeros(len(synthetic), dtype=np.int64)  # density: how many reference balls hold it
    recalled = np.zeros(len(reference), dtype=bool)  # recall: a reference point near the synthetic set
    covered = np.zeros(len(reference), dtype=bool)  # coverage: a reference ball that holds a synthetic point
    start = 0
    for block in pairwise_distances_chunked(reference, synthetic, working_memory=DISTANCE_MEMORY_MB):
        rows = slice(start, start + len(block))
        inside = block < real_radii[rows, None]
        in_real_ball |= inside.any(axis=0)
        real_balls_hit += inside.sum(axis=0)
        recalled[rows] = (block < fake_radii[None, :]).any(axis=1)
        covered[rows] = block.min(axis=1) < real_radii[rows]
        start += len(block)
    return {"precision": float(in_real_ball.mean()), "recall": float(recalled.mean()),
            "density": float(real_balls_hit.sum() / (k * len(synthetic))), "coverage": float(covered.mean())}


def knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Each point's distance to its k-th nearest neighbour, itself not counted (itself is at 0)."""
    from sklearn.metrics import pairwise_distances_chunked

    blocks = pairwise_distances_chunked(x, working_memory=DISTANCE_MEMORY_MB,
                                        reduce_func=lambda d, _: np.partition(d, k, axis=1)[:, k])
    return np.concatenate(list(blocks))


def vendi(x: np.ndarray) -> float:
    """The Vendi score of unit vectors `x` under the cosine kernel: the effective number of
    distinct items, from 1 (all alike) to len(x) (all orthogonal)."""
    x = x.astype(np.float64)
    eigenvalues = np.linalg.eigvalsh(x.T @ x / len(x))
    p = eigenvalues[eigenvalues > 1e-12]
    return float(np.exp(-(p * np.log(p)).sum()))


def mauve(synthetic: np.ndarray, reference: np.ndarray, seed: int) -> dict[str, Any]:
    from sklearn.decomposition import PCA

    buckets = max(2, round(min(len(synthetic), len(reference)) / 10))
    data = np.vstack([reference, synthetic]).astype(np.float64)
    data /= np.linalg.norm(data, axis=1, keepdims=True).clip(min=1e-12)
    pca = PCA(random_state=seed + 1).fit(data)
    dims = int(np.argmax(np.cumsum(pca.explained_variance_ratio_) >= MAUVE_EXPLAINED_VARIANCE)) + 1
    labels = kmeans(pca.transform(data)[:, :dims].astype(np.float32), buckets, seed + 2, KMEANS_RESTARTS).labels_
    q = np.bincount(labels[:len(reference)], minlength=buckets) / len(reference)
    p = np.bincount(labels[len(reference):], minlength=buckets) / len(synthetic)
    return {"mauve": mauve_of_histograms(p, q), "buckets": buckets, "pca_dims": dims, "scaling": MAUVE_SCALING}


def mauve_of_histograms(p: np.ndarray, q: np.ndarray, scaling: float = MAUVE_SCALING) -> float:
    """The area under the divergence frontier {(exp(-c KL(q|r)), exp(-c KL(p|r))) : r = w p + (1-w) q},
    closed by its end points (0, 1) and (1, 0); 1 when p == q, near 0 when they do not overlap."""
    from sklearn.metrics import auc

    points = [(0.0, 1.0)]
    for w in np.linspace(1e-6, 1 - 1e-6, MAUVE_MIXTURES):
        r = w * p + (1 - w) * q
        points.append((np.exp(-scaling * _kl(q, r)), np.exp(-scaling * _kl(p, r))))
    points.append((1.0, 0.0))
    x, y = np.array(points).T
    # The frontier falls from (0, 1) to (1, 0): walked along x with ties by falling y (and
    # along y with ties by falling x), the area is taken both ways round and averaged, as
    # the paper's code does. Ties are real: for p == q every mixture gives (1, 1).
    by_x, by_y = np.lexsort((-y, x)), np.lexsort((-x, y))
    return float(0.5 * (auc(x[by_x], y[by_x]) + auc(y[by_y], x[by_y])))


def _kl(a: np.ndarray, b: np.ndarray) -> float:
    if np.any((a > 0) & (b == 0)):
        return float("inf")
    both = (a > 0) & (b > 0)
    return float(np.sum(a[both] * np.log(a[both] / b[both])))


def kmeans(x: np.ndarray, k: int, seed: int, restarts: int):
    """A fitted scikit-learn KMeans (the same for the same data and seed, on one thread).

    Not the diversity stage's k-means (filters/diversity/kmeans.py), on purpose: MAUVE is
    defined with Euclidean k-means (k-means++ seeding, the best of several restarts, run to
    convergence) over PCA coordinates that are not unit length, as the paper's code does,
    and the topics take their centres from it too; that one is spherical (cosine, unit
    centroids), trained on a sample with a few Lloyd's iterations and made exact across
    thread counts for millions of records, so it would give other buckets and other MAUVE
    values. Here the samples are small (thousands) and run on one thread."""
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=restarts, max_iter=KMEANS_MAX_ITER, random_state=seed).fit(x)
