"""Near-duplicate decisions from MinHash signatures, in whole-array passes.

The rule (the stage's since its first version, then walked one record at a time
through datasketch's MinHashLSH): records are taken in a given order; a record is a
candidate duplicate of an earlier *kept* record when the two agree on every slot of
at least one band; it is dropped when the closest such candidate agrees on at least
`need` slots, and it names that candidate (the earliest, when several agree as much).

Here the same decisions come from three vectorised steps, each of which also works
on a part of the data at a time (filters/dedup/minhash_ray.py runs them as disk-based
stages):

1. `first_copies`: records with identical signatures. Every copy after the first is
   dropped in favour of whatever the first is dropped for, or of the first itself.
2. `similar_pairs`: band buckets by sorting 64-bit band keys; pairs of records in a
   bucket, checked slot by slot (so a hash collision never nominates anyone), kept
   when they agree on `need` slots or more.
3. `walk`: the greedy pass over those pairs only, which is all the order-dependent
   work left (a few Python steps per near-duplicate, none per record).
"""

from __future__ import annotations

import functools

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
PAIR_BLOCK = 1 << 16  # pairs compared per numpy pass: 32 MiB of 128-slot signatures


@functools.lru_cache(maxsize=64)
def lsh_params(threshold: float, num_perm: int, false_positive_weight: float = 0.05,
               false_negative_weight: float = 0.95) -> tuple[int, int]:
    """(bands, rows) minimising the weighted false positive and negative areas, as
    datasketch's MinHashLSH chooses them (`_optimal_param`, which integrates with
    scipy's quad). Both integrands are polynomials of degree bands*rows <= num_perm,
    so Gauss-Legendre with num_perm/2 + 1 nodes integrates them exactly: the same
    choice without importing scipy (half a second)."""
    b = np.repeat(np.arange(1, num_perm + 1), [num_perm // b for b in range(1, num_perm + 1)])
    r = np.concatenate([np.arange(1, num_perm // b + 1) for b in range(1, num_perm + 1)])
    nodes, weights = np.polynomial.legendre.leggauss(num_perm // 2 + 2)

    def area(lo: float, hi: float) -> np.ndarray:  # integral of P(candidate | similarity s)
        s = (hi - lo) / 2 * nodes + (hi + lo) / 2
        p = 1 - (1 - s[None, :] ** r[:, None].astype(float)) ** b[:, None].astype(float)
        return (p * weights).sum(axis=1) * (hi - lo) / 2

    false_positive = area(0.0, threshold)
    false_negative = (1.0 - threshold) - area(threshold, 1.0)
    error = false_positive * false_positive_weight + false_negative * false_negative_weight
    best = int(np.argmin(error))  # the first minimum, as datasketch's strict `<` keeps it
    return int(b[best]), int(r[best])


def run_starts(values: np.ndarray) -> np.ndarray:
    """True where a sorted array's value differs from the one before (the first of each run)."""
    out = np.ones(len(values), dtype=bool)
    out[1:] = values[1:] != values[:-1]
    return out


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(records, bands) 64-bit keys, the band's number mixed in: records sharing a band's
    values share its key (equal keys with unequal values happen with chance 2^-64, and
    `similar_pairs` compares the values anyway)."""
    multipliers = (np.random.default_rng(7).integers(0, 2**62, size=(rows,), dtype=np.uint64) << np.uint64(1)) | np.uint64(1)
    banded = sigs[:, : bands * rows].reshape(len(sigs), bands, rows)
    keys = np.zeros((len(sigs), bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(rows):  # a few whole-array passes: numpy sums a short last axis slowly
            keys += banded[:, :, j].astype(np.uint64) * multipliers[j]
        return keys * _GOLDEN + np.arange(bands, dtype=np.uint64)


def signature_keys(sigs: np.ndarray, bands: np.ndarray, rows: int) -> np.ndarray:
    """One 64-bit key per signature, from its band keys and the slots no band covers."""
    keys = band_keys(bands, 1, bands.shape[1])[:, 0]
    rest = sigs.shape[1] - bands.shape[1] * rows
    if rest:
        with np.errstate(over="ignore"):
            keys = keys * _GOLDEN + band_keys(sigs[:, -rest:], 1, rest)[:, 0]
    return keys


def first_copies(keys: np.ndarray, identical) -> np.ndarray:
    """For each row, the first row with the same signature key (itself when none is
    earlier). `identical(a, b)` checks the slots of row pairs: a key match that is not an
    identity (a 2^-64 collision) leaves the row its own first, which costs the walk one
    more record and changes no decision (copies are only a shortcut)."""
    order = np.argsort(keys, kind="stable")
    starts = np.flatnonzero(run_starts(keys[order]))
    first = np.empty(len(keys), dtype=np.int64)
    first[order] = np.repeat(order[starts], np.diff(np.r_[starts, len(order)]))
    copies = np.flatnonzero(first != np.arange(len(first)))
    if len(copies):
        same = _blocks(identical, first[copies], copies)
        first[copies[~same]] = copies[~same]
    return first


def candidate_pairs(keys: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (earlier, later) of `rows` with an equal key, each pair once: `keys` and
    `rows` are flat and parallel (one entry per row and band; a smaller row is earlier),
    `rows` in ascending order."""
    order = np.argsort(keys, kind="stable")  # `rows` ascend in each bucket if they ascend in the input
    keys, rows = keys[order], rows[order]
    starts = np.flatnonzero(run_starts(keys))
    sizes = np.diff(np.r_[starts, len(keys)])
    big = sizes > 1
    starts, sizes = starts[big], sizes[big]
    found = []
    # A bucket of s rows has s-1 pairs at distance 1, s-2 at distance 2, ...: taken by
    # distance, every step is one pass over the buckets still that large.
    for distance in range(1, int(sizes.max(initial=1))):
        live = sizes > distance
        starts, sizes = starts[live], sizes[live]
        counts = sizes - distance
        first = np.repeat(starts, counts) + (np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts))
        found.append(rows[first].astype(np.int64) << 32 | rows[first + distance].astype(np.int64))
    if not found:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    codes = np.sort(np.concatenate(found))
    codes = codes[run_starts(codes)]  # a pair sharing several bands, once
    return codes >> 32, codes & 0xFFFFFFFF


def agreement(sigs_a: np.ndarray, sigs_b: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """Slots on which each pair agrees; 0 for a pair sharing no band exactly (its keys
    matched by a 64-bit collision, so it was never a candidate)."""
    same = sigs_a == sigs_b
    share = same[:, : bands * rows].reshape(len(same), bands, rows).all(axis=2).any(axis=1)
    return np.where(share, np.count_nonzero(same, axis=1), 0)


def walk(count: int, earlier: np.ndarray, later: np.ndarray, compare, need: int) -> tuple[np.ndarray, np.ndarray]:
    """The greedy pass in rounds, positions in walk order: a position is dropped when an
    earlier kept candidate agrees on `need` slots; kept when every earlier candidate is
    decided and no kept one does. `compare(earlier, later)` gives the agreement of pairs;
    only pairs whose earlier side is kept are ever compared (in a cluster of copies, the
    first against each of the rest, not all against all).

    Returns, per position, the kept position it names (-1: kept; the most agreeing,
    earliest on a tie) and their agreement.
    """
    status = np.zeros(count, dtype=np.int8)  # 0 undecided, 1 kept, 2 dropped
    status[np.bincount(later, minlength=count) == 0] = KEPT
    p, q = earlier, later
    compared_p, compared_q, compared_agree = [], [], []
    while len(q):
        ready = status[p] == KEPT
        if ready.any():  # each such pair is compared once: its later side is decided now
            agree = _blocks(compare, p[ready], q[ready])
            compared_p.append(p[ready]), compared_q.append(q[ready]), compared_agree.append(agree)
            status[q[ready][agree >= need]] = DROPPED
        open_ = status[q] == UNDECIDED
        p, q = p[open_], q[open_]
        waiting = np.zeros(count, dtype=bool)
        waiting[q[status[p] == UNDECIDED]] = True
        newly = (status == UNDECIDED) & ~waiting
        if not newly.any() and not ready.any():
            raise RuntimeError("greedy walk made no progress")  # cannot happen: the earliest undecided is ready
        status[newly] = KEPT
        keep = status[q] == UNDECIDED
        p, q = p[keep], q[keep]
    named = np.full(count, -1, dtype=np.int64)
    agreement_out = np.zeros(count, dtype=np.int64)
    if compared_p:
        p, q, agree = np.concatenate(compared_p), np.concatenate(compared_q), np.concatenate(compared_agree)
        # Name, for each dropped position, the most agreeing kept candidate, earliest on a tie:
        # kept candidates decided after it was dropped are compared too.
        late = (status[earlier] == KEPT) & (status[later] == DROPPED)
        done = set((p.astype(np.int64) << 32 | q).tolist())
        codes = earlier[late].astype(np.int64) << 32 | later[late]
        extra = np.fromiter((c not in done for c in codes.tolist()), dtype=bool, count=len(codes))
        if extra.any():
            ep, eq = earlier[late][extra], later[late][extra]
            p, q, agree = np.r_[p, ep], np.r_[q, eq], np.r_[agree, _blocks(compare, ep, eq)]
        use = (status[q] == DROPPED) & (agree >= need)
        p, q, agree = p[use], q[use], agree[use]
        order = np.lexsort((p, -agree, q))
        p, q, agree = p[order], q[order], agree[order]
        first = run_starts(q)
        named[q[first]] = p[first]
        agreement_out[q[first]] = agree[first]
    return named, agreement_out


UNDECIDED, KEPT, DROPPED = 0, 1, 2


def _blocks(compare, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    if len(p) <= PAIR_BLOCK:
        return compare(p, q)
    return np.concatenate([compare(p[i: i + PAIR_BLOCK], q[i: i + PAIR_BLOCK]) for i in range(0, len(p), PAIR_BLOCK)])


def decide(sigs: np.ndarray, order: np.ndarray, bands: int, rows: int, need: int) -> tuple[np.ndarray, np.ndarray]:
    """For each record (index into `sigs`): the record it is dropped for (-1: kept) and
    the number of slots they agree on, walking `order`."""
    ordered = sigs[order]
    keys = band_keys(ordered, bands, rows)
    first = first_copies(signature_keys(ordered, keys, rows), lambda a, b: (ordered[a] == ordered[b]).all(axis=1))
    leaders = np.flatnonzero(first == np.arange(len(first)))
    earlier, later = candidate_pairs(keys[leaders].ravel(), np.repeat(leaders, bands))
    named, agree = resolve(first, earlier, later, lambda a, b: agreement(ordered[a], ordered[b], bands, rows),
                           need, sigs.shape[1])
    return in_index_order(order, named, agree)


def resolve(first: np.ndarray, earlier: np.ndarray, later: np.ndarray, compare, need: int,
            slots: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions in walk order: the walk over the candidate pairs of first copies, then the
    later copies; per position the position it names (-1: kept) and their agreement."""
    named, agree = walk(len(first), earlier, later, compare, need)
    _name_copies(first, named, agree, earlier, later, compare, need, slots)
    return named, agree


def in_index_order(order: np.ndarray, named: np.ndarray, agree: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walk positions back to record indexes (`order[position]` is the record)."""
    out_named = np.full(len(order), -1, dtype=np.int64)
    out_agree = np.zeros(len(order), dtype=np.int64)
    dropped = named >= 0
    out_named[order[dropped]] = order[named[dropped]]
    out_agree[order] = agree
    return out_named, out_agree


def _name_copies(first: np.ndarray, named: np.ndarray, agree: np.ndarray, earlier: np.ndarray,
                 later: np.ndarray, compare, need: int, slots: int) -> None:
    """Decide the later copies of identical signatures (in place). A copy is always
    dropped: for its first when the first was kept; otherwise for the best kept candidate
    of the first that comes before the copy (it shares every band and slot with the first,
    and records kept between the first and the copy are candidates of the copy only)."""
    copies = np.flatnonzero(first != np.arange(len(first)))
    if not len(copies):
        return
    leader = first[copies]
    leader_kept = named[leader] < 0
    named[copies[leader_kept]] = leader[leader_kept]
    agree[copies[leader_kept]] = slots
    copies, leader = copies[~leader_kept], leader[~leader_kept]
    if not len(copies):
        return
    is_leader = np.zeros(len(first), dtype=bool)
    is_leader[leader] = True
    kept = named < 0
    kept[copies] = False
    towards = kept[earlier] & is_leader[later]
    away = is_leader[earlier] & kept[later]
    edge_leader = np.r_[later[towards], earlier[away]]
    edge_kept = np.r_[earlier[towards], later[away]]
    order = np.argsort(edge_leader, kind="stable")
    edge_leader, edge_kept = edge_leader[order], edge_kept[order]
    edge_agree = _blocks(compare, edge_leader, edge_kept)
    lo = np.searchsorted(edge_leader, leader, side="left")
    hi = np.searchsorted(edge_leader, leader, side="right")
    n = hi - lo
    copy = np.repeat(copies, n)
    idx = np.repeat(lo, n) + (np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n))
    cand, cand_agree = edge_kept[idx], edge_agree[idx]
    ok = (cand < copy) & (cand_agree >= need)
    copy, cand, cand_agree = copy[ok], cand[ok], cand_agree[ok]
    pick = np.lexsort((cand, -cand_agree, copy))
    copy, cand, cand_agree = copy[pick], cand[pick], cand_agree[pick]
    best = run_starts(copy)
    named[copy[best]] = cand[best]
    agree[copy[best]] = cand_agree[best]
