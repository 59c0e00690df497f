"""Diversity selection over unit-length embeddings: a similarity threshold walk, and k-center.

Both work on blocks of rows with matrix products, never one vector at a time: picking
10,000 of 100,000 384-d vectors compares every row with every pick (about 4e11
multiply-adds for k-center), which is seconds as a matrix product and minutes as a
Python loop. Similarities are cosines (dot products of normalised rows).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Elements of one temporary similarity block (rows x columns): 32M float32 is 128 MiB.
BLOCK_ELEMENTS = 32 * 2**20


@dataclass
class Selection:
    kept: np.ndarray        # indices of the kept rows, in the order they were picked
    nearest: np.ndarray     # for every row: index of its most similar kept row (itself when kept)
    similarity: np.ndarray  # for every row: cosine similarity to that row, float32-exact
    too_similar: np.ndarray  # bool per row: dropped for the threshold (not merely for the budget)


class Products:
    """Similarity products that give the same answers on every machine, at float32 speed.

    A float32 product's last bits depend on the summation order, which a thread count,
    a BLAS or a CPU changes; a decision taken on them (the nearest of two rows, a pick
    at a threshold) could differ from one machine to another. So every value that is
    compared or reported is exact: a float64 dot product rounded to float32 (an order
    change moves a float64 sum by about 1e-16, which the rounding removes). float32
    products only find the candidates: the best column of each row is recomputed
    exactly, and a row whose two best columns are within MARGIN in float32 (its float32
    error is about 1e-6) is recomputed exactly against all of them (ties: lowest index).
    """

    MARGIN = 1e-4

    def __init__(self, x: np.ndarray):
        import torch

        self.torch = torch
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        self.fast = torch.from_numpy(self.x)

    def exact(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """float32-rounded float64 similarities of the rows `rows` with the rows `cols`."""
        return (self.x[rows].astype(np.float64) @ self.x[cols].astype(np.float64).T).astype(np.float32)

    def best(self, columns: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """For every row (or those in `rows`): (max similarity to the rows `columns`,
        position in `columns` of that row), both exact."""
        values, where = self.top(self.x[np.asarray(columns, dtype=np.int64)], 1, rows)
        return values[:, 0], where[:, 0]

    def top(self, vectors: np.ndarray, count: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """For every row (or those in `rows`): the `count` most similar of `vectors` (rows of
        x, or others: k-means centroids), as (similarities, positions in `vectors`), most
        similar first, ties by lowest position; exact, so the same on every machine. A row
        whose float32 top `count + 1` are not all MARGIN apart is recomputed exactly."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        count = min(count, len(vectors))
        every = rows is None
        rows = np.arange(len(self.x)) if every else np.asarray(rows, dtype=np.int64)
        cols = self.torch.from_numpy(vectors).T.contiguous()
        values = np.empty((len(rows), count), dtype=np.float32)
        where = np.empty((len(rows), count), dtype=np.int64)
        # Rows per block: their products with every vector, and a vector gathered for each
        # (pair_with below), each within BLOCK_ELEMENTS.
        step = max(256, BLOCK_ELEMENTS // max(1, len(vectors), vectors.shape[1]))
        for start in range(0, len(rows), step):
            part = rows[start: start + step]
            lhs = self.fast[start: start + step] if every else self.fast[self.torch.from_numpy(part)]
            top = (lhs @ cols).topk(min(count + 1, len(vectors)), dim=1)
            pos = top.indices[:, :count].numpy().copy()
            gaps = (top.values[:, :-1] - top.values[:, 1:]).numpy()
            unsure = (gaps < self.MARGIN).any(axis=1) if gaps.shape[1] else np.zeros(len(part), dtype=bool)
            for i in np.flatnonzero(unsure):
                exact = (self.x[part[i]].astype(np.float64) @ vectors.astype(np.float64).T).astype(np.float32)
                pos[i] = np.argsort(-exact, kind="stable")[:count]  # equal maxima: the lowest position first
            for j in range(count):
                values[start: start + len(part), j] = self.pair_with(part, vectors[pos[:, j]])
            where[start: start + len(part)] = pos
        return values, where

    def pair(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """float32 similarity of each (rows[i], cols[i]) pair."""
        step = 16_384
        return np.concatenate([self.pair_with(rows[s: s + step], self.x[cols[s: s + step]])
                               for s in range(0, len(rows), step)] or [np.empty(0, np.float32)])

    def pair_with(self, rows: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """float32-rounded float64 similarity of each row rows[i] with vectors[i]."""
        out = np.empty(len(rows), dtype=np.float32)
        step = 16_384  # float64 copies of this many rows at a time
        for start in range(0, len(rows), step):
            a = self.x[rows[start: start + step]].astype(np.float64)
            b = vectors[start: start + step].astype(np.float64)
            out[start: start + len(a)] = np.einsum("ij,ij->i", a, b)  # rounded to float32 on the way in
        return out


def _finish(x: np.ndarray, products: Products, kept: list[int], nearest: np.ndarray | None,
            too_similar: np.ndarray) -> Selection:
    kept_arr = np.asarray(kept, dtype=np.int64)
    if nearest is None:
        _, pos = products.best(kept_arr)
        nearest = kept_arr[pos]
    nearest = nearest.copy()
    nearest[kept_arr] = kept_arr
    similarity = products.pair(np.arange(len(x)), nearest)
    return Selection(kept_arr, nearest, similarity, too_similar)


def threshold_select(x: np.ndarray, order: np.ndarray, threshold: float, budget: int | None,
                     block: int = 1024, nearest: bool = True) -> Selection:
    """Walk rows in `order`; keep one unless it is at least `threshold`-similar to a kept row.

    Stops at `budget` kept rows (DEITA's score-first selection when `order` is by score).
    Exact: each block of candidates is compared with everything kept before it in one
    product, and with the block's own earlier picks one by one. Without `nearest`, only
    `kept` and `too_similar` are filled (a caller that finds the nearest kept itself).
    """
    n = len(x)
    budget = n if budget is None else min(budget, n)
    products = Products(x)
    margin = Products.MARGIN
    kept: list[int] = []
    too_similar = np.zeros(n, dtype=bool)
    for start in range(0, n, block):
        if len(kept) >= budget:
            break
        idx = np.ascontiguousarray(order[start: start + block], dtype=np.int64)
        vecs = products.x[idx]
        # float32 for speed; exact where a decision is within the margin of the threshold.
        earlier = (vecs @ products.x[kept].T).max(axis=1) if kept else np.full(len(idx), -np.inf, np.float32)
        inside = vecs @ vecs.T
        picked: list[int] = []  # positions within this block
        for j in range(len(idx)):
            best = earlier[j]
            if picked:
                best = max(best, inside[j, picked].max())
            if abs(best - threshold) < margin:
                best = products.exact(idx[j: j + 1], np.asarray(kept, dtype=np.int64))[0].max() if kept else -np.inf
            if best >= threshold:
                too_similar[idx[j]] = True
                continue
            picked.append(j)
            kept.append(int(idx[j]))
            if len(kept) >= budget:
                break
    if not nearest:
        return Selection(np.asarray(kept, dtype=np.int64), np.empty(0, np.int64), np.empty(0, np.float32), too_similar)
    return _finish(x, products, kept, None, too_similar)


def kcenter_select(x: np.ndarray, budget: int, first: int = 0, round_size: int = 256) -> Selection:
    """Greedy k-center (max-min distance): each pick is the row least similar to all picks so far.

    Picks come in rounds: the `2 * round_size` rows least similar to the picks so far are
    the candidates, and picks are taken from them greedily (their mutual similarities are
    one small product) for as long as the best candidate is at least as far as any row
    outside the set can be; then every row is updated against the round's picks at once.
    The result is the sequential greedy's, at the cost of a few large products.
    """
    n = len(x)
    budget = min(budget, n)
    products = Products(x)
    maxsim = np.full(n, -np.inf, dtype=np.float32)
    nearest = np.zeros(n, dtype=np.int64)
    taken = np.zeros(n, dtype=bool)
    kept = [first]
    taken[first] = True
    pending = [first]
    while True:
        values, pos = products.best(np.asarray(pending))
        closer = values > maxsim
        maxsim[closer] = values[closer]
        nearest[closer] = np.asarray(pending)[pos[closer]]
        maxsim[taken] = np.inf
        if len(kept) >= budget:
            break
        pending = []
        m = min(n - len(kept), 2 * round_size)
        cand = np.argpartition(maxsim, m - 1)[:m]
        # Any row outside the candidates is at least this similar to a pick already.
        bound = maxsim[cand].max() if m < n - len(kept) else np.inf
        current = maxsim[cand].astype(np.float32)
        mutual = products.exact(cand, cand)
        while len(kept) < budget and len(pending) < round_size:
            j = int(np.argmin(current))
            if not current[j] <= bound:  # an outside row might now be farther: update everything first
                break
            row = int(cand[j])
            kept.append(row)
            pending.append(row)
            taken[row] = True
            np.maximum(current, mutual[j], out=current)
            current[j] = np.inf
        if not pending:  # cannot happen (the first candidate is always within the bound); be safe
            row = int(cand[int(np.argmin(current))])
            kept.append(row)
            pending.append(row)
            taken[row] = True
    return _finish(x, products, kept, nearest, np.zeros(n, dtype=bool))
