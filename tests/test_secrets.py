"""An API key in the environment reaches the teacher and nothing under the output folder."""

from __future__ import annotations

from tests.helpers.pipelines import write_pipeline
from tests.helpers.processes import factory_cli

KEY = "sk-factory-test-0123456789abcdefSECRET"


def test_api_key_leaves_no_trace_in_outputs(tmp_path, loopback):
    url = loopback(faults={"server_error": 0.5}, seed=2)  # its error bodies echo the key back
    path = write_pipeline(tmp_path, url, teacher__api_key_env="FACTORY_TEST_KEY", generate__count=10,
                          teacher__max_retries=0)
    done = factory_cli("run", str(path), env={"FACTORY_TEST_KEY": KEY})
    assert done.returncode == 0, done.stderr
    assert KEY not in done.stdout + done.stderr
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert {"run.json", "README.md", "run.sqlite", "rejected.jsonl"} <= {p.name for p in files}
    for p in files:
        data = p.read_bytes()
        assert KEY.encode() not in data, f"key found in {p}"
        assert KEY[-12:].encode() not in data, f"part of the key found in {p}"
    assert "FACTORY_TEST_KEY" in (tmp_path / "out" / "run.json").read_text()  # the name is fine


def test_an_outage_message_echoing_the_key_is_scrubbed(tmp_path, loopback):
    url = loopback(faults={"server_error": 1.0})
    path = write_pipeline(tmp_path, url, teacher__api_key_env="FACTORY_TEST_KEY", generate__count=2,
                          teacher__max_retries=0, teacher__outage_timeout=0.5)
    done = factory_cli("run", str(path), env={"FACTORY_TEST_KEY": KEY})
    assert done.returncode == 3, done.stderr
    assert KEY not in done.stderr and "***" in done.stderr
    for p in (tmp_path / "out").rglob("*"):
        if p.is_file():
            assert KEY.encode() not in p.read_bytes(), f"key found in {p}"
    assert "***" in (tmp_path / "out" / "run.json").read_text()


def test_key_is_sent_to_the_teacher(tmp_path, loopback, monkeypatch):
    from factory.cli import main

    url = loopback()
    monkeypatch.setenv("FACTORY_TEST_KEY", KEY)
    path = write_pipeline(tmp_path, url, teacher__api_key_env="FACTORY_TEST_KEY", generate__count=2)
    assert main(["run", str(path), "--quiet"]) == 0
    assert loopback.teacher.authorizations == {f"Bearer {KEY}"}
