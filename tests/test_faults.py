"""Faults: content faults end as rejections with their reason; transport faults are asked
again until answered, or, when the teacher stays down, stop the run as incomplete."""

from __future__ import annotations

import json

import pytest

from factory.cli import main
from factory.loopback import FAULT_KINDS
from factory.loopback.process import loopback_process, server_stats
from tests.helpers.datafiles import read_jsonl
from tests.helpers.pipelines import write_pipeline
from tests.helpers.processes import factory_cli, start_run, wait_for_rows
from tests.helpers.run_store import stored

KNOWN_REASONS = {"bad_response", "unparseable", "truncated", "too_few_pairs"}


def test_mixed_faults_end_kept_or_rejected_with_reasons(tmp_path, loopback):
    rate = 0.33
    url = loopback(faults={k: rate / len(FAULT_KINDS) for k in FAULT_KINDS}, hang_s=30, seed=11,
                   latency_median=0.002, latency_sigma=0.5)
    requested = 150
    path = write_pipeline(tmp_path, url, generate__count=requested, generate__pairs_per_request=1,
                          teacher__timeout=0.5, teacher__max_retries=2, generate__max_attempts=2)
    assert main(["run", str(path), "--quiet"]) == 0

    outcomes = loopback.teacher.outcomes
    assert set(FAULT_KINDS) <= set(outcomes), outcomes  # every kind of fault really happened
    failed = sum(outcomes[k] for k in FAULT_KINDS)
    assert 0.2 < failed / sum(outcomes.values()) < 0.45

    out = tmp_path / "out"
    kept = read_jsonl(out / "data.jsonl")
    rejected = read_jsonl(out / "rejected.jsonl")
    assert len(kept) + len(rejected) == requested
    assert len(kept) > requested * 0.6
    assert {r["id"] for r in kept}.isdisjoint({r["id"] for r in rejected})
    for row in rejected:  # a transport fault is never a rejection: only unusable answers are
        assert row["stage"] == "generate" and row["reason"] in KNOWN_REASONS and row["detail"], row
    info = json.loads((out / "run.json").read_text())
    generate = info["funnel"]["stages"][0]
    assert info["status"] == "complete"
    assert generate["kept"] + sum(generate["dropped"].values()) == requested
    assert info["funnel"]["kept"] + info["funnel"]["rejected"] == requested


@pytest.mark.parametrize("fault,reason", [("malformed", "bad_response"), ("truncated", "truncated"),
                                          ("empty", "unparseable")])
def test_a_content_fault_that_never_clears_is_rejected_and_nothing_kept_exits_1(tmp_path, loopback, fault, reason):
    url = loopback(faults={fault: 1.0}, retry_after=0.01)
    path = write_pipeline(tmp_path, url, generate__count=4, teacher__max_retries=1, generate__max_attempts=2)
    result = factory_cli("run", str(path), "--quiet")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"factory: error: kept 0 of 4 samples (top rejection reasons: {reason} 4); "
        f"see {tmp_path / 'out'}/rejected.jsonl")
    rejected = read_jsonl(tmp_path / "out" / "rejected.jsonl")
    assert len(rejected) == 4 and {r["reason"] for r in rejected} == {reason}
    from datasets import load_from_disk

    assert len(load_from_disk(str(tmp_path / "out" / "dataset"))) == 0  # what it writes still loads


@pytest.mark.parametrize("fault", ["server_error", "rate_limit"])
def test_a_teacher_that_stays_down_stops_the_run_as_incomplete(tmp_path, loopback, fault):
    url = loopback(faults={fault: 1.0}, retry_after=0.01)
    path = write_pipeline(tmp_path, url, generate__count=4, teacher__max_retries=0, teacher__outage_timeout=1.5)
    result = factory_cli("run", str(path), "--quiet")
    assert result.returncode == 3, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("factory: incomplete: 2 of 2 units pending (teacher unreachable since "), line
    assert line.endswith("; rerun the same command to finish"), line
    out = tmp_path / "out"
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "incomplete" and info["units"]["pending"] == 2
    assert {p.name for p in out.iterdir()} >= {"run.json", "run.sqlite"}
    assert not (out / "dataset").exists() and not (out / "rejected.jsonl").exists() and not (out / "README.md").exists()


def test_unreachable_from_the_start_is_incomplete_with_one_line(tmp_path):
    path = write_pipeline(tmp_path, "http://127.0.0.1:9/v1", generate__count=200, generate__pairs_per_request=1,
                          teacher__max_retries=0, teacher__outage_timeout=1)
    result = factory_cli("run", str(path), "--quiet")
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "incomplete: 200 of 200 units pending" in lines[0], lines
    assert "cannot reach http://127.0.0.1:9/v1" in lines[0]


def test_a_teacher_dying_mid_run_is_incomplete_and_a_rerun_finishes_without_resending(tmp_path):
    count = 80
    with loopback_process("--slots", "4", "--latency-median", "0.05") as first:
        path = write_pipeline(tmp_path, first, generate__count=count, generate__pairs_per_request=1,
                              teacher__max_retries=1, teacher__outage_timeout=2)
        proc = start_run(path)
        wait_for_rows(tmp_path / "out", 20, proc)
    # The teacher is gone here, with requests in flight.
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert "rerun the same command to finish" in err.strip().splitlines()[-1]
    done = stored(tmp_path / "out")
    assert 20 <= done < count
    assert json.loads((tmp_path / "out" / "run.json").read_text())["status"] == "incomplete"
    assert factory_cli("push", str(tmp_path / "out"), "--repo-id", "me/x").returncode == 2  # nothing partial goes out

    with loopback_process("--slots", "4") as second:  # the teacher is back, at another address
        rerun = factory_cli("run", str(path), "--quiet", "--set", f"teacher.base_url={second}")
        assert rerun.returncode == 0, rerun.stderr
        assert sum(server_stats(second)["received"].values()) == count - done  # nothing answered is asked again
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert info["status"] == "complete" and len(read_jsonl(tmp_path / "out" / "data.jsonl")) == count
    assert info["usage"]["requests"] == count and [i["status"] for i in info["invocations"]] == ["incomplete", "complete"]
