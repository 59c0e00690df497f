"""A third of requests failing in mixed ways: the run completes and every sample is accounted for."""

from __future__ import annotations

import json

import pytest

from factory.cli import main
from factory.loopback import FAULT_KINDS
from tests.conftest import read_jsonl, write_pipeline

KNOWN_REASONS = {"teacher_error", "bad_response", "unparseable", "truncated", "too_few_pairs"}


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
    for row in rejected:
        assert row["stage"] == "generate" and row["reason"] in KNOWN_REASONS and row["detail"], row
    info = json.loads((out / "run.json").read_text())
    generate = info["funnel"]["stages"][0]
    assert generate["kept"] + sum(generate["dropped"].values()) == requested
    assert info["funnel"]["kept"] + info["funnel"]["rejected"] == requested


@pytest.mark.parametrize("fault,reason", [("malformed", "bad_response"), ("truncated", "truncated"),
                                          ("empty", "unparseable"), ("server_error", "teacher_error"),
                                          ("rate_limit", "teacher_error")])
def test_each_fault_that_never_clears_is_rejected_with_its_reason(tmp_path, loopback, fault, reason):
    url = loopback(faults={fault: 1.0}, retry_after=0.01)
    path = write_pipeline(tmp_path, url, generate__count=4, teacher__max_retries=1, generate__max_attempts=2)
    assert main(["run", str(path), "--quiet"]) == 0
    rejected = read_jsonl(tmp_path / "out" / "rejected.jsonl")
    assert len(rejected) == 4 and {r["reason"] for r in rejected} == {reason}


def test_unreachable_teacher_stops_the_run_with_one_line(tmp_path, capsys):
    path = write_pipeline(tmp_path, "http://127.0.0.1:9/v1", generate__count=200, generate__pairs_per_request=1,
                          teacher__max_retries=0)
    assert main(["run", str(path), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reach http://127.0.0.1:9/v1" in err[0]


def test_rate_limits_shrink_the_window(tmp_path, loopback):
    url = loopback(faults={"rate_limit": 0.3}, retry_after=0.01, seed=5)
    path = write_pipeline(tmp_path, url, generate__count=60, generate__pairs_per_request=1, teacher__max_retries=8)
    assert main(["run", str(path), "--quiet"]) == 0
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert info["engine"]["throttled"] > 0
    assert info["funnel"]["kept"] == 60


def test_rpm_limit_paces_requests(tmp_path, loopback):
    url = loopback()
    path = write_pipeline(tmp_path, url, generate__count=30, generate__pairs_per_request=1, teacher__rpm=600)
    assert main(["run", str(path), "--quiet"]) == 0
    t = loopback.teacher
    # 10 requests a second with a one-second bucket: 30 requests cannot finish in under 2 s.
    assert t.last_answer - t.first_request >= 1.8
    assert sum(t.received.values()) == 30


def test_rate_limit_headers_teach_the_limits_of_a_paid_api(tmp_path, loopback, monkeypatch):
    # 300 requests a minute (5 a second) with a minute's bucket, told in OpenAI's headers.
    # 320 requests: a blind 512-wide window would send them all at once and 20 would
    # come back 429; reading the headers (the first request alone, as the key says a
    # paid API) spends the 300 at once and paces the other 20 at the refill rate.
    url = loopback(rate_limits={"requests": 300}, metrics=False)
    monkeypatch.setenv("LOOPBACK_KEY", "sk-loopback")
    path = write_pipeline(tmp_path, url, generate__count=320, generate__pairs_per_request=1,
                          teacher__api_key_env="LOOPBACK_KEY")
    assert main(["run", str(path), "--quiet"]) == 0
    t = loopback.teacher
    assert t.outcomes["over_rate_limit"] == 0 and t.outcomes["ok"] == 320, t.outcomes
    assert t.last_answer - t.first_request >= 3.0  # 20 beyond the bucket at 5 a second
    limits = json.loads((tmp_path / "out" / "run.json").read_text())["engine"]["concurrency"]["rate_limits"]
    assert limits["from_headers"]["requests"]["limit"] == 300
    assert 270 <= limits["from_headers"]["requests"]["per_minute"] <= 330
    assert limits["waited_for_refill_s"] > 2
