"""Structured output on every server: the ladder of modes, one probe, remembered in the run store."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.helpers.datafiles import read_jsonl
from tests.helpers.pipelines import write_pipeline
from tests.helpers.processes import factory_cli


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
    # One probe: json_schema once (the 500 names response_format: refused, not retried),
    # then every request, the others included, as json_object with the schema.
    assert [kind(b) for b in teacher.bodies] == ["json_schema"] + ["json_object_schema"] * 4
    assert teacher.outcomes["refused_response_format"] == 1
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
