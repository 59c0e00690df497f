"""Structured output on every server: the ladder of modes, found without idling the server, remembered in the run store."""

from __future__ import annotations

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
from tests.helpers.processes import factory_cli, start_run


def settings(out) -> dict:
    db = sqlite3.connect(str(out / "run.sqlite"))
    try:
        return {key: json.loads(value) for key, value in db.execute("SELECT key, value FROM settings")}
    finally:
        db.close()


def kind(body: dict) -> str:
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_object" and "schema" in fmt:
        return "json_object_schema"
    return fmt.get("type") or next((k for k in ("structured_outputs", "guided_json") if k in body), "prompt")


def test_llama_cpp_python_refuses_json_schema_with_a_500_and_takes_json_object_with_a_schema(tmp_path, loopback):
    url = loopback(imitate="llama_cpp", metrics=False, keep_bodies=True)
    teacher = loopback.teacher
    path = write_pipeline(tmp_path, url, generate__count=8)
    first = factory_cli("run", str(path), "--quiet")
    assert first.returncode == 0, first.stderr
    # No probe alone: the 4 units go out at once in json_schema, each refused once at most
    # (the 500 names response_format: refused, not retried), then each in json_object
    # with the schema, where every later request goes directly.
    kinds = [kind(b) for b in teacher.bodies]
    refused = [b["messages"] for b in teacher.bodies if kind(b) == "json_schema"]
    assert kinds.count("json_object_schema") == 4 and len(kinds) == 4 + len(refused)
    assert 1 <= len(refused) == teacher.outcomes["refused_response_format"] <= 4
    assert all(refused.count(m) == 1 for m in refused)  # no request refused twice in one mode
    assert len(read_jsonl(tmp_path / "out" / "data.jsonl")) == 8
    assert settings(tmp_path / "out") == {"structured_mode:loopback": "json_object_schema"}
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert info["teacher"]["structured_output"] == "auto: json_object_schema; refused: json_schema"
    # The server has no /metrics: said once, on the console.
    assert first.stderr.count("no usable /metrics") == 1 and "--enable-metrics" in first.stderr

    teacher.bodies.clear()
    second = factory_cli("run", str(path), "--quiet", "--set", "generate.count=12")
    assert second.returncode == 0, second.stderr
    # The rerun starts where the probe ended: no json_schema, only the 2 new units sent.
    assert [kind(b) for b in teacher.bodies] == ["json_object_schema"] * 2


@pytest.mark.parametrize("mode", ["json_object_schema", "structured_outputs", "guided_json", "json_object", "prompt"])
def test_each_mode_asks_as_its_server_takes_it(tmp_path, loopback, mode):
    url = loopback(keep_bodies=True)
    teacher = loopback.teacher
    path = write_pipeline(tmp_path, url, generate__count=4, teacher__structured_output=mode)
    result = factory_cli("run", str(path), "--quiet")
    assert result.returncode == 0, result.stderr
    assert {kind(b) for b in teacher.bodies} == {mode}
    # All but json_schema also state the schema in the prompt: a server that drops the
    # field it does not know still gets an answer of the right shape.
    assert all("JSON schema" in b["messages"][-1]["content"] for b in teacher.bodies)
    assert len(read_jsonl(tmp_path / "out" / "data.jsonl")) == 4
    assert settings(tmp_path / "out") == {}  # a mode the user chose is not probed nor stored


def test_a_mode_the_server_refuses_stops_the_run_saying_what_to_set(tmp_path, loopback):
    url = loopback(imitate="llama_cpp", metrics=False, keep_bodies=True)
    path = write_pipeline(tmp_path, url, generate__count=4, teacher__structured_output="json_schema",
                          teacher__max_retries=0)
    result = factory_cli("run", str(path), "--quiet")
    assert result.returncode != 0
    assert "structured_output: auto" in result.stderr


@pytest.mark.parametrize("imitate", ["openai", "llama_cpp"])
def test_finding_the_mode_keeps_every_slot_busy(tmp_path, loopback, imitate):
    """No request waits for another to find the mode: the whole window is at the server
    before its first answer (refusals, which cost nothing, step every request down)."""
    url = loopback(latency_median=1.0, slots=8, metrics=False, imitate=imitate)
    teacher = loopback.teacher
    path = write_pipeline(tmp_path, url, generate__count=8, generate__pairs_per_request=1,
                          teacher__max_concurrency=8)
    result = factory_cli("run", str(path), "--quiet")
    assert result.returncode == 0, result.stderr
    first_answer = min(end for _, end in teacher.intervals)
    # Ordered by the server's own clock: every unit was in a slot before any answer came back.
    assert sum(start < first_answer for start, _ in teacher.intervals) == 8
    refused = teacher.outcomes["refused_response_format"]
    assert len(teacher.arrivals) == 8 + refused and refused <= (8 if imitate == "llama_cpp" else 0)


# -- a signal while the mode is not known yet ---------------------------------------------

API_RUN = """
import sys
import factory
from factory.core.stopping import Stopped

try:
    factory.Pipeline.from_yaml(sys.argv[1]).run(out=sys.argv[2])
except Stopped as err:
    sys.exit(err.exit_code)
"""


@pytest.mark.parametrize("how", ["cli", "api"])
def test_a_signal_while_the_first_request_probes_starts_nothing_new(tmp_path, loopback, how):
    """SIGINT while the first schema-carrying request is out (the mode not yet known): the
    requests that went out before it finish and are stored, and none starts after it, not
    even when that first answer comes back."""
    latency = 2.0
    url = loopback(latency_median=latency, slots=8)
    teacher = loopback.teacher
    path = write_pipeline(tmp_path, url, generate__count=40, generate__pairs_per_request=1,
                          teacher__max_concurrency=8)
    out = tmp_path / "out"
    if how == "cli":
        proc = start_run(path)
    else:
        proc = subprocess.Popen([sys.executable, "-c", API_RUN, str(path), str(out)], cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not teacher.arrivals:  # the first request is on the wire, its answer 2 s away
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        signalled = time.time()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    first_answer = min(end for _, end in teacher.intervals)
    assert signalled < first_answer, "the signal came after an answer: the test proves nothing"
    # Ordered by the server's own clock: no request reached it after it gave its first answer.
    late = [t for t in teacher.arrivals if t > first_answer]
    assert not late, f"{len(late)} requests started after the signal"
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "stopped"
    assert info["usage"]["requests"] == len(teacher.arrivals)  # every request sent was answered and stored

