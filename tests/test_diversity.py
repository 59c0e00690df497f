"""Diversity selection: exactness on known clusters, and the stage with a real embedding model."""

from __future__ import annotations

import numpy as np
import pytest

from filters.diversity.select import kcenter_select, threshold_select
from tests.helpers.records import topic_records
from tests.helpers.stages import diversity_stage


def clusters(n_clusters: int, per: int, spread: float, dim: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim))
    labels = np.repeat(np.arange(n_clusters), per)
    x = centres[labels] + spread * rng.standard_normal((len(labels), dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    order = rng.permutation(len(x))
    return x[order], labels[order]


def sequential_kcenter(x: np.ndarray, k: int, first: int = 0) -> list[int]:
    sims = x @ x.T
    maxsim = sims[first].copy()
    kept = [first]
    maxsim[first] = np.inf
    while len(kept) < k:
        j = int(np.argmin(maxsim))
        kept.append(j)
        maxsim = np.maximum(maxsim, sims[j])
        maxsim[kept] = np.inf
    return kept


def sequential_threshold(x, order, threshold, budget):
    kept = []
    for i in order:
        if len(kept) >= budget:
            break
        if not kept or (x[kept] @ x[i]).max() < threshold:
            kept.append(int(i))
    return kept


def test_kcenter_takes_one_record_per_cluster():
    x, labels = clusters(12, 40, spread=0.05)
    sel = kcenter_select(x, 12)
    assert sorted(labels[sel.kept]) == list(range(12))
    # Every dropped record names a kept record of its own cluster, at high similarity.
    dropped = np.setdiff1d(np.arange(len(x)), sel.kept)
    assert (labels[sel.nearest[dropped]] == labels[dropped]).all()
    assert sel.similarity[dropped].min() > 0.9


@pytest.mark.parametrize("n, k, round_size", [(600, 60, 8), (2500, 400, 32), (3000, 700, 256)])
def test_kcenter_matches_the_sequential_greedy(n, k, round_size):
    x, _ = clusters(30, n // 30, spread=0.4, dim=16, seed=n)
    assert kcenter_select(x, k, round_size=round_size).kept.tolist() == sequential_kcenter(x, k)


def test_threshold_keeps_the_best_scored_of_each_cluster():
    x, labels = clusters(8, 25, spread=0.05, seed=1)
    scores = np.random.default_rng(2).random(len(x))
    order = np.argsort(-scores, kind="stable")
    sel = threshold_select(x, order, threshold=0.9, budget=None)
    assert sorted(labels[sel.kept]) == list(range(8))
    for label in range(8):
        members = np.flatnonzero(labels == label)
        assert members[np.argmax(scores[members])] in sel.kept
    dropped = np.setdiff1d(np.arange(len(x)), sel.kept)
    assert sel.too_similar[dropped].all()


@pytest.mark.parametrize("threshold, budget", [(0.5, 10**9), (0.3, 150), (0.95, 40)])
def test_threshold_matches_the_sequential_walk(threshold, budget):
    x, _ = clusters(20, 50, spread=0.8, dim=12, seed=3)
    order = np.random.default_rng(4).permutation(len(x))
    sel = threshold_select(x, order, threshold, budget, block=64)
    assert sel.kept.tolist() == sequential_threshold(x, order, threshold, budget)


def test_stage_with_a_real_model_keeps_one_per_topic_and_caches(tmp_path, minilm):
    stage, rejected = diversity_stage(tmp_path, model=minilm, budget=4)
    kept = list(stage(topic_records()))
    assert sorted(r.metadata["topic"] for r in kept) == [0, 1, 2, 3]
    assert stage.method_used == "kcenter" and stage.embedded == 12
    by_id = {r.id: r for r in topic_records()}
    for rej in rejected:
        assert rej.reason == "over_budget"
        assert rej.metadata["nearest_kept"] in {r.id for r in kept}
        assert by_id[rej.metadata["nearest_kept"]].metadata["topic"] == rej.metadata["topic"]
        assert rej.metadata["similarity"] > 0.8
    assert stage.funnel()["dropped"] == {"over_budget": 8}
    assert len(stage.funnel()["projection"]["x"]) == 12

    again, _ = diversity_stage(tmp_path, model=minilm, budget=4)
    assert [r.id for r in again(topic_records())] == [r.id for r in kept]
    assert again.embedded == 0  # every text came from the cache


def test_stage_score_first_keeps_the_best_phrasing(tmp_path, minilm):
    stage, rejected = diversity_stage(tmp_path, model=minilm, threshold=0.85)
    kept = list(stage(topic_records(scores=True)))
    assert stage.method_used == "threshold"
    assert sorted(r.id for r in kept) == ["t0p2", "t1p2", "t2p2", "t3p2"]
    assert {r.reason for r in rejected} == {"too_similar"}
    assert all(r.metadata["similarity"] >= 0.85 for r in rejected)


def test_unreachable_model_is_one_clear_error_before_anything_runs(tmp_path, monkeypatch):
    from factory.core.errors import ConfigError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match=r"filters\[0\]\.model: embedding model 'nobody/no-such-embedder'.*local folder"):
        diversity_stage(tmp_path, model="nobody/no-such-embedder", budget=2)[0].check_models()
