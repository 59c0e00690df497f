"""Clustered diversity selection: real records and a real embedding model through the
stage, against the exact selection; the same anywhere (thread counts, Ray); bad options."""

from __future__ import annotations

import json

import numpy as np
import pytest

from factory.core.record import Record
from filters.diversity import clustered as dc
from tests.helpers.datafiles import read_jsonl
from tests.helpers.pipelines import write_pipeline
from tests.helpers.processes import factory_cli
from tests.helpers.stages import diversity_stage

SUBJECTS = ["the Roman Empire", "volcanoes", "chess openings", "photosynthesis", "the stock market", "jazz music",
            "black holes", "sourdough bread", "the French Revolution", "honey bees", "solar panels", "marathon training",
            "the human heart", "origami", "coral reefs", "Python decorators", "medieval castles", "tea ceremonies"]
ASKS = ["Explain the basics of {} to a beginner.", "What are the most common misconceptions about {}?",
        "Write a short poem about {}."]
# A near-paraphrase of each first ask: the near-duplicates a threshold walk must drop.
PARAPHRASE = "Explain the basics of {} for a beginner."


def records() -> list[Record]:
    out = []
    for s, subject in enumerate(SUBJECTS):
        texts = [ask.format(subject) for ask in ASKS] + [PARAPHRASE.format(subject)]
        for a, text in enumerate(texts):
            score = (s * 7 + a * 3) % 10  # judge scores that interleave subjects and asks
            out.append(Record(f"s{s}a{a}", [{"role": "user", "content": text},
                                             {"role": "assistant", "content": "Sure."}],
                              {"subject": s, "judge_score": score}))
    return out


def kept_ids(tmp_path, model, **options):
    # The second call finds the first's cache.
    stage, rejected = diversity_stage(tmp_path, model=model, threshold=0.9, **options)
    kept = [r.id for r in stage(records())]
    return kept, rejected, stage.funnel()


def test_the_stage_takes_its_input_as_a_stream_and_leaves_no_work_behind(tmp_path, minilm):
    """Records and vectors go to disk, not memory: a generator in gives what a list gives,
    drops name their nearest kept record read back from disk, and the work folder goes."""
    listed, listed_rejected, _ = kept_ids(tmp_path, minilm, selection="clustered", clusters=3)
    stage, rejected = diversity_stage(tmp_path, model=minilm, threshold=0.9, selection="clustered", clusters=3)
    streamed = [r.id for r in stage(r for r in records())]
    assert streamed == listed and len(streamed) == 3 * len(SUBJECTS)
    by_id = {r.id: r for r in records()}
    assert [(r.id, r.metadata["nearest_kept"]) for r in rejected] == [(r.id, r.metadata["nearest_kept"])
                                                                       for r in listed_rejected]
    assert all(r.metadata["nearest_kept"] in streamed and r.messages == by_id[r.id].messages for r in rejected)
    assert not list((tmp_path / "out").glob(".diversity-*"))


def test_clustered_keeps_what_the_exact_walk_keeps_and_reports_its_agreement(tmp_path, minilm):
    exact, _, exact_funnel = kept_ids(tmp_path, minilm, selection="exact")
    kept, rejected, funnel = kept_ids(tmp_path, minilm, selection="clustered", clusters=4, probes=1)
    assert exact_funnel["selection"] == "exact"
    # Each paraphrase falls to its better-scored twin, the rest is kept: the exact walk's result.
    assert len(exact) == 3 * len(SUBJECTS)
    assert kept == exact
    assert funnel["selection"] == "clustered" and funnel["clusters"] == 4 and funnel["probes"] == 1
    agreement = funnel["agreement"]
    assert agreement["sample"] == len(records()) and agreement["rate"] == 1.0
    assert agreement["wrongly_kept"] == agreement["wrongly_dropped"] == 0
    for rejection in rejected:  # each drop names a kept near-duplicate of the same subject
        assert rejection.reason == "too_similar" and rejection.metadata["similarity"] >= 0.9
        twin = rejection.metadata["nearest_kept"]
        assert twin in kept and twin.split("a")[0] == rejection.id.split("a")[0]


def test_a_boundary_straddled_without_probes_is_seen_in_the_agreement():
    """Near-duplicate pairs split by the partition: without probes the clustered walk keeps
    both of some pairs, and the sampled agreement says so; probing the next cluster finds them."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((400, 24))
    twins = base + 0.05 * rng.standard_normal(base.shape)
    x = np.concatenate([base, twins]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    order = np.arange(len(x))
    found = {}
    for probes in (0, 2):
        hoods = dc.partition(x, 8, probes, 0, dc.run_here)
        found[probes] = dc.threshold_clustered(x, order, 0.95, None, hoods, dc.run_here, len(x), 0)
    blind, probed = found[0], found[2]
    assert blind.info["agreement"]["wrongly_kept"] > 0 and blind.info["agreement"]["rate"] < 1
    assert probed.info["boundary_dropped"] > 0 and probed.info["agreement"]["rate"] == 1.0
    assert sorted(probed.selection.kept.tolist()) == list(range(400))  # the exact walk: every first of a pair


def test_kcenter_clustered_covers_every_subject_and_agrees(tmp_path, minilm):
    stage, _ = diversity_stage(tmp_path, model=minilm, method="kcenter", budget=len(SUBJECTS), selection="clustered",
                               clusters=3)
    kept = list(stage(records()))
    funnel = stage.funnel()
    assert funnel["selection"] == "clustered" and len(kept) == len(SUBJECTS)
    assert len({r.metadata["subject"] for r in kept}) >= len(SUBJECTS) - 2
    assert 0.0 <= funnel["agreement"]["rate"] <= 1.0 and funnel["agreement"]["sample"] == len(records())


def test_the_same_selection_whatever_the_thread_count(tmp_path, minilm):
    import torch

    threads = torch.get_num_threads()
    outcomes = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            stage, _ = diversity_stage(tmp_path, model=minilm, threshold=0.8, selection="clustered", clusters=5)
            outcomes.append(([r.id for r in stage(records())], {k: v for k, v in stage.funnel().items()
                                                               if k not in ("embedded", "projection")}))
    finally:
        torch.set_num_threads(threads)
    assert outcomes[0] == outcomes[1]


def test_kmeans_is_the_same_in_chunks_and_whole():
    """Assignment runs in tasks over slices of the records: a slice's answer is the whole's."""
    from filters.diversity.kmeans import assign, train

    x = np.random.default_rng(3).standard_normal((3000, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    centroids = train(x, 12, seed=5)
    labels, probes = assign(x, centroids, 2)
    parts = [assign(x[s: s + 700], centroids, 2) for s in range(0, len(x), 700)]
    assert np.array_equal(labels, np.concatenate([p[0] for p in parts]))
    assert np.array_equal(probes, np.concatenate([p[1] for p in parts]))
    assert np.array_equal(centroids, train(x, 12, seed=5))
    assert len(np.unique(labels)) == 12 and np.bincount(labels).max() < 3 * len(x) / 12


def test_filter_command_reports_the_selection_in_run_json_and_card(tmp_path, minilm):
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r.to_row()) + "\n" for r in records()))
    path = write_pipeline(tmp_path, filters=[{"type": "diversity", "model": minilm, "threshold": 0.9,
                                              "selection": "clustered", "clusters": 3}])
    out = tmp_path / "filtered"
    done = factory_cli("filter", str(path), "--input", str(data), "--out", str(out), timeout=300)
    assert done.returncode == 0, done.stderr
    [stage] = json.loads((out / "run.json").read_text())["funnel"]["stages"]
    assert stage["selection"] == "clustered" and stage["clusters"] == 3
    assert stage["agreement"]["rate"] == 1.0 and stage["kept"] == 3 * len(SUBJECTS)
    assert len(read_jsonl(out / "data.jsonl")) == 3 * len(SUBJECTS)
    card = (out / "README.md").read_text()
    assert "clustered" in card and "agreement" in card
    report = (out / "report.html").read_text()
    assert "<h2>Diversity selection</h2>" in report and "100.00% of" in report


@pytest.mark.parametrize("options, words", [
    ({"selection": "fuzzy"}, ["filters[0].selection"]),
    ({"selection": "exact", "clusters": 8}, ["filters[0]", "clusters", "selection"]),
    ({"probes": -1}, ["filters[0].probes"]),
    ({"clusters": 0}, ["filters[0].clusters"]),
    ({"agreement_sampel": 10}, ["filters[0].agreement_sampel"]),
])
def test_bad_selection_options_exit_2_naming_the_key(tmp_path, options, words):
    path = write_pipeline(tmp_path, filters=[{"type": "diversity", "budget": 10, **options}])
    done = factory_cli("validate", str(path))
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip().splitlines()
    assert len(line) == 1 and "pipeline.yaml" in line[0] and all(w in line[0] for w in words), done.stderr


def test_on_ray_the_clusters_are_tasks_with_the_in_process_result(tmp_path, minilm, cluster):
    from factory.config.pipeline import load_pipeline
    from filters import build_stages
    from filters.base import StageContext

    options = {"model": minilm, "threshold": 0.8, "selection": "clustered", "clusters": 5}
    local, _ = diversity_stage(tmp_path, **options)
    here = [r.id for r in local(records())]
    # The same folder: the embeddings come from the cache the local run filled (the actor
    # pool is tested in test_ray.py); what runs on Ray here is the selection.
    path = write_pipeline(tmp_path, filters=[{"type": "diversity", **options}],
                          executor__type="ray", executor__address=cluster)
    pipeline = load_pipeline(path)
    [distributed] = build_stages(pipeline.config.filters, pipeline)
    distributed.bind(lambda rejection: None, StageContext(pipeline, tmp_path / "out", show_progress=False))
    assert [r.id for r in distributed(records())] == here
    assert distributed.embedded == 0
    drop = ("embedded", "projection")
    assert {k: v for k, v in distributed.funnel().items() if k not in drop} == \
        {k: v for k, v in local.funnel().items() if k not in drop}
