"""Killed with SIGKILL part-way, then rerun: the same dataset, and nothing journaled is sent twice."""

from __future__ import annotations

import json

from factory.loopback.process import loopback_process, server_stats
from tests.helpers.pipelines import write_pipeline
from tests.helpers.processes import factory_cli, kill_after
from tests.helpers.run_store import stored


def test_sigkill_then_rerun_matches_an_uninterrupted_run(tmp_path):
    count = 120
    with loopback_process("--slots", "4", "--latency-median", "0.08", "--latency-sigma", "0.3") as url:
        path = write_pipeline(tmp_path / "killed", url, generate__count=count, generate__pairs_per_request=1)
        out = tmp_path / "killed" / "out"
        kill_after(path, out, 40)
        before = sum(server_stats(url)["received"].values())
        done_before_kill = stored(out)
        assert 40 <= done_before_kill < count

        rerun = factory_cli("run", str(path), "--quiet")
        assert rerun.returncode == 0, rerun.stderr
        # Every answer stored before the kill is replayed: only the rest goes out.
        assert sum(server_stats(url)["received"].values()) - before == count - done_before_kill
        info = json.loads((out / "run.json").read_text())
        assert info["status"] == "complete" and info["usage"]["requests"] == count
        runs = info["invocations"]
        assert [r["status"] for r in runs] == ["killed", "complete"]
        assert runs[0]["usage"]["requests"] == done_before_kill
        assert runs[1]["usage"]["requests"] == count - done_before_kill

        whole = write_pipeline(tmp_path / "whole", url, generate__count=count, generate__pairs_per_request=1)
        assert factory_cli("run", str(whole), "--quiet").returncode == 0

    resumed = (out / "data.jsonl").read_text()
    uninterrupted = (tmp_path / "whole" / "out" / "data.jsonl").read_text()
    assert resumed == uninterrupted and len(resumed.splitlines()) == count


def test_a_finished_run_rerun_sends_nothing(tmp_path, loopback):
    url = loopback()
    path = write_pipeline(tmp_path, url, generate__count=10)
    assert factory_cli("run", str(path), "--quiet").returncode == 0
    sent = sum(loopback.teacher.received.values())
    first = (tmp_path / "out" / "data.jsonl").read_text()
    assert factory_cli("run", str(path), "--quiet").returncode == 0
    assert sum(loopback.teacher.received.values()) == sent
    assert (tmp_path / "out" / "data.jsonl").read_text() == first


def test_asking_for_more_sends_only_the_new_requests(tmp_path, loopback):
    url = loopback()
    path = write_pipeline(tmp_path, url, generate__count=10, generate__pairs_per_request=1)
    assert factory_cli("run", str(path), "--quiet").returncode == 0
    assert factory_cli("run", str(path), "--quiet", "--set", "generate.count=15").returncode == 0
    assert sum(loopback.teacher.received.values()) == 15
    assert len((tmp_path / "out" / "data.jsonl").read_text().splitlines()) == 15
