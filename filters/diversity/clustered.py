"""Diversity selection that scales: cluster the embeddings, select within each cluster.

The exact selections (filters/diversity/select.py) compare every record with every kept
one: O(records x kept) work and the whole matrix in one process. Here spherical k-means
(filters/diversity/kmeans.py) splits the records into clusters of about CLUSTER_RECORDS, and the
exact selection runs inside each cluster, one task per cluster (in this process, or as
Ray tasks), so work and memory per task are bounded by a cluster's size.

`threshold` (score-first walk). Each cluster walks its records in the global walk order,
those within a prefix of that order grown until it holds `budget` keeps (the exact walk
stops at the budget-th keep, often early); the survivors are then checked against the
survivors of each record's `probes` next nearest clusters (the near-duplicates that
straddle a boundary: the error source of any partition), and a walk over those
conflicts in global order drops the later of each kept pair. A record whose only
blocker fell there is revived if nothing kept before it in its neighbourhood is within
the threshold. The budget then takes the first `budget` kept records in the global
order, which is where the exact walk stops too. With no boundary conflict missed (and
no revived record that would have blocked a later one), this is the exact selection:
the exact walk's result is the one set in which every record is kept exactly when no
earlier kept record is within the threshold, and this checks that rule across cluster
boundaries.

`kcenter` (greedy max-min), in two rounds as distributed k-center is done (Malkomes et
al., NeurIPS 2015): each cluster's greedy picks twice its share of the budget, from its
best-scored (or first) record, and the global greedy then picks `budget` among those
candidates, from the same start as the exact one. Merging the clusters' own picks
instead would spend the budget on the clusters' edges (each cluster's farthest records
are at its boundary, where the next cluster's are too), leaving holes elsewhere.

Agreement with the exact selection is estimated on a seeded sample of records, each
compared exactly with every kept record of every cluster (sample x kept work, split in
tasks): the share of sampled records whose decision the exact rule contradicts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from filters.diversity.select import (
    BLOCK_ELEMENTS,
    Products,
    Selection,
    kcenter_select,
    threshold_select,
)
from filters.diversity.kmeans import assign, train

CLUSTER_RECORDS = 10_000         # records per cluster when the count is not given
AUTO_CLUSTERED_RECORDS = 200_000  # `selection: auto` clusters from this many records up
KCENTER_OVERSAMPLE = 2           # picks asked of a cluster: this times its share of the budget

# (function, argument tuples) -> results, in order. The tuples come from a generator, made
# as they are taken: a job's copies of its rows exist while it waits or runs, not all at once.
Runner = Callable[[Callable, Iterable[tuple]], list]


def run_here(fn: Callable, jobs: Iterable[tuple]) -> list:
    """Tasks one after another in this process (each product uses every core)."""
    return [fn(*job) for job in jobs]


def ray_runner(ray: Any, window: int | None = None) -> Runner:
    """Tasks on the Ray cluster, at most `window` in flight (their inputs wait in the
    driver, not all at once in the object store); results in job order."""

    def run(fn: Callable, jobs: Iterable[tuple]) -> list:
        remote = ray.remote(num_cpus=1)(fn)
        limit = window or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        running: dict[Any, int] = {}
        out: dict[int, Any] = {}
        pending = enumerate(jobs)
        more = True
        while more or running:
            while more and len(running) < limit:
                nxt = next(pending, None)
                if nxt is None:
                    more = False
                else:
                    running[remote.remote(*nxt[1])] = nxt[0]
            if running:
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    out[running.pop(ref)] = ray.get(ref)
        return [out[i] for i in range(len(out))]

    return run


def cluster_count(records: int, budget: int | None, method: str, asked: int | None) -> int:
    """The clusters to use: as asked, else about CLUSTER_RECORDS records each; k-center
    needs a pick per cluster, so never more than half the budget."""
    k = asked or max(1, round(records / CLUSTER_RECORDS))
    if method == "kcenter" and budget:
        k = min(k, max(1, budget // 2))
    return max(1, min(k, records))


@dataclass
class Neighbourhoods:
    """Each record's cluster and its `probes` next nearest clusters."""

    labels: np.ndarray
    probes: np.ndarray
    count: int

    def members(self, key: np.ndarray) -> list[np.ndarray]:
        """The records of each cluster, ordered by `key`."""
        order = np.lexsort((key, self.labels))
        return np.split(order, np.cumsum(np.bincount(self.labels, minlength=self.count))[:-1])

    def reaching(self, rows: np.ndarray, probed: bool = True) -> list[np.ndarray]:
        """For each cluster, those of `rows` whose neighbourhood holds it (own, or probed too)."""
        own = np.concatenate([self.labels[rows, None], self.probes[rows]], axis=1) if probed else self.labels[rows, None]
        flat_rows = np.repeat(rows, own.shape[1])
        order = np.argsort(own.ravel(), kind="stable")
        counts = np.bincount(own.ravel(), minlength=self.count)
        return np.split(flat_rows[order], np.cumsum(counts)[:-1])


def partition(x: np.ndarray, clusters: int, probes: int, seed: int, run: Runner) -> Neighbourhoods:
    centroids = train(x, clusters, seed)
    k = len(centroids)
    probes = min(probes, k - 1)
    step = max(1, BLOCK_ELEMENTS // max(1, x.shape[1]))  # rows per assignment task: 128 MiB of them
    parts = run(assign, ((x[s: s + step], centroids, probes) for s in range(0, len(x), step)))
    labels = np.concatenate([p[0] for p in parts])
    near = np.concatenate([p[1] for p in parts]) if probes else np.empty((len(x), 0), dtype=np.int64)
    return Neighbourhoods(labels, near, k)


# -- tasks (module functions, so Ray can ship them) -------------------------------------

def walk_cluster(x: np.ndarray, threshold: float, budget: int | None) -> np.ndarray:
    """The threshold walk of one cluster's rows, given in walk order; the kept positions."""
    return threshold_select(x, np.arange(len(x)), threshold, budget, nearest=False).kept


def kcenter_cluster(x: np.ndarray, budget: int, first: int) -> np.ndarray:
    """Greedy k-center in one cluster: the picks, in order."""
    return kcenter_select(x, budget, first=first).kept


def similar_pairs(a: np.ndarray, b: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions (i in a, j in b) of the pairs at least `threshold` similar, exact."""
    products = Products(np.concatenate([a, b]))
    found_a, found_b = [], []
    step = max(1, BLOCK_ELEMENTS // max(1, len(b)))
    for start in range(0, len(a), step):
        block = a[start: start + step] @ b.T
        i, j = np.nonzero(block >= threshold - Products.MARGIN)
        i = i + start
        exact = products.pair(i, len(a) + j)
        found_a.append(i[exact >= threshold])
        found_b.append(j[exact >= threshold])
    empty = np.empty(0, dtype=np.int64)
    return np.concatenate(found_a or [empty]), np.concatenate(found_b or [empty])


def nearest_before(rows: np.ndarray, row_rank: np.ndarray, cols: np.ndarray, col_rank: np.ndarray,
                   threshold: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For each row: (best similarity to a column ranked before it, that column's
    position), and the same over all columns; -inf and -1 where there is none. Exact
    where it decides something: a near tie for the best, or a best near `threshold`."""
    import torch

    products = Products(np.concatenate([rows, cols]))
    n, offset = len(rows), len(rows)
    out = [np.full(n, -np.inf, np.float32), np.full(n, -1, np.int64), np.full(n, -np.inf, np.float32),
           np.full(n, -1, np.int64)]
    if not len(cols):
        return tuple(out)
    rhs = products.fast[offset:].T.contiguous()
    later_rank = torch.from_numpy(np.ascontiguousarray(col_rank))
    step = max(1, BLOCK_ELEMENTS // len(cols))
    for start in range(0, n, step):
        part = np.arange(start, min(n, start + step))
        block = products.fast[start: start + len(part)] @ rhs
        for slot in (2, 0):
            if slot == 0:  # only the columns ranked before each row
                block = block.masked_fill(later_rank[None, :] >= torch.from_numpy(row_rank[part])[:, None], -np.inf)
            top = block.topk(min(2, len(cols)), dim=1)
            best = top.values[:, 0].numpy()
            pos = top.indices[:, 0].numpy().copy()
            second = top.values[:, 1].numpy() if len(cols) > 1 else np.full(len(part), -np.inf, np.float32)
            has = best > -np.inf
            with np.errstate(invalid="ignore"):
                unsure = has & (best - second < Products.MARGIN)
                if threshold is not None:
                    unsure |= has & (abs(best - threshold) < Products.MARGIN)
            for i in np.flatnonzero(unsure):
                exact = products.exact(part[i: i + 1], offset + np.arange(len(cols)))[0]
                if slot == 0:
                    exact = np.where(col_rank < row_rank[part[i]], exact, -np.inf)
                pos[i] = int(np.argmax(exact))  # the first of equal maxima
            value = products.pair(part, offset + pos)
            out[slot][part] = np.where(has, value, -np.inf)
            out[slot + 1][part] = np.where(has, pos, -1)
    return tuple(out)


# -- the selections --------------------------------------------------------------------

@dataclass
class Clustered:
    selection: Selection
    info: dict[str, Any]  # what the stage reports: clusters, sizes, boundary corrections, agreement


def threshold_clustered(x: np.ndarray, order: np.ndarray, threshold: float, budget: int | None,
                        hoods: Neighbourhoods, run: Runner, sample: int, seed: int) -> Clustered:
    n = len(x)
    budget = n if budget is None else min(budget, n)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    members = hoods.members(rank)
    # The exact walk stops at the budget-th keep, often early in the order; the clusters
    # cannot know where, so they walk a prefix of the order (every decision depends only
    # on earlier records: a prefix's decisions are the whole walk's), longer each round
    # until it holds `budget` keeps.
    limit = n if budget >= n else min(n, budget + budget // 4)
    while True:
        kept, lost, revived = _threshold_prefix(x, rank, limit, members, threshold, budget, hoods, run)
        if kept.sum() >= budget or limit == n:
            break
        limit = min(n, int(limit * max(1.5, 1.1 * budget / max(1, int(kept.sum())))))
    kept_rows = np.flatnonzero(kept)
    kept_rows = kept_rows[np.argsort(rank[kept_rows])]
    cutoff = rank[kept_rows[budget - 1]] if len(kept_rows) >= budget else n  # the walk stops after it
    kept_rows = kept_rows[:budget]
    kept[:] = False
    kept[kept_rows] = True
    # What each dropped record is reported against: its own cluster's kept records, or
    # those of its neighbourhood when none in its cluster explains a drop for the threshold.
    too_similar = ~kept & (rank <= cutoff)
    nearest, similarity = np.arange(n), np.ones(n, dtype=np.float32)  # a kept record is its own nearest
    dropped = np.flatnonzero(~kept)
    before, before_at, near, near_at = _nearest(x, dropped, rank, kept, threshold, hoods, run, probed=False)
    wider = np.flatnonzero(too_similar[dropped] & (before < threshold))
    if len(wider):
        before[wider], before_at[wider], near[wider], near_at[wider] = _nearest(x, dropped[wider], rank, kept,
                                                                                threshold, hoods, run)
    nearest[dropped] = np.where(too_similar[dropped], before_at, near_at)
    similarity[dropped] = np.where(too_similar[dropped], before, near)
    info = {"clusters": hoods.count, "probes": int(hoods.probes.shape[1]), "walked": int(limit),
            # Kept within their cluster, dropped for a kept near-duplicate in a neighbouring one.
            "boundary_dropped": int((rank[lost] <= cutoff).sum()),
            # Dropped within their cluster for a record that fell to the boundary check, kept after all.
            "revived": int(np.isin(revived, kept_rows).sum()),
            "agreement": threshold_agreement(x, kept_rows, rank, cutoff, threshold, run, sample, seed)}
    return Clustered(Selection(kept_rows, nearest, similarity, too_similar), info)


def _threshold_prefix(x: np.ndarray, rank: np.ndarray, limit: int, members: list[np.ndarray], threshold: float,
                      budget: int, hoods: Neighbourhoods, run: Runner) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The clustered walk's keeps among the records ranked below `limit`: (kept flags,
    survivors lost at a boundary, records revived)."""
    n = len(x)
    heads = [m[: int(np.searchsorted(rank[m], limit))] for m in members]  # members are in rank order
    kept_local = run(walk_cluster, ((x[m], threshold, budget) for m in heads))
    survivors = np.sort(np.concatenate([m[k] for m, k in zip(heads, kept_local)]))
    kept = np.zeros(n, dtype=bool)
    kept[survivors] = True
    _resolve(x, survivors, rank, kept, threshold, hoods, run)
    lost = survivors[~kept[survivors]]
    # Revive what fell only with a blocker that fell at a boundary: nothing kept before it in
    # its neighbourhood is close. Only records close to a fallen one can be such.
    hit = np.zeros(n, dtype=bool)
    hit[lost] = True
    suspects = _close_to(x, np.flatnonzero(~kept & ~hit & (rank < limit)), lost, threshold, hoods, run)
    before, _, _, _ = _nearest(x, suspects, rank, kept, threshold, hoods, run)
    revived = suspects[before < threshold]
    kept[revived] = True
    _resolve(x, revived, rank, kept, threshold, hoods, run)
    return kept, lost, revived


def _resolve(x: np.ndarray, rows: np.ndarray, rank: np.ndarray, kept: np.ndarray, threshold: float,
             hoods: Neighbourhoods, run: Runner) -> int:
    """Walk the candidate `rows` (marked kept) in rank order against their pairs within the
    threshold in each other's neighbourhoods: the later of a pair whose earlier one stays
    kept is dropped. Returns how many were dropped."""
    if not len(rows):
        return 0
    reach = hoods.reaching(rows)
    targets = hoods.reaching(rows, probed=False)  # each cluster's own
    jobs = [(c, r, targets[c]) for c, r in enumerate(reach) if len(r) and len(targets[c])]
    found = run(similar_pairs, ((x[r], x[t], threshold) for _, r, t in jobs))
    firsts, seconds = [], []
    for (_, r, t), (i, j) in zip(jobs, found):
        firsts.append(r[i])
        seconds.append(t[j])
    if not firsts:
        return 0
    a, b = np.concatenate(firsts), np.concatenate(seconds)
    distinct = a != b
    a, b = a[distinct], b[distinct]
    earlier = np.where(rank[a] < rank[b], a, b)
    later = np.where(rank[a] < rank[b], b, a)
    pairs = np.unique(np.stack([rank[later], rank[earlier], later, earlier], axis=1), axis=0)
    dropped = 0
    for _, _, l, e in pairs.tolist():  # by the later one's rank: each earlier one is final when read
        if kept[e] and kept[l]:
            kept[l] = False
            dropped += 1
    return dropped


def _close_to(x: np.ndarray, rows: np.ndarray, fallen: np.ndarray, threshold: float, hoods: Neighbourhoods,
              run: Runner) -> np.ndarray:
    """Those of `rows` at least `threshold` similar to one of `fallen` of their own cluster."""
    if not len(fallen):
        return fallen
    own = hoods.reaching(fallen, probed=False)
    jobs = [(r, own[c]) for c, r in enumerate(hoods.reaching(rows, probed=False))]
    jobs = [(r, f) for r, f in jobs if len(r) and len(f)]
    found = run(similar_pairs, ((x[r], x[f], threshold) for r, f in jobs))
    return np.unique(np.concatenate([r[i] for (r, _), (i, _) in zip(jobs, found)] or [fallen[:0]]))


def _nearest(x: np.ndarray, rows: np.ndarray, rank: np.ndarray, kept: np.ndarray, threshold: float | None,
             hoods: Neighbourhoods, run: Runner, probed: bool = True) -> tuple[np.ndarray, ...]:
    """For each of `rows`, within its neighbourhood: the most similar kept record ranked
    before it (similarity, row; -inf, -1 when none), and the most similar kept record."""
    n = len(rows)
    out = [np.full(n, -np.inf, np.float32), np.full(n, -1, np.int64), np.full(n, -np.inf, np.float32),
           np.full(n, -1, np.int64)]
    where = np.empty(len(x), dtype=np.int64)
    where[rows] = np.arange(n)
    kept_rows = np.flatnonzero(kept)
    targets = hoods.reaching(kept_rows, probed=False)
    reach = hoods.reaching(rows, probed)
    jobs = [(r, targets[c]) for c, r in enumerate(reach) if len(r) and len(targets[c])]
    found = run(nearest_before, ((x[r], rank[r], x[t], rank[t], threshold) for r, t in jobs))
    for (r, t), result in zip(jobs, found):
        at = where[r]
        for slot in (0, 2):
            value, pos = result[slot], result[slot + 1]
            row = np.where(pos >= 0, t[np.maximum(pos, 0)], -1)
            # The best over the clusters; ties to the lower row, so the order of jobs does not matter.
            better = (value > out[slot][at]) | ((value == out[slot][at]) & (row >= 0)
                                                & ((out[slot + 1][at] < 0) | (row < out[slot + 1][at])))
            out[slot][at[better]] = value[better]
            out[slot + 1][at[better]] = row[better]
    return tuple(out)


def kcenter_clustered(x: np.ndarray, budget: int, scores: np.ndarray | None, hoods: Neighbourhoods,
                      run: Runner, sample: int, seed: int) -> Clustered:
    n = len(x)
    budget = min(budget, n)
    members = hoods.members(np.arange(n))
    sizes = np.array([len(m) for m in members])
    ask = np.minimum(sizes, np.maximum(1, KCENTER_OVERSAMPLE * _shares(sizes, budget)))
    # Each cluster starts where the global greedy does: its best-scored record, else its
    # first; so the global start is its cluster's first candidate.
    firsts = [int(np.argmax(np.where(np.isnan(scores[m]), -np.inf, scores[m]))) if scores is not None else 0
              for m in members]
    found = run(kcenter_cluster, ((x[members[c]], int(ask[c]), firsts[c]) for c in range(hoods.count)))
    candidates = np.sort(np.concatenate([members[c][kept] for c, kept in enumerate(found)]))
    start = int(np.argmax(np.where(np.isnan(scores), -np.inf, scores))) if scores is not None else 0
    chosen = kcenter_select(x[candidates], budget, first=int(np.searchsorted(candidates, start)))
    kept_rows = candidates[chosen.kept]
    # The greedy's last pick's similarity to its nearest earlier pick: the radius it reached.
    last = len(kept_rows) - 1
    cutoff = float(Products(x[kept_rows]).exact(np.array([last]), np.arange(last)).max()) if last else -np.inf
    kept = np.zeros(n, dtype=bool)
    kept[kept_rows] = True
    rank = np.full(n, n, dtype=np.int64)
    rank[kept_rows] = np.arange(len(kept_rows))
    nearest, similarity = np.arange(n), np.ones(n, dtype=np.float32)  # a kept record is its own nearest
    dropped = np.flatnonzero(~kept)
    _, _, similarity[dropped], nearest[dropped] = _nearest(x, dropped, rank, kept, None, hoods, run, probed=False)
    info = {"clusters": hoods.count, "probes": int(hoods.probes.shape[1]), "candidates": len(candidates),
            "agreement": kcenter_agreement(x, kept_rows, cutoff, run, sample, seed)}
    return Clustered(Selection(kept_rows, nearest, similarity, np.zeros(n, dtype=bool)), info)


def _shares(sizes: np.ndarray, total: int) -> np.ndarray:
    """`total` split in proportion to `sizes`, largest remainders first (ties: lower index)."""
    exact = sizes * total / max(1, sizes.sum())
    share = np.floor(exact).astype(np.int64)
    extra = total - share.sum()
    share[np.lexsort((np.arange(len(sizes)), -(exact - share)))[:extra]] += 1
    return share


# -- agreement with the exact selection, on a sample -----------------------------------

def _sample(n: int, size: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, size=min(n, size), replace=False))


def _best_before_over_all(x: np.ndarray, rows: np.ndarray, row_rank: np.ndarray, kept_rows: np.ndarray,
                          kept_rank: np.ndarray, threshold: float | None, run: Runner) -> np.ndarray:
    """Each sampled row's best similarity to a kept record of any cluster ranked before it."""
    step = max(1, BLOCK_ELEMENTS // max(1, len(rows)))
    chunks = [slice(s, s + step) for s in range(0, len(kept_rows), step)]
    found = run(nearest_before, ((x[rows], row_rank, x[kept_rows[c]], kept_rank[c], threshold) for c in chunks))
    return np.max([f[0] for f in found], axis=0) if found else np.full(len(rows), -np.inf, np.float32)


def threshold_agreement(x: np.ndarray, kept_rows: np.ndarray, rank: np.ndarray, cutoff: int, threshold: float,
                        run: Runner, size: int, seed: int) -> dict[str, Any]:
    """On a sample: kept records that a kept record of any cluster before them is within the
    threshold of (exact would drop them), and records dropped before the budget ran out that
    none is (exact would keep them). No record contradicting the rule is exactly equal."""
    walked = np.flatnonzero(rank <= cutoff)  # after the cutoff the budget decides, as in the exact walk
    rows = walked[_sample(len(walked), size, seed)]
    best = _best_before_over_all(x, rows, rank[rows], kept_rows, rank[kept_rows], threshold, run)
    kept = np.isin(rows, kept_rows)
    wrongly_kept = int((kept & (best >= threshold)).sum())
    wrongly_dropped = int((~kept & (best < threshold)).sum())
    return _agreement(len(rows), int(kept.sum()), wrongly_kept, wrongly_dropped)


def kcenter_agreement(x: np.ndarray, kept_rows: np.ndarray, cutoff: float, run: Runner, size: int,
                      seed: int) -> dict[str, Any]:
    """On a sample: kept records closer to an earlier pick of any cluster than the last pick
    was (the exact greedy would not have picked them), and dropped records farther from
    every pick than that (the exact greedy would have)."""
    n = len(x)
    rows = _sample(n, size, seed)
    rank = np.full(n, n, dtype=np.int64)
    rank[kept_rows] = np.arange(len(kept_rows))
    best = _best_before_over_all(x, rows, rank[rows], kept_rows, rank[kept_rows], cutoff, run)
    kept = rank[rows] < n
    wrongly_kept = int((kept & (best > cutoff)).sum())
    wrongly_dropped = int((~kept & (best < cutoff)).sum())
    return _agreement(len(rows), int(kept.sum()), wrongly_kept, wrongly_dropped)


def _agreement(checked: int, kept: int, wrongly_kept: int, wrongly_dropped: int) -> dict[str, Any]:
    wrong = wrongly_kept + wrongly_dropped
    return {"sample": checked, "sample_kept": kept, "wrongly_kept": wrongly_kept, "wrongly_dropped": wrongly_dropped,
            "rate": round(1 - wrong / checked, 4) if checked else None}  # None: not measured
