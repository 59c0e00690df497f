"""Provider batch mode against the loopback teacher's batch endpoints (OpenAI and Anthropic shapes).

A run split into several batches, one expiring half done, one row refused, killed with
SIGKILL while its batches run and rerun: every sample ends kept or rejected with the
provider's reason, and nothing submitted before the kill is submitted again but the
rows the expired batch left unanswered.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.helpers.checkout import ROOT
from tests.helpers.datafiles import read_jsonl
from tests.helpers.pipelines import write_pipeline
from tests.helpers.processes import assert_user_error, factory_cli, start_run


def installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


# Only the tests that run the anthropic backend need its package: the OpenAI ones run without.
needs_anthropic = pytest.mark.skipif(not installed("anthropic"),
                                     reason="backend: anthropic needs the anthropic package (the test extra installs it)")
BACKENDS = ["openai", pytest.param("anthropic", marks=needs_anthropic)]

PRICE = {"input": 1000.0, "output": 2000.0}
TOPICS = 600  # x 2 personas, combined as a product: 1,200 different prompts
REFUSED_TOPIC = "topic 0050"  # the one prompt the provider refuses, whichever attempt


def batch_pipeline(tmp_path, url, backend: str, count: int, mode: str = "batch", teacher: dict | None = None,
                   filters: list | None = None, **batch):
    more = {f"teacher__{key}": value for key, value in (teacher or {}).items()}
    if filters is not None:
        more["filters"] = filters
    path = write_pipeline(tmp_path, url, generate__count=count, generate__pairs_per_request=1,
                          generate__combine="product", teacher__backend=backend, teacher__mode=mode,
                          teacher__price=PRICE,
                          teacher__batch={"poll_interval": 0.05, "gather": 0.3, **batch}, **more)
    (tmp_path / "topics.txt").write_text("".join(f"topic {i:04d}\n" for i in range(TOPICS)))
    return path


def wait_for(condition, proc, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()[1]}"
        assert time.monotonic() < deadline, "the condition never came true"
        time.sleep(0.02)


def journal(out_dir) -> list[dict]:
    db = sqlite3.connect(str(out_dir / "run.sqlite"))
    try:
        return [json.loads(v) for (v,) in db.execute("SELECT value FROM requests")]
    finally:
        db.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_killed_while_batches_run_then_rerun_submits_nothing_twice(tmp_path, loopback, backend):
    # Each batch ends 3 s after it is created; the second expires with half its rows done.
    url = loopback(batches={"delay": 3.0, "expire": {2: 0.5}, "error": f'"{REFUSED_TOPIC}" for a ship captain'})
    desk = loopback.teacher.desk
    path = batch_pipeline(tmp_path, url, backend, 1200, max_requests=400)
    out = tmp_path / "out"

    proc = start_run(path)
    wait_for(lambda: desk.created == 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Split into three files of 400, all at the provider and none ended when the run died.
    assert [len(b.rows) for b in desk.batches.values()] == [400, 400, 400]
    assert all(b.results is None for b in desk.batches.values())
    before = dict(desk.submitted)
    assert len(before) == 1200 and set(before.values()) == {1}

    rerun = factory_cli("run", str(path), "--quiet", timeout=300)
    assert rerun.returncode == 0, rerun.stderr

    expired = next(b for b in desk.batches.values() if b.ordinal == 2)
    unanswered = {row["custom_id"] for row, result in zip(expired.rows, expired.results, strict=True) if "not_run" in result}
    assert len(unanswered) == 200
    # Polled, not resubmitted: only what the expired batch left unanswered went out again.
    for key, times in before.items():
        assert desk.submitted[key] == times + (key in unanswered), key
    assert set(desk.submitted) == set(before)  # a refused request is not asked again

    kept = read_jsonl(out / "data.jsonl")
    rejected = read_jsonl(out / "rejected.jsonl")
    assert len(kept) == 1199 and len(rejected) == 1
    refusal = rejected[0]
    assert refusal["stage"] == "generate" and refusal["reason"] == "refused"
    assert "refuses (injected)" in refusal["detail"]  # the provider's own message
    assert refusal["metadata"]["sample_index"] == 50 * 2 + 1  # topic 50, the second persona (a product)
    assert len({r["id"] for r in kept} | {refusal["id"]}) == 1200

    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "complete"
    assert [i["status"] for i in info["invocations"]] == ["killed", "complete"]
    statuses = [b["status"] for b in info["teacher"]["batches"]]
    assert statuses.count("expired" if backend == "openai" else "ended") >= 1 and len(statuses) == desk.created
    # Cost at the batch price: half of what the same tokens cost online.
    answers = [v["completion"] for v in journal(out) if "completion" in v]
    assert len(answers) == 1199
    online = sum(a["prompt_tokens"] * PRICE["input"] + a["completion_tokens"] * PRICE["output"] for a in answers) / 1e6
    assert info["cost"]["batch_discount"] == 0.5
    assert info["cost"]["total"] == pytest.approx(online / 2, rel=1e-6)
    card = (out / "README.md").read_text()
    assert ("the OpenAI Batch API" if backend == "openai" else "Anthropic's Message Batches") in card
    assert "less the batch discount of 50%" in card


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_batch_the_provider_lost_is_submitted_again(tmp_path, loopback, backend):
    url = loopback(batches={"delay": 0.2, "lose": [1]})
    desk = loopback.teacher.desk
    path = batch_pipeline(tmp_path, url, backend, 30, max_requests=10)
    result = factory_cli("run", str(path), "--quiet")
    assert result.returncode == 0, result.stderr
    lost = next(b for b in desk.batches.values() if b.ordinal == 1)
    for row in lost.rows:
        assert desk.submitted[row["custom_id"]] == 2
    assert sum(desk.submitted.values()) == 40
    assert len(read_jsonl(tmp_path / "out" / "data.jsonl")) == 30
    assert json.loads((tmp_path / "out" / "run.json").read_text())["teacher"]["batch"]["lost"] == 1


def test_the_same_dataset_online_and_in_batches(tmp_path, loopback):
    url = loopback(batches={"delay": 0.1})
    online = batch_pipeline(tmp_path / "online", url, "openai", 24, mode="online")
    batched = batch_pipeline(tmp_path / "batch", url, "openai", 24, max_requests=7)
    for path in (online, batched):
        result = factory_cli("run", str(path), "--quiet")
        assert result.returncode == 0, result.stderr
    assert loopback.teacher.desk.created == 4  # 24 requests, 7 a batch
    first = [r["messages"] for r in read_jsonl(tmp_path / "online" / "out" / "data.jsonl")]
    second = [r["messages"] for r in read_jsonl(tmp_path / "batch" / "out" / "data.jsonl")]
    assert first == second


@needs_anthropic
def test_the_anthropic_backend_online(tmp_path, loopback):
    url = loopback()
    path = write_pipeline(tmp_path, url, generate__count=8, teacher__backend="anthropic")
    result = factory_cli("run", str(path), "--quiet")
    assert result.returncode == 0, result.stderr
    records = read_jsonl(tmp_path / "out" / "data.jsonl")
    assert len(records) == 8 and all(r["messages"][-1]["content"] for r in records)
    teacher = json.loads((tmp_path / "out" / "run.json").read_text())["teacher"]
    # The schema went in the subset Claude takes (the loopback refuses others, as Claude does).
    assert teacher["backend"] == "anthropic" and teacher["structured_output"] == "auto"


@needs_anthropic
def test_the_anthropic_backend_learns_its_limits_from_anthropics_headers(tmp_path, loopback):
    # The server keeps a 240 requests/minute bucket and reports it the way Anthropic does
    # (anthropic-ratelimit-*, the reset an RFC 3339 time); no limit is configured here.
    url = loopback(rate_limits={"requests": 240})
    path = write_pipeline(tmp_path, url, generate__count=40, generate__pairs_per_request=1,
                          teacher__backend="anthropic")
    result = factory_cli("run", str(path), "--quiet")
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl(tmp_path / "out" / "data.jsonl")) == 40
    engine = json.loads((tmp_path / "out" / "run.json").read_text())["engine"]
    learned = engine["concurrency"]["rate_limits"]["from_headers"]["requests"]
    assert learned["limit"] == 240 and 0 < learned["per_minute"] <= 240


@pytest.mark.parametrize("changes, words", [
    ({"teacher__backend": "transformers", "teacher__mode": "batch"}, ["teacher", "mode: batch", "backend"]),
    ({"teacher__mode": "batch", "teacher__batch": {"max_requests": 60000}}, ["batch.max_requests", "50,000"]),
    ({"teacher__backend": "anthropic", "teacher__mode": "batch", "teacher__batch": {"max_bytes": 300 * 2**20}},
     ["batch.max_bytes", "anthropic"]),
    ({"teacher__mode": "batch", "teacher__batch": {"poll_every": 5}}, ["teacher.batch.poll_every", "unknown key"]),
    ({"teacher__backend": "anthropic", "teacher__base_url": ["http://a:1", "http://b:1"]}, ["base_url", "anthropic"]),
    ({"teacher__backend": "anthropic", "teacher__sampling": {"temperature": 1.5}}, ["temperature", "0 to 1"]),
])
def test_batch_settings_that_cannot_work_are_refused_before_anything_is_sent(tmp_path, changes, words):
    path = write_pipeline(tmp_path, **changes)
    result = factory_cli("validate", str(path))
    assert_user_error(result.returncode, result.stderr, words)


def test_stopped_while_batches_run_then_resumed_with_another_key(tmp_path, loopback):
    url = loopback(batches={"delay": 2.0})
    desk = loopback.teacher.desk
    path = batch_pipeline(tmp_path, url, "openai", 40, teacher={"api_key_env": "BATCH_TEST_KEY"}, max_requests=20)

    proc = subprocess.Popen([sys.executable, "-m", "factory", "run", str(path), "--quiet"], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "BATCH_TEST_KEY": "sk-first-key-0123456789"})
    wait_for(lambda: desk.created == 2, proc)
    began = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    # A batch may take hours: the stop does not wait for it (nor for the 30 s grace).
    assert proc.returncode == 130, err
    assert time.monotonic() - began < 10
    assert all(b.results is None for b in desk.batches.values())

    rerun = factory_cli("run", str(path), "--quiet", env={"BATCH_TEST_KEY": "sk-second-key-9876543210"})
    assert rerun.returncode == 0, rerun.stderr
    assert desk.created == 2 and set(desk.submitted.values()) == {1} and len(desk.submitted) == 40
    assert len(read_jsonl(tmp_path / "out" / "data.jsonl")) == 40
    stored = (tmp_path / "out" / "run.sqlite").read_bytes() + (tmp_path / "out" / "run.json").read_bytes()
    assert b"sk-first-key" not in stored and b"sk-second-key" not in stored


def test_salvage_keeps_the_batches_in_progress(tmp_path, loopback):
    url = loopback(batches={"delay": 2.0})
    desk = loopback.teacher.desk
    path = batch_pipeline(tmp_path, url, "openai", 40, max_requests=20)
    proc = start_run(path)
    wait_for(lambda: desk.created == 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    salvaged = factory_cli("salvage", str(tmp_path / "out"))
    assert salvaged.returncode == 0, salvaged.stderr
    rerun = factory_cli("run", str(path), "--quiet")
    assert rerun.returncode == 0, rerun.stderr
    assert desk.created == 2 and len(desk.submitted) == 40 and set(desk.submitted.values()) == {1}


CHAT = {"choices": [{"message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2}, "model": "m"}
MESSAGE = {"type": "message", "role": "assistant", "model": "m", "stop_reason": "max_tokens",
           "content": [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "fine"}],
           "usage": {"input_tokens": 3, "cache_read_input_tokens": 2, "output_tokens": 2}}


@pytest.mark.parametrize("row, expected", [
    ({"response": {"status_code": 200, "body": CHAT}, "error": None}, "completion"),
    ({"response": {"status_code": 200, "body": {"choices": []}}, "error": None}, "error"),
    ({"response": {"status_code": 400, "body": {"error": {"message": "bad"}}}, "error": None}, "refused"),
    ({"response": {"status_code": 429, "body": {"error": {"message": "slow"}}}, "error": None}, "missing"),
    ({"response": {"status_code": 500, "body": {"error": {"message": "oops"}}}, "error": None}, "missing"),
    ({"response": None, "error": {"code": "batch_expired", "message": "late"}}, "missing"),
    ({"response": None, "error": {"code": "batch_cancelled", "message": "cancelled"}}, "missing"),
])
def test_openai_batch_rows_are_answers_refusals_or_unanswered(row, expected):
    from factory.teachers.batch.openai_batches import row_outcome

    outcome = row_outcome({"custom_id": "k", **row}, "m", 100)
    assert list(outcome)[0] == expected
    if expected == "refused":
        assert "bad" in outcome["refused"]


@pytest.mark.parametrize("result, expected", [
    ({"type": "succeeded", "message": MESSAGE}, "completion"),
    ({"type": "errored", "error": {"type": "error", "error": {"type": "invalid_request_error", "message": "no"}}},
     "refused"),
    ({"type": "errored", "error": {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}},
     "missing"),
    ({"type": "canceled"}, "missing"),
    ({"type": "expired"}, "missing"),
])
def test_anthropic_batch_results_are_answers_refusals_or_unanswered(result, expected):
    from factory.teachers.batch.anthropic_batches import result_outcome

    outcome = result_outcome(result, "m", 100)
    assert list(outcome)[0] == expected
    if expected == "completion":  # the thinking block stays out of the answer; cached input counts
        assert outcome["completion"]["text"] == "fine" and outcome["completion"]["finish_reason"] == "length"
        assert outcome["completion"]["prompt_tokens"] == 5


def test_requests_no_batch_answers_go_out_a_bounded_number_of_times_then_the_run_is_incomplete(tmp_path, loopback):
    url = loopback(batches={"delay": 0.1, "expire": {"*": 0.0}})
    desk = loopback.teacher.desk
    path = batch_pipeline(tmp_path, url, "openai", 4, teacher={"outage_timeout": 1}, resubmits=2)
    result = factory_cli("run", str(path), "--quiet")
    assert result.returncode == 3, result.stderr
    assert "incomplete" in result.stderr and "no answer after 3 batches" in result.stderr
    assert len(desk.submitted) == 4 and set(desk.submitted.values()) == {3}  # once, then twice more
    assert json.loads((tmp_path / "out" / "run.json").read_text())["status"] == "incomplete"


def test_the_judge_grades_through_batches_too(tmp_path, loopback):
    url = loopback(batches={"delay": 0.1})
    desk = loopback.teacher.desk
    path = batch_pipeline(tmp_path, url, "openai", 30, filters=[{"type": "judge", "min_score": 1}])
    result = factory_cli("run", str(path), "--quiet")
    assert result.returncode == 0, result.stderr
    # One batch of the 30 requests, then one of the 30 gradings: nothing went online.
    assert desk.created == 2 and len(desk.submitted) == 60
    assert sum(loopback.teacher.received.values()) == 0
    records = read_jsonl(tmp_path / "out" / "data.jsonl")
    assert len(records) == 30 and all("judge_score" in r["metadata"] for r in records)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_batch_created_the_moment_before_a_crash_is_found_again(tmp_path, loopback, backend):
    from factory.config.pipeline import TeacherConfig
    from factory.store.run_store import RunStore
    from factory.teachers.base import Request
    from factory.teachers.batch.batch_teacher import BatchTeacher, make_provider

    url = loopback(batches={"delay": 0.2})
    desk = loopback.teacher.desk
    config = TeacherConfig(backend=backend, model="loopback", base_url=url, mode="batch",
                           batch={"poll_interval": 0.05})
    requests = [Request([{"role": "user", "content": f"Say something about tides, take {i}."}], seed=i,
                        key=f"{i:064x}") for i in range(5)]

    async def crash_then_rerun(store):
        # The first process records the batch, the provider creates it, and the process
        # dies before the batch's id reaches the store.
        provider = make_provider(config)
        await provider.start()
        local = store.add_batch(provider.name, [r.key for r in requests])
        await provider.submit([provider.entry(r.key, r) for r in requests],
                              lambda file: store.update_batch(local, file=file))
        await provider.close()
        assert store.batches()[0]["state"] == "submitting"
        teacher = BatchTeacher(config, store)
        await teacher.start()
        try:
            return await asyncio.gather(*(teacher.complete(r) for r in requests))
        finally:
            await teacher.close()

    with RunStore.open(tmp_path) as store:
        store.begin_invocation("test")
        answers = asyncio.run(crash_then_rerun(store))
        assert store.batches()[0]["state"] == "collected"
    assert desk.created == 1 and set(desk.submitted.values()) == {1}
    assert len(answers) == 5 and all(a.text for a in answers)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_server_without_a_batch_api_is_one_line(tmp_path, loopback, backend):
    url = loopback().replace("/v1", "/no-batches/v1")  # every path 404s, as on a server with no batch API
    path = batch_pipeline(tmp_path, url, backend, 4)
    result = factory_cli("run", str(path), "--quiet")
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "has no batch API" in lines[0] and "mode: online" in lines[0], result.stderr


def test_a_batch_over_the_providers_queue_waits_for_room_instead_of_failing_the_run(tmp_path, loopback):
    # Room for two batches of 200 at a time (OpenAI's enqueued token limit, in requests).
    url = loopback(batches={"delay": 1.0, "queue_limit": 400})
    desk = loopback.teacher.desk
    path = batch_pipeline(tmp_path, url, "openai", 600, max_requests=200, resubmits=0)
    result = factory_cli("run", str(path), "--quiet")
    assert result.returncode == 0, result.stderr
    refused = [b for b in desk.batches.values() if b.refused]
    assert len(refused) == 1 and desk.created == 4
    # The refused batch's requests went out once more (not counted against resubmits: 0),
    # after a batch in progress ended; all the others once.
    again = {row["custom_id"] for row in refused[0].rows}
    assert all(desk.submitted[k] == (2 if k in again else 1) for k in desk.submitted) and len(desk.submitted) == 600
    assert len(read_jsonl(tmp_path / "out" / "data.jsonl")) == 600


def test_progress_shows_the_batches_and_the_requests_in_them(tmp_path, loopback):
    url = loopback(batches={"delay": 2.0})  # the three are submitted before the first ends
    path = batch_pipeline(tmp_path, url, "openai", 12, max_requests=5)
    result = factory_cli("run", str(path))  # not a terminal: plain progress lines on stderr
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert sum("submitted: 5 requests" in line for line in lines) == 2
    assert any("submitted: 2 requests" in line for line in lines)
    assert sum(" completed: 5 of 5 answered" in line for line in lines) == 2
    assert any("batches 3 submitted, 3 in progress, 0 done; requests 0 queued, 12 in batches" in line
               for line in lines)
    assert "batches 3 submitted, 0 in progress, 3 done; requests 0 queued, 0 in batches" in lines[-2] + lines[-1]
