"""The run store as a user meets it: one writer per folder, a remembered json_schema
refusal, request keys of in-process teachers, a factory 0.1 journal adopted, a damaged
store salvaged, and SIGINT/SIGTERM draining. Real HTTP, real SQLite, real processes."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import time

import pytest

from factory.config.pipeline import TeacherConfig, load_pipeline
from factory.engine.engine import Engine
from factory.teachers.limits import AdaptiveWindow, RateLimiter
from factory.run.prepare import prepare
from factory.store.run_store import RunStore, request_key
from factory.tasks.base import request_seed
from factory.teachers.base import Completion, Request
from factory.teachers.openai_teacher import OpenAITeacher
from tests.helpers.datafiles import read_jsonl
from tests.helpers.pipelines import slow_pipeline, write_pipeline
from tests.helpers.processes import assert_user_error, factory_cli, start_run, wait_for_rows
from tests.helpers.run_store import stored


def received(teacher) -> int:
    """Chat requests a loopback teacher has been sent (refused ones included)."""
    return sum(teacher.received.values())


def reap(proc) -> None:
    """After a test that failed half-way: leave no run behind."""
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


# -- one writer per folder ---------------------------------------------------------------


def test_a_second_command_on_a_folder_in_use_exits_2_naming_the_holder_and_sends_nothing(tmp_path, loopback):
    slow_url = loopback(latency_median=0.2, slots=1)
    slow = loopback.teacher
    other_url = loopback()
    other = loopback.teacher
    count = 150
    path = write_pipeline(tmp_path, slow_url, generate__count=count, generate__pairs_per_request=1,
                          teacher__max_concurrency=1)
    out = tmp_path / "out"
    rows = tmp_path / "some.jsonl"
    rows.write_text(json.dumps({"messages": [{"role": "user", "content": "What is a tide?"},
                                             {"role": "assistant", "content": "The sea rising and falling."}]}) + "\n")
    first = start_run(path)
    try:
        wait_for_rows(out, 1, first)
        # Both would send to `other` if they got past the lock: it must see nothing.
        began = time.monotonic()
        again = factory_cli("run", str(path), "--quiet", "--set", f"teacher.base_url={other_url}")
        assert_user_error(again.returncode, again.stderr, [str(out), f"pid {first.pid}"])
        filtered = factory_cli("filter", str(path), "--quiet", "--input", str(rows), "--out", str(out),
                               "--set", f"teacher.base_url={other_url}", "--set", "filters=[{type: judge}]")
        assert_user_error(filtered.returncode, filtered.stderr, [str(out), f"pid {first.pid}"])
        # At once: neither waited for the first run to let go of the folder.
        assert first.poll() is None, "the first run ended before the second was refused; make it longer"
        assert time.monotonic() - began < 60
        assert received(other) == 0
        assert not (out / "dataset").exists()
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=30)
    finally:
        reap(first)
    assert first.returncode == 143, err
    done = stored(out)
    assert 0 < done < count
    assert received(slow) == done

    # The first process is gone, and its lock with it: the folder is free again.
    rerun = factory_cli("run", str(path), "--quiet", "--set", f"teacher.base_url={other_url}")
    assert rerun.returncode == 0, rerun.stderr
    assert received(other) == count - done


# -- a server that refuses json_schema ----------------------------------------------------


def test_a_refused_json_schema_is_remembered_and_answers_replayed(tmp_path, loopback):
    url = loopback(refuse_response_format=True, keep_bodies=True)
    teacher = loopback.teacher
    path = write_pipeline(tmp_path, url, generate__count=8, generate__pairs_per_request=2)
    out = tmp_path / "out"
    first = factory_cli("run", str(path), "--quiet")
    assert first.returncode == 0, first.stderr
    # No probe alone: the 4 units go out at once; json_schema, then json_object with a schema,
    # are refused (a unit at most once in each), then vLLM's field takes every unit.
    refused = [(json.dumps(b["messages"]), json.dumps(b["response_format"], sort_keys=True))
               for b in teacher.bodies if "response_format" in b]
    assert 2 <= len(refused) == len(set(refused)) <= 8
    assert sum("structured_outputs" in body for body in teacher.bodies) == 4
    first_rows = read_jsonl(out / "data.jsonl")
    assert len(first_rows) == 8
    bodies_before, sent_before = len(teacher.bodies), received(teacher)

    second = factory_cli("run", str(path), "--quiet", "--set", "generate.count=12")
    assert second.returncode == 0, second.stderr
    new = teacher.bodies[bodies_before:]
    assert new and not any("response_format" in body for body in new), "the second run probed again"
    # 6 units now, 4 of them answered by the first run: only the 2 new units are asked for.
    assert received(teacher) - sent_before == 2 and len(new) == 2
    rows = read_jsonl(out / "data.jsonl")
    assert len(rows) == 12 and rows[:8] == first_rows

    db = sqlite3.connect(str(out / "run.sqlite"))
    try:
        settings = dict(db.execute("SELECT key, value FROM settings"))
    finally:
        db.close()
    assert {key: json.loads(value) for key, value in settings.items()} == {"structured_mode:loopback": "structured_outputs"}


# -- request keys of in-process teachers --------------------------------------------------


def _in_process_teacher(backend: str, config: TeacherConfig):
    if backend == "transformers":
        from factory.teachers.in_process.transformers_teacher import TransformersTeacher

        return TransformersTeacher(config)  # not started: no model is loaded
    from factory.teachers.in_process.vllm_teacher import VLLMTeacher

    return VLLMTeacher(config)


@pytest.mark.parametrize("backend", ["transformers", "vllm"])
def test_in_process_backends_key_requests_by_their_sampling(tmp_path, backend):
    request = Request([{"role": "user", "content": "Two facts about tides."}], {"type": "object"}, "facts", 42)
    base = {"backend": backend, "model": "some/instruct-model", "sampling": {"temperature": 0.7}}

    with RunStore.open(tmp_path / "out") as store:
        def key(**changes) -> str:
            config = TeacherConfig.model_validate({**base, **changes})
            engine = Engine(_in_process_teacher(backend, config), store, AdaptiveWindow(4), RateLimiter(None, None))
            return engine.key(request, 3, 0)

        reference = key()
        assert key() == reference
        assert key(sampling={"temperature": 1.2}) != reference
        assert key(sampling={"temperature": 0.7, "max_tokens": 77}) != reference
        assert key(model="another/model") != reference
        # Where and how fast it runs decides nothing about the answer.
        assert key(base_url="http://elsewhere:8000/v1") == reference
        assert key(max_concurrency=3) == reference
        assert key(timeout=5) == reference
        assert key(batch_size=2) == reference
        # The same request of another unit or step is another request.
        config = TeacherConfig.model_validate(base)
        engine = Engine(_in_process_teacher(backend, config), store, AdaptiveWindow(4), RateLimiter(None, None))
        assert len({engine.key(request, 3, 0), engine.key(request, 4, 0), engine.key(request, 3, 1)}) == 3


# -- a factory 0.1 journal ----------------------------------------------------------------


def _write_01_journal(path, entries: dict[str, dict]) -> None:
    """journal.sqlite as factory 0.1 wrote it."""
    db = sqlite3.connect(str(path))
    try:
        db.execute("CREATE TABLE completions (key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL)"
                   " WITHOUT ROWID")
        db.executemany("INSERT INTO completions (key, value, created) VALUES (?, ?, ?)",
                       [(k, json.dumps(v), time.time() - 3600) for k, v in entries.items()])
        db.execute("PRAGMA user_version=1")
        db.commit()
    finally:
        db.close()


def test_a_factory_01_journal_is_adopted_and_only_the_rest_is_sent(tmp_path, loopback):
    url = loopback()
    teacher = loopback.teacher
    path = write_pipeline(tmp_path, url, generate__count=12, generate__pairs_per_request=2)
    out = tmp_path / "out"
    pipeline = load_pipeline(path)
    task = prepare(pipeline).task
    units = task.units()
    assert units == 6
    old = OpenAITeacher(pipeline.config.teacher)
    entries = {}
    answered = list(range(0, units, 2))  # half of the units
    for unit in answered:
        request = Request(task._prompt(task.variables(unit)), task.schema, task.schema_name,
                          request_seed(pipeline.config.seed, unit, 0))
        payload = old.legacy_payloads(request)[0]  # the wire body 0.1 sent (json_schema mode)
        assert "response_format" in payload
        text = json.dumps({"pairs": [{"question": f"Old question {unit}.{i}?", "answer": f"Old answer {unit}.{i}."}
                                     for i in range(2)]})
        completion = Completion(text, "stop", 30, 20, "loopback")
        entries[request_key({"request": payload, "unit": unit, "step": 0})] = {
            "completion": completion.to_dict(), "sent": "x"}
    out.mkdir()
    _write_01_journal(out / "journal.sqlite", entries)

    done = factory_cli("run", str(path), "--quiet")
    assert done.returncode == 0, done.stderr
    assert received(teacher) == units - len(answered)
    assert not (out / "journal.sqlite").exists()
    assert not list(out.glob("journal.sqlite*"))
    questions = [r["messages"][0]["content"] for r in read_jsonl(out / "data.jsonl")]
    assert len(questions) == 12
    assert [q for q in questions if q.startswith("Old question")] == [
        f"Old question {u}.{i}?" for u in answered for i in range(2)]
    info = json.loads((out / "run.json").read_text())
    statuses = [inv["status"] for inv in info["invocations"]]
    assert statuses == ["migrated", "complete"]
    migrated = info["invocations"][0]
    assert migrated["usage"]["requests"] == len(answered)
    assert info["invocations"][1]["usage"]["requests"] == units - len(answered)  # not the replayed ones
    assert info["usage"]["requests"] == units  # each answer counted once: 3 paid by 0.1, 3 now

    # And the adopted answers stay adopted: a rerun sends nothing.
    again = factory_cli("run", str(path), "--quiet")
    assert again.returncode == 0, again.stderr
    assert received(teacher) == units - len(answered)


# -- a damaged store ----------------------------------------------------------------------


def _checkpoint(db_path) -> None:
    db = sqlite3.connect(str(db_path))
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    wal = db_path.with_name(db_path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0


def _truncate(db_path) -> None:
    size = db_path.stat().st_size
    with open(db_path, "r+b") as f:
        f.truncate(size // 2)


def _junk_header(db_path) -> None:
    with open(db_path, "r+b") as f:
        f.write(os.urandom(100))


@pytest.mark.parametrize("damage", [_truncate, _junk_header], ids=["truncated", "junk-header"])
def test_a_damaged_store_names_salvage_and_salvage_recovers_the_answers(tmp_path, loopback, damage):
    url = loopback()
    teacher = loopback.teacher
    count = 600  # enough pages of answers that half the file holds some of them
    path = write_pipeline(tmp_path, url, generate__count=count, generate__pairs_per_request=1)
    out = tmp_path / "out"
    first = factory_cli("run", str(path), "--quiet")
    assert first.returncode == 0, first.stderr
    assert stored(out) == count == received(teacher)  # one request per unit: none was asked twice
    data = (out / "data.jsonl").read_text()

    db_path = out / "run.sqlite"
    _checkpoint(db_path)
    damage(db_path)

    broken = factory_cli("run", str(path), "--quiet")
    assert broken.returncode != 0
    assert "Traceback" not in broken.stderr, broken.stderr
    lines = broken.stderr.strip().splitlines()
    assert len(lines) == 1, broken.stderr
    assert "factory salvage" in lines[0] and str(out) in lines[0], lines[0]
    assert received(teacher) == count  # nothing was sent

    salvaged = factory_cli("salvage", str(out))
    assert salvaged.returncode == 0, salvaged.stderr
    found = re.search(r"salvaged (\d+) answers", salvaged.stdout)
    assert found, salvaged.stdout
    answers = int(found.group(1))
    if damage is _truncate:
        assert 0 < answers < count  # the pages past the cut are gone, the ones before it are read
    else:
        assert answers == count  # only the header was hit: every page of answers is intact
    assert list(out.glob("run.sqlite.damaged-*")), "the damaged file is kept aside"

    rerun = factory_cli("run", str(path), "--quiet")
    assert rerun.returncode == 0, rerun.stderr
    assert received(teacher) - count == count - answers
    assert (out / "data.jsonl").read_text() == data


# -- signals ------------------------------------------------------------------------------


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_drains_the_requests_in_flight_and_a_rerun_resumes(tmp_path, loopback, sig, code):
    count = 40
    path = slow_pipeline(tmp_path, loopback, count, slots=4, latency=0.3)
    teacher = loopback.teacher
    out = tmp_path / "out"
    proc = start_run(path)
    try:
        wait_for_rows(out, 4, proc)
        proc.send_signal(sig)
        signalled = time.monotonic()
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - signalled
    finally:
        reap(proc)
    assert proc.returncode == code, err
    assert took < 8, f"took {took:.1f} s to drain four requests of 0.3 s"
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("factory: stopped:") and "rerun to resume" in last, err
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "stopped"
    assert info["invocations"][-1]["status"] == "stopped"
    assert not (out / "dataset").exists() and not (out / "data.jsonl").exists()
    done = stored(out)
    # Every request that went out was allowed to land, and was stored.
    assert received(teacher) == done
    assert 4 <= done < count

    rerun = factory_cli("run", str(path), "--quiet")
    assert rerun.returncode == 0, rerun.stderr
    assert received(teacher) == count
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "complete" and info["usage"]["requests"] == count
    assert [inv["status"] for inv in info["invocations"]] == ["stopped", "complete"]


def test_a_second_sigint_stops_at_once(tmp_path, loopback):
    latency = 5.0
    path = slow_pipeline(tmp_path, loopback, 40, slots=4, latency=latency)
    teacher = loopback.teacher
    proc = start_run(path)
    try:
        deadline = time.monotonic() + 60
        while received(teacher) == 0:  # requests in flight: the drain would wait for them
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        assert proc.poll() is None, "the first SIGINT should drain, not stop at once"
        proc.send_signal(signal.SIGINT)
        second = time.monotonic()
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - second
    finally:
        reap(proc)
    assert proc.returncode == 130, err
    assert took < latency / 2, f"took {took:.1f} s after the second SIGINT"
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("factory: stopped:"), err
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert info["status"] == "stopped"
    assert not (tmp_path / "out" / "dataset").exists()


def test_a_full_disk_is_one_line_and_a_rerun_pays_only_for_what_was_in_flight(tmp_path, loopback):
    # A real full disk: a small tmpfs (root only; CI's container may not allow it, and then
    # this says so). 6 MB fills at about 400 of the 600 answers; the store's reserve lets
    # it write its last group of answers again after folding its log in.
    import subprocess as sp

    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        mounted = sp.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(disk)],
                         capture_output=True).returncode == 0
    except OSError:
        mounted = False
    if not mounted:
        pytest.skip("cannot mount a small tmpfs here (needs root and the mount command)")
    window = 32
    try:
        url = loopback(latency_median=0.02)
        out = disk / "out"
        path = write_pipeline(tmp_path, url, generate__count=600, generate__pairs_per_request=1, filters=[],
                              output__dir=str(out), teacher__max_concurrency=window)
        full = factory_cli("run", str(path), "--quiet")
        assert full.returncode == 1, full.stderr
        lines = full.stderr.strip().splitlines()
        assert len(lines) == 1 and "the disk is full" in lines[0] and "rerun the same command" in lines[0], lines
        assert "the run store needs about" in lines[0] and "every answer received is stored" in lines[0], lines
        assert not list(out.glob(".staging-*"))
        first = sum(loopback.teacher.received.values())
        assert 0 < first < 600
        assert sp.run(["mount", "-o", "remount,size=64m", str(disk)]).returncode == 0
        done = factory_cli("run", str(path), "--quiet")
        assert done.returncode == 0, done.stderr
        assert len(read_jsonl(out / "data.jsonl")) == 600
        repaid = sum(1 for n in loopback.teacher.received.values() if n > 1)
        assert repaid <= window, f"{repaid} answers paid twice; {window} were in flight at most"
        assert not list(out.glob(".staging-*"))
    finally:
        sp.run(["umount", "-l", str(disk)])
