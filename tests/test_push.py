"""Pushing a run to the Hub: at the HfApi boundary, a stand-in records the commit's files."""

from __future__ import annotations

import json

import pytest
import yaml

from factory.outputs import push
from factory.cli import main
from tests.helpers.hub import RecordingHub
from tests.helpers.pipelines import write_pipeline

TOKEN = "hf_test_token_never_written_0123456789"
KEY = "sk-loopback-secret-value-0123456789"


def http_error(status: int):
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    request = httpx2.Request("POST", "https://huggingface.co/api/datasets/x/commit/main")
    return HfHubHTTPError(f"{status} error", response=httpx2.Response(status, request=request))


@pytest.fixture
def hub(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(push.time, "sleep", lambda s: None)  # retries without the wait
    recorder = RecordingHub()
    monkeypatch.setattr(push, "hub_api", lambda token: recorder)
    return recorder


def finished_run(tmp_path, url, monkeypatch, **changes):
    monkeypatch.setenv("LOOPBACK_KEY", KEY)
    path = write_pipeline(tmp_path, url, generate__count=20, generate__pairs_per_request=1,
                          teacher__api_key_env="LOOPBACK_KEY", **changes)
    return path


def test_a_run_pushes_data_card_and_what_reproduces_it(tmp_path, loopback, hub, monkeypatch):
    path = finished_run(tmp_path, loopback(), monkeypatch,
                        output__hub={"repo_id": "someone/beekeeping-qa", "test_size": 0.25})
    assert main(["run", str(path), "--quiet"]) == 0
    assert hub.repos == [{"repo_id": "someone/beekeeping-qa", "repo_type": "dataset", "private": True,
                          "exist_ok": True}]
    (commit,) = hub.commits
    files = commit["files"]
    assert {"README.md", "run.json", "report.html", "factory/pipeline.yaml", "factory/prompts/qa/user.j2",
            "factory/prompts/qa/system.j2", "data/train-00000-of-00001.parquet",
            "data/test-00000-of-00001.parquet"} <= set(files)
    assert "rejected.jsonl" not in files
    # The card's YAML is valid and points at the pushed splits.
    card = files["README.md"].decode()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert "synthetic" in meta["tags"] and meta["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"},
                                                  {"split": "test", "path": "data/test-*.parquet"}]}]
    # The data loads with datasets, 15 + 5 rows in chat format.
    from datasets import load_dataset

    for name, data in files.items():
        if name.endswith(".parquet"):
            (tmp_path / name.replace("/", "_")).write_bytes(data)
    loaded = load_dataset("parquet", data_files={"train": str(tmp_path / "data_train-00000-of-00001.parquet"),
                                                 "test": str(tmp_path / "data_test-00000-of-00001.parquet")})
    assert (len(loaded["train"]), len(loaded["test"])) == (15, 5)
    assert loaded["train"][0]["messages"][-1]["role"] == "assistant"
    # No secret in anything that went up.
    for name, data in files.items():
        assert TOKEN.encode() not in data and KEY.encode() not in data, name


def test_factory_push_a_finished_run_public_with_rejected(tmp_path, loopback, hub, monkeypatch):
    path = finished_run(tmp_path, loopback(faults={"empty": 0.3}, seed=2), monkeypatch, generate__max_attempts=1)
    assert main(["run", str(path), "--quiet"]) == 0
    assert hub.commits == []  # no output.hub: nothing pushed by the run
    out = tmp_path / "out"
    assert main(["push", str(out), "--repo-id", "someone/qa", "--public", "--include-rejected"]) == 0
    assert hub.repos[0]["private"] is False
    files = hub.commits[0]["files"]
    assert "rejected.jsonl" in files and "data/train-00000-of-00001.parquet" in files
    assert len(files["rejected.jsonl"].splitlines()) == json.loads(files["run.json"])["funnel"]["rejected"] > 0


def test_server_errors_are_retried_and_refusals_end_in_one_line(tmp_path, loopback, hub, monkeypatch, capsys):
    path = finished_run(tmp_path, loopback(), monkeypatch)
    assert main(["run", str(path), "--quiet"]) == 0
    out = tmp_path / "out"
    before = sorted(p.name for p in out.iterdir())
    hub.failures = [http_error(503), OSError("connection reset")]
    assert main(["push", str(out), "--repo-id", "someone/qa"]) == 0
    assert len(hub.commits) == 1  # the third attempt went through
    capsys.readouterr()
    hub.failures = [http_error(403)]
    assert main(["push", str(out), "--repo-id", "someone/qa"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refused to write someone/qa (HTTP 403)" in err[0] and "intact" in err[0]
    hub.failures = [http_error(502)] * 3
    assert main(["push", str(out), "--repo-id", "someone/qa"]) == 1
    assert "run `factory push` again" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == before  # the local run is untouched


def test_no_token_is_one_line_before_anything_runs(tmp_path, loopback, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no login cache either
    url = loopback()
    path = finished_run(tmp_path, url, monkeypatch, output__hub={"repo_id": "someone/qa"})
    assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "HF_TOKEN" in err[0]
    assert sum(loopback.teacher.received.values()) == 0 and not (tmp_path / "out").exists()


def test_push_needs_a_finished_run_and_a_repo(tmp_path, hub, capsys):
    assert main(["push", str(tmp_path), "--repo-id", "someone/qa"]) == 2
    assert "not a finished run" in capsys.readouterr().err
