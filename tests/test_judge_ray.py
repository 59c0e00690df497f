"""The judge's requests in shards on a local Ray cluster (2 CPUs): the grades, funnel, card
and usage of one process, and nothing graded paid twice (counted at the loopback teacher)."""

from __future__ import annotations

import json
import os
import re
import signal

import pytest

from factory.cli import main
from factory.loopback.process import loopback_process, server_stats
from tests.helpers.datafiles import read_jsonl
from tests.helpers.pipelines import write_pipeline
from tests.helpers.processes import factory_cli, start_factory
from tests.helpers.ray_cluster import kill_a_running_shard, on_ray, wait_for_answers
from tests.helpers.run_store import invocations

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'factory[ray]'")


JUDGE = {"type": "judge", "min_score": 5}


def outputs(out) -> dict:
    """What a run shows, but for when and where it was made (the card's timestamp and folder)."""
    info = json.loads((out / "run.json").read_text())
    card = re.sub(r"\*\*Made with\*\*: .*", "", (out / "README.md").read_text()).replace(f"'{out.name}", "'OUT")
    return {"data": (out / "data.jsonl").read_text(), "rejected": (out / "rejected.jsonl").read_text(),
            "card": card, "funnel": info["funnel"], "usage": info["usage"], "cost": info.get("cost")}


def received(url) -> int:
    return sum(server_stats(url)["received"].values())


def test_a_judge_in_four_shards_grades_as_one_process_and_a_rerun_sends_nothing(tmp_path, cluster):
    with loopback_process("--slots", "8") as url:
        priced = {"input": 1.0, "output": 4.0}
        single = write_pipeline(tmp_path / "single", url, generate__count=40, filters=[JUDGE], teacher__price=priced)
        assert factory_cli("run", str(single), "--quiet").returncode == 0
        paid = received(url)
        sharded = write_pipeline(tmp_path / "sharded", url, generate__count=40, filters=[JUDGE], teacher__price=priced)
        run = factory_cli("run", str(sharded), "--quiet", *on_ray(cluster), timeout=300)
        assert run.returncode == 0, run.stderr
        assert received(url) == 2 * paid  # 20 generation requests, 40 grades: each once

        out = tmp_path / "sharded" / "out"
        expected = outputs(tmp_path / "single" / "out")
        assert outputs(out) == expected
        assert expected["cost"]["paid_now"] == expected["cost"]["total"] > 0
        judge = expected["funnel"]["stages"][1]
        assert judge["stage"] == "judge" and judge["usage"]["requests"] == 40 and judge["dropped"]["low_score"]
        shards = sorted((out / "shards" / "judge-0").iterdir())
        assert len(shards) == 4 and all((s / "done.json").exists() for s in shards)
        assert sum(len((s / "records.jsonl").read_text().splitlines()) for s in shards) == 40

        # Done shards are never run again: a rerun sends nothing and starts no shard.
        again = factory_cli("run", str(sharded), "--quiet", *on_ray(cluster), timeout=300)
        assert again.returncode == 0, again.stderr
        assert received(url) == 2 * paid
    assert all(len(invocations(s)) == 1 for s in shards)
    assert outputs(out)["data"] == expected["data"]


def test_a_shard_killed_mid_grading_is_retried_alone_and_pays_nothing_twice(tmp_path, cluster):
    count = 48
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": f"r{i}", "prompt": f"Question {i} about tides?",
                                          "completion": f"Answer {i}: the moon pulls the sea."}) + "\n"
                              for i in range(count)))
    with loopback_process("--slots", "4", "--latency-median", "0.15") as url:
        # One request in flight per shard (max_concurrency 4 split over 4 shards).
        path = write_pipeline(tmp_path, url, filters=[JUDGE], teacher__max_concurrency=4)
        out = tmp_path / "ray"
        run = start_factory("filter", str(path), "--input", str(source), "--out", str(out), *on_ray(cluster))
        victim, stored_at_kill = kill_a_running_shard(out / "shards" / "judge-0", run, at_least=3)
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr
        sent = received(url)
        local = factory_cli("filter", str(path), "--input", str(source), "--out", str(tmp_path / "local"), "--quiet")
        assert local.returncode == 0, local.stderr

    # What the killed worker had stored was replayed, not sent again; at most the one
    # request in flight when it died went out twice.
    assert stored_at_kill >= 3
    assert count <= sent <= count + 1
    assert [status for _, status in invocations(victim)] == ["unended", "complete"]  # killed, then resumed
    others = [s for s in sorted((out / "shards" / "judge-0").iterdir()) if s != victim]
    assert all([st for _, st in invocations(s)] == ["complete"] for s in others)  # retried alone
    for name in ("data.jsonl", "rejected.jsonl"):
        assert (out / name).read_text() == (tmp_path / "local" / name).read_text()
    info = json.loads((out / "run.json").read_text())
    assert info["usage"]["requests"] == count  # the run's usage is what its store holds
    assert info["funnel"] == json.loads((tmp_path / "local" / "run.json").read_text())["funnel"]


SCRIPT = [(r"grade-(\d+)", r'{"rationale": "clear", "score": \1}'), (r"garbage", "I would rather not grade this.")]


def test_records_graded_in_part_before_ask_only_their_next_attempt(tmp_path, loopback, cluster):
    """A local judge ran with max_attempts 2; the same folder on Ray with max_attempts 3
    asks only each ungradable record's third attempt (its shard replays the first two),
    and ends as a local rerun would, usage included."""
    url = loopback(replies=SCRIPT)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": f"r{i}", "prompt": f"Question {i}?",
                                          "completion": "garbage" if i % 5 == 0 else f"grade-{1 + i % 10}"}) + "\n"
                              for i in range(20)))

    def judged(out: str, attempts: int, *extra: str) -> dict:
        path = write_pipeline(tmp_path, url, filters=[{**JUDGE, "max_attempts": attempts}])
        code = main(["filter", str(path), "--input", str(source), "--out", str(tmp_path / out), "--quiet", *extra])
        assert code == 0
        return outputs(tmp_path / out)

    judged("local", 2)
    judged("ray", 2)
    served = loopback.teacher.served
    again = judged("ray", 3, *on_ray(cluster))
    assert loopback.teacher.served == served + 4  # r0, r5, r10, r15: one more attempt each
    shards = sorted((tmp_path / "ray" / "shards" / "judge-0").iterdir())
    assert sum(len((s / "records.jsonl").read_text().splitlines()) for s in shards) == 4
    assert again == judged("local", 3)
    judge = again["funnel"]["stages"][0]
    assert judge["usage"]["requests"] == 4 and judge["usage"]["replayed_from_journal"] == 16 + 8

    # A new threshold over a fully graded journal asks nothing and plans no shard.
    served = loopback.teacher.served
    lower = judged("ray", 3, *on_ray(cluster), "--set", "filters=[{type: judge, min_score: 2, max_attempts: 3}]")
    assert loopback.teacher.served == served
    assert sorted(os.listdir(tmp_path / "ray" / "shards" / "judge-0")) == [s.name for s in shards]
    assert lower["funnel"]["kept"] > again["funnel"]["kept"]


def test_judge_shards_meeting_an_outage_stop_as_incomplete_and_a_rerun_finishes(tmp_path, cluster):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"prompt": f"Question {i}?", "completion": f"Answer {i}."}) + "\n"
                              for i in range(6)))
    path = write_pipeline(tmp_path, "http://127.0.0.1:9/v1", filters=[JUDGE], teacher__outage_timeout=2,
                          teacher__max_retries=0)
    args = ["filter", str(path), "--input", str(source), "--out", str(tmp_path / "out"), "--quiet"]
    down = factory_cli(*args, *on_ray(cluster, shards=2), timeout=300)
    assert down.returncode == 3, down.stderr
    lines = down.stderr.strip().splitlines()
    assert len(lines) == 1 and "shard" in lines[0] and "rerun" in lines[0], down.stderr
    assert json.loads((tmp_path / "out" / "run.json").read_text())["status"] == "incomplete"
    with loopback_process() as url:
        up = factory_cli(*args, "--set", f"teacher.base_url={url}", *on_ray(cluster, shards=2), timeout=300)
        assert up.returncode == 0, up.stderr
        assert received(url) == 6
    assert len(read_jsonl(tmp_path / "out" / "data.jsonl")) + len(read_jsonl(tmp_path / "out" / "rejected.jsonl")) == 6


def test_a_signal_while_shards_grade_drains_them_and_a_local_rerun_resumes(tmp_path, cluster):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"prompt": f"Question {i}?", "completion": f"Answer {i}."}) + "\n"
                              for i in range(24)))
    with loopback_process("--slots", "2", "--latency-median", "0.2") as url:
        path = write_pipeline(tmp_path, url, filters=[JUDGE], teacher__max_concurrency=2)
        args = ["filter", str(path), "--input", str(source), "--out", str(tmp_path / "out")]
        run = start_factory(*args, *on_ray(cluster, shards=2))
        wait_for_answers(tmp_path / "out" / "shards" / "judge-0", run, 2)
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=120)
        assert run.returncode == 130, stderr
        assert json.loads((tmp_path / "out" / "run.json").read_text())["status"] == "stopped"
        # Resumed in one process: it takes in what the shards stored and asks only the rest.
        rerun = factory_cli(*args, "--quiet", timeout=300)
        assert rerun.returncode == 0, rerun.stderr
        assert received(url) == 24  # the shards drained: what was in flight at the signal was stored

