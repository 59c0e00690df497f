"""An API key in the environment reaches the teacher and nothing under the output folder."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from tests.helpers.pipelines import write_pipeline
from tests.helpers.processes import assert_user_error, factory_cli

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


# Inline secrets: refused with one line naming the file and the key, before anything is
# sent or written; the secret itself is shown nowhere.
INLINE = "sk-inline-0123456789abcdefINLINE"
PASSWORD = "hunter2-PASSWORD-9876"


def _nowhere(secret: str, folder, console: str) -> None:
    """`secret` is on neither the console nor any file under `folder` but the user's own
    pipeline file (grep -r)."""
    assert secret not in console, console
    for p in folder.rglob("*"):
        if p.is_file() and p != folder / "pipeline.yaml":
            assert secret.encode() not in p.read_bytes(), f"secret found in {p}"


@pytest.mark.parametrize("extra_body, named", [
    ({"api_key": INLINE}, "api_key"),
    ({"top_k": 20, "auth": {"token": INLINE}}, "auth.token"),
    ({"chat_template_kwargs": {"note": INLINE}}, "chat_template_kwargs.note"),  # by its form: sk-...
    ({"Authorization": f"Bearer {PASSWORD}"}, "Authorization"),
])
def test_a_secret_in_extra_body_is_refused_and_written_nowhere(tmp_path, loopback, extra_body, named):
    url = loopback()
    path = write_pipeline(tmp_path, url, teacher__extra_body=extra_body, generate__count=2)
    done = factory_cli("run", str(path))
    assert_user_error(done.returncode, done.stderr, [str(path), f"teacher.extra_body.{named}", "api_key_env"])
    assert loopback.teacher.arrivals == []
    secret = INLINE if INLINE in str(extra_body) else PASSWORD
    _nowhere(secret, tmp_path, done.stdout + done.stderr)


def test_a_secret_in_extra_body_given_with_set_is_refused_and_written_nowhere(tmp_path, loopback):
    url = loopback()
    path = write_pipeline(tmp_path, url, generate__count=2)
    done = factory_cli("run", str(path), "--set", f"teacher.extra_body={{top_k: 20, api_key: {INLINE}}}")
    assert_user_error(done.returncode, done.stderr, [str(path), "teacher.extra_body.api_key", "api_key_env"])
    assert loopback.teacher.arrivals == []
    _nowhere(INLINE, tmp_path, done.stdout + done.stderr)


def test_harmless_extra_body_values_are_sent_and_recorded(tmp_path, loopback):
    url = loopback(keep_bodies=True)
    extra = {"top_k": 20, "min_p": 0.05, "prompt_cache_key": "qa-run", "chat_template_kwargs": {"enable_thinking": False}}
    path = write_pipeline(tmp_path, url, teacher__extra_body=extra, generate__count=2, filters=[])
    done = factory_cli("run", str(path), "--quiet")
    assert done.returncode == 0, done.stderr
    assert all(body[k] == v for body in loopback.teacher.bodies for k, v in extra.items())
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert info["config"]["teacher"]["extra_body"] == extra


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
@pytest.mark.parametrize("key_env", [None, "FACTORY_TEST_KEY"])
@pytest.mark.parametrize("given", ["file", "set"])
def test_a_password_in_base_url_is_refused_and_written_nowhere(tmp_path, loopback, given, key_env, dry_run):
    # A dry run asks the loopback instead, but the run's copy of the pipeline keeps the URL.
    url = loopback().replace("http://", f"http://bob:{PASSWORD}@")
    path = write_pipeline(tmp_path, url if given == "file" else loopback(), generate__count=2,
                          teacher__api_key_env=key_env)
    extra = ["--set", f"teacher.base_url={url}"] if given == "set" else []
    done = factory_cli("run", str(path), *extra, *(["--dry-run"] if dry_run else []), env={"FACTORY_TEST_KEY": KEY})
    assert_user_error(done.returncode, done.stderr, [str(path), "teacher.base_url", "password"])
    assert loopback.teacher.arrivals == []
    _nowhere(PASSWORD, tmp_path, done.stdout + done.stderr)


@pytest.mark.parametrize("pasted", ["hf_abcdefghijklmnopqrstuvwxyz012345", KEY])
def test_a_key_pasted_into_api_key_env_is_refused_without_being_shown(tmp_path, loopback, pasted):
    path = write_pipeline(tmp_path, loopback(), generate__count=2)
    done = factory_cli("run", str(path), "--set", f"teacher.api_key_env={pasted}")
    assert_user_error(done.returncode, done.stderr, [str(path), "teacher.api_key_env", "not a key"])
    assert loopback.teacher.arrivals == []
    _nowhere(pasted, tmp_path, done.stdout + done.stderr)


def test_a_launched_server_printing_its_environment_leaves_no_key_in_its_log(tmp_path):
    # The server prints its whole environment, the key among it, before it serves.
    command = ["sh", "-c", 'env; exec "$0" "$@"', sys.executable, "-m", "factory", "loopback", "--port", "{port}"]
    path = write_pipeline(tmp_path, None, generate__count=4, teacher__api_key_env="FACTORY_TEST_KEY",
                          teacher__launch={"command": command, "startup_timeout": 60})
    config = yaml.safe_load(path.read_text())
    del config["teacher"]["base_url"]
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    done = factory_cli("run", str(path), env={"FACTORY_TEST_KEY": KEY})
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "out" / "teacher-server.log").read_text()
    assert "FACTORY_TEST_KEY=***" in log and "listening on" in log
    _nowhere(KEY, tmp_path, done.stdout + done.stderr)
