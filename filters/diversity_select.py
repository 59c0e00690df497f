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
    """Similarity products, in bfloat16 where the CPU does it natively (2.5x faster here).

    bfloat16 keeps about three significant digits: enough to rank candidates for
    k-center, where near-ties are interchangeable. Threshold decisions and every
    similarity that is reported are computed in float32.
    """

    def __init__(self, x: np.ndarray, fast: bool = True):
        import torch

        self.torch = torch
        self.x = x
        self.exact = torch.from_numpy(x)
        use_bf16 = fast and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        self.fast = self.exact.to(torch.bfloat16) if use_bf16 else self.exact

    def best(self, columns: np.ndarray, fast: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """For every row: (max similarity to the rows `columns`, position in `columns` of that row)."""
        source = self.fast if fast else self.exact
        cols = source[self.torch.from_numpy(np.ascontiguousarray(columns))].T.contiguous()
        n = source.shape[0]
        values = np.empty(n, dtype=np.float32)
        where = np.empty(n, dtype=np.int64)
        rows = max(256, BLOCK_ELEMENTS // max(1, len(columns)))
        for start in range(0, n, rows):
            block = source[start: start + rows] @ cols
            v, i = block.max(dim=1)
            values[start: start + len(v)] = v.float().numpy()
            where[start: start + len(v)] = i.numpy()
        return values, where

    def pair(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """float32 similarity of each (rows[i], cols[i]) pair."""
        out = np.empty(len(rows), dtype=np.float32)
        step = 16_384
        for start in range(0, len(rows), step):
            a = self.x[rows[start: start + step]]
            b = self.x[cols[start: start + step]]
            out[start: start + len(a)] = np.einsum("ij,ij->i", a, b)
        return out


def _finish(x: np.ndarray, products: Products, kept: list[int], nearest: np.ndarray | None,
            too_similar: np.ndarray) -> Selection:
    kept_arr = np.asarray(kept, dtype=np.int64)
    if nearest is None:
        # Which kept row is nearest may differ from float32 on a near-tie; the similarity
        # reported for it is float32 either way.
        _, pos = products.best(kept_arr, fast=True)
        nearest = kept_arr[pos]
    nearest = nearest.copy()
    nearest[kept_arr] = kept_arr
    similarity = products.pair(np.arange(len(x)), nearest)
    return Selection(kept_arr, nearest, similarity, too_similar)


def threshold_select(x: np.ndarray, order: np.ndarray, threshold: float, budget: int | None,
                     block: int = 1024) -> Selection:
    """Walk rows in `order`; keep one unless it is at least `threshold`-similar to a kept row.

    Stops at `budget` kept rows (DEITA's score-first selection when `order` is by score).
    Exact: each block of candidates is compared with everything kept before it in one
    product, and with the block's own earlier picks one by one.
    """
    n = len(x)
    budget = n if budget is None else min(budget, n)
    products = Products(x)
    kept: list[int] = []
    kept_vecs = np.empty((budget, x.shape[1]), dtype=np.float32)
    too_similar = np.zeros(n, dtype=bool)
    for start in range(0, n, block):
        if len(kept) >= budget:
            break
        idx = order[start: start + block]
        vecs = x[idx]
        earlier = vecs @ kept_vecs[: len(kept)].T if kept else np.full((len(idx), 1), -np.inf, np.float32)
        best_earlier = earlier.max(axis=1)
        inside = vecs @ vecs.T
        picked: list[int] = []  # positions within this block
        for j in range(len(idx)):
            best = best_earlier[j]
            if picked:
                best = max(best, inside[j, picked].max())
            if best >= threshold:
                too_similar[idx[j]] = True
                continue
            picked.append(j)
            kept_vecs[len(kept)] = vecs[j]
            kept.append(int(idx[j]))
            if len(kept) >= budget:
                break
    return _finish(x, products, kept, None, too_similar)


def kcenter_select(x: np.ndarray, budget: int, first: int = 0, round_size: int = 256, fast: bool = True) -> Selection:
    """Greedy k-center (max-min distance): each pick is the row least similar to all picks so far.

    Picks come in rounds: the `2 * round_size` rows least similar to the picks so far are
    the candidates, and picks are taken from them greedily (their mutual similarities are
    one small product) for as long as the best candidate is at least as far as any row
    outside the set can be; then every row is updated against the round's picks at once.
    The result is the sequential greedy's, at the cost of a few large products.
    """
    n = len(x)
    budget = min(budget, n)
    products = Products(x, fast=fast)
    maxsim = np.full(n, -np.inf, dtype=np.float32)
    nearest = np.zeros(n, dtype=np.int64)
    taken = np.zeros(n, dtype=bool)
    kept = [first]
    taken[first] = True
    pending = [first]
    while True:
        values, pos = products.best(np.asarray(pending), fast=True)
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
        vecs = products.fast[products.torch.from_numpy(cand)]
        mutual = (vecs @ vecs.T).float().numpy()
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
