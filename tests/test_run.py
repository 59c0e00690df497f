"""End to end over real HTTP: output layout, determinism, structured-output fallback, dry run."""

from __future__ import annotations

import json

import datasets
import pytest
import yaml

from factory.cli import main
from tests.helpers.checkout import ROOT
from tests.helpers.datafiles import read_jsonl
from tests.helpers.pipelines import write_pipeline
from tests.helpers.processes import factory_cli


def test_run_writes_the_documented_layout(tmp_path, loopback, capsys):
    url = loopback()
    path = write_pipeline(tmp_path, url, generate__count=11)
    assert main(["run", str(path), "--quiet"]) == 0
    out = tmp_path / "out"
    ds = datasets.load_from_disk(str(out / "dataset"))
    assert len(ds) == 11 and {"id", "messages", "metadata"} <= set(ds.column_names)
    row = ds[0]
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    meta = row["metadata"]
    assert meta["task"] == "qa" and meta["seed"]["topic"] and meta["teacher_model"] == "loopback"
    assert set(meta["templates"]) == {"system", "user"} and meta["finish_reason"] == "stop"
    assert meta["usage"]["completion_tokens"] > 0
    assert len(read_jsonl(out / "data.jsonl")) == 11
    assert datasets.Dataset.from_parquet(str(out / "data.parquet"))["id"] == ds["id"]
    card = (out / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["license"] and header["task_categories"] and header["size_categories"] == ["n<1K"]
    assert "synthetic" in header["tags"]
    info = json.loads((out / "run.json").read_text())
    assert info["funnel"]["requested"] == 11 and info["funnel"]["kept"] == 11
    assert info["usage"]["requests"] == 6 and info["versions"]["datasets"]
    assert (out / "rejected.jsonl").read_text() == ""
    assert "kept 11 of 11" in capsys.readouterr().out


def test_system_prompt_heads_every_record(tmp_path, loopback):
    path = write_pipeline(tmp_path, loopback(), generate__system_prompt="You are a marine scientist.")
    assert main(["run", str(path), "--quiet"]) == 0
    rows = read_jsonl(tmp_path / "out" / "data.jsonl")
    assert all(r["messages"][0] == {"role": "system", "content": "You are a marine scientist."} for r in rows)


def test_two_runs_give_identical_datasets(tmp_path, loopback):
    url = loopback(latency_median=0.01, latency_sigma=0.8)  # answers arrive out of order
    first = write_pipeline(tmp_path / "a", url, generate__count=40)
    second = write_pipeline(tmp_path / "b", url, generate__count=40)
    assert main(["run", str(first), "--quiet"]) == 0
    assert main(["run", str(second), "--quiet"]) == 0
    a = (tmp_path / "a" / "out" / "data.jsonl").read_text()
    b = (tmp_path / "b" / "out" / "data.jsonl").read_text()
    assert a == b and len(a.splitlines()) == 40
    ids = [r["id"] for r in read_jsonl(tmp_path / "a" / "out" / "data.jsonl")]
    assert len(set(ids)) == 40


def test_a_different_seed_gives_different_prompts(tmp_path, loopback):
    url = loopback()
    assert main(["run", str(write_pipeline(tmp_path / "a", url, seed=1)), "--quiet"]) == 0
    assert main(["run", str(write_pipeline(tmp_path / "b", url, seed=2)), "--quiet"]) == 0
    a = read_jsonl(tmp_path / "a" / "out" / "data.jsonl")
    b = read_jsonl(tmp_path / "b" / "out" / "data.jsonl")
    assert [r["messages"] for r in a] != [r["messages"] for r in b]


def test_server_that_refuses_json_schema_gets_prompted_json(tmp_path, loopback):
    url = loopback(refuse_response_format=True)
    path = write_pipeline(tmp_path, url, generate__count=8)
    assert main(["run", str(path), "--quiet"]) == 0
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert info["funnel"]["kept"] == 8
    assert "refused" in info["teacher"]["structured_output"]


def test_product_walks_every_combination(tmp_path, loopback):
    path = write_pipeline(tmp_path, loopback(), generate__combine="product", generate__count=8,
                          generate__pairs_per_request=1)
    assert main(["run", str(path), "--quiet"]) == 0
    seeds = [r["metadata"]["seed"] for r in read_jsonl(tmp_path / "out" / "data.jsonl")]
    combos = {(s["topic"], s["persona"]) for s in seeds}
    assert len(combos) == 8  # 4 topics x 2 personas, each once


def test_dry_run_needs_no_teacher(tmp_path):
    path = write_pipeline(tmp_path, generate__count=6)
    done = factory_cli("run", str(path), "--dry-run", "--out", str(tmp_path / "dry"))
    assert done.returncode == 0, done.stderr
    assert len(datasets.load_from_disk(str(tmp_path / "dry" / "dataset"))) == 6
    assert "loopback" in done.stderr


def test_validate_renders_examples_and_sends_nothing(tmp_path, loopback):
    url = loopback()
    done = factory_cli("validate", str(write_pipeline(tmp_path, url)))
    assert done.returncode == 0, done.stderr
    assert "example prompt 1" in done.stdout and "[user]" in done.stdout
    assert loopback.teacher.received == {}
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["qa.yaml", "dialogue.yaml", "grounded-qa.yaml", "preference.yaml"])
def test_every_shipped_pipeline_runs_end_to_end_on_the_dry_run_teacher(tmp_path, name):
    out = tmp_path / "out"
    done = factory_cli("run", str(ROOT / "pipelines" / name), "--dry-run", "--quiet", "--out", str(out),
                       "--set", "generate.count=6")
    assert done.returncode == 0, done.stderr
    info = json.loads((out / "run.json").read_text())
    funnel = info["funnel"]
    assert funnel["requested"] == 6 and funnel["kept"] + funnel["rejected"] == 6
    assert len(datasets.load_from_disk(str(out / "dataset"))) == funnel["kept"]
    for fmt in info["config"]["output"]["formats"]:
        if fmt not in ("jsonl", "parquet"):
            assert (out / f"data.{fmt}.jsonl").exists()
