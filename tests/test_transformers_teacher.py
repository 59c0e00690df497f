"""The in-process backend with a tiny model the test builds: batched generation, journal, rejections."""

from __future__ import annotations

import json

import pytest

from factory.cli import main
from tests.conftest import read_jsonl, write_pipeline
from tests.tiny_model import build_tiny_chat_model


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-model"))


def test_local_model_runs_the_pipeline_end_to_end(tmp_path, tiny_model):
    path = write_pipeline(tmp_path, teacher__backend="transformers", teacher__model=str(tiny_model),
                          teacher__batch_size=4, teacher__sampling={"max_tokens": 12, "temperature": 0.7},
                          generate__count=6, generate__pairs_per_request=1, generate__max_attempts=1)
    assert main(["run", str(path), "--quiet"]) == 0
    out = tmp_path / "out"
    info = json.loads((out / "run.json").read_text())
    # A random model writes no JSON: every sample is accounted for, with the reason.
    assert info["funnel"]["kept"] + info["funnel"]["rejected"] == 6
    rejected = read_jsonl(out / "rejected.jsonl")
    assert {r["reason"] for r in rejected} <= {"truncated", "unparseable"}
    assert all("finish_reason=" in r["detail"] for r in rejected)
    assert info["usage"]["requests"] == 6 and info["usage"]["completion_tokens"] > 0
    assert info["teacher"]["backend"] == "transformers" and info["teacher"]["device"] == "cpu"

    # The rerun replays the journal instead of generating again.
    assert main(["run", str(path), "--quiet"]) == 0
    again = json.loads((out / "run.json").read_text())
    assert again["usage"]["requests"] == 0 and again["usage"]["replayed_from_journal"] == 6


def test_model_that_cannot_be_had_says_so_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = write_pipeline(tmp_path, teacher__backend="transformers", teacher__model="nobody/no-such-model")
    assert main(["run", str(path), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot load model 'nobody/no-such-model'" in err[0] and "teacher.model" in err[0]
