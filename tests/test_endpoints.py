"""Several endpoints for one teacher: balanced, a dead one routed around, one killed mid-run."""

from __future__ import annotations

import json
import subprocess
import sys

from factory.loopback.process import loopback_process, server_stats
from tests.helpers.checkout import ROOT
from tests.helpers.datafiles import read_jsonl
from tests.helpers.pipelines import write_pipeline
from tests.helpers.processes import factory_cli, wait_for_rows


def run_ok(path):
    result = factory_cli("run", str(path), "--quiet")
    assert result.returncode == 0, result.stderr
    return json.loads((path.parent / "out" / "run.json").read_text())


def test_requests_spread_over_replicas(tmp_path, loopback):
    a = loopback(slots=4, latency_median=0.02)
    first = loopback.teacher
    b = loopback(slots=4, latency_median=0.02)
    path = write_pipeline(tmp_path, [a, b], generate__count=60, generate__pairs_per_request=1)
    info = run_ok(path)
    served_a, served_b = sum(first.received.values()), sum(loopback.teacher.received.values())
    assert served_a + served_b == 60 and min(served_a, served_b) >= 20, (served_a, served_b)
    assert info["teacher"]["base_url"] == [a, b]
    assert sorted(info["teacher"]["served"].values()) == sorted([served_a, served_b])
    assert len(read_jsonl(tmp_path / "out" / "data.jsonl")) == 60


def test_a_dead_endpoint_is_set_aside(tmp_path, loopback):
    live = loopback()
    dead = "http://127.0.0.1:9/v1"  # nothing listens there: connections are refused
    path = write_pipeline(tmp_path, [dead, live], generate__count=30, generate__pairs_per_request=1)
    info = run_ok(path)
    assert len(read_jsonl(tmp_path / "out" / "data.jsonl")) == 30
    assert info["teacher"]["served"] == {dead: 0, live: 30}


def test_one_replica_killed_mid_run_loses_nothing(tmp_path):
    count = 160
    with loopback_process("--slots", "4", "--latency-median", "0.05") as survivor:
        with loopback_process("--slots", "4", "--latency-median", "0.05") as victim:
            path = write_pipeline(tmp_path, [victim, survivor], generate__count=count, generate__pairs_per_request=1)
            proc = subprocess.Popen([sys.executable, "-m", "factory", "run", str(path), "--quiet"], cwd=ROOT,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            wait_for_rows(tmp_path / "out", 40, proc)
        # The victim is killed here, with requests in flight.
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert server_stats(survivor)["requests"] >= count - 40
    rows = read_jsonl(tmp_path / "out" / "data.jsonl")
    assert len(rows) == count and not read_jsonl(tmp_path / "out" / "rejected.jsonl")


def test_a_list_of_urls_is_checked(tmp_path, loopback):
    from tests.helpers.processes import assert_user_error

    url = loopback()
    for bad, words in (([], ["teacher.base_url", "non-empty list"]), ([url, url], ["listed twice"])):
        result = factory_cli("validate", str(write_pipeline(tmp_path, bad)))
        assert_user_error(result.returncode, result.stderr, words)


def test_the_console_says_when_an_endpoint_is_set_aside_and_when_it_is_back(tmp_path, loopback):
    flaky = loopback(faults={"server_error": 1.0})  # every request fails with a 500, for now
    flaky_teacher = loopback.teacher
    with loopback_process("--slots", "2", "--latency-median", "0.05") as live:
        path = write_pipeline(tmp_path, [flaky, live], generate__count=400, generate__pairs_per_request=1)
        proc = subprocess.Popen([sys.executable, "-m", "factory", "run", str(path), "--quiet"], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seen = []
        for line in proc.stderr:  # until the console says it set the endpoint aside
            seen.append(line)
            if "set aside" in line:
                break
        flaky_teacher.options.faults = {}  # it recovers mid-run
        rest = proc.communicate(timeout=120)[1]
    err = "".join(seen) + rest
    assert proc.returncode == 0, err
    aside = [line for line in err.splitlines() if "set aside" in line]
    back = [line for line in err.splitlines() if "is back" in line]
    assert len(aside) == 1 and flaky in aside[0] and "probe" in aside[0], err
    assert len(back) == 1 and flaky in back[0], err
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert info["teacher"]["served"][flaky] > 0  # brought back, it took requests
