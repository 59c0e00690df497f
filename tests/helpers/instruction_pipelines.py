"""Pipelines for the instruction-growing tasks (evol_instruct, self_instruct, magpie), written into a test folder."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.helpers.checkout import ROOT
from tests.helpers.datafiles import read_jsonl
from tests.helpers.processes import factory_cli

SEED_INSTRUCTIONS = [
    "Explain why bread dough needs to rest before baking.",
    "Give three tips for staying focused while studying at home.",
    "What is the difference between weather and climate?",
    "Suggest a weekly exercise plan for a busy office worker.",
    "Describe how penguins keep warm in the Antarctic winter.",
    "Write a short story about a volcano that refuses to erupt.",
]
SEED_TASKS = ROOT / "pipelines" / "seeds" / "self-instruct-tasks.jsonl"


def teacher(url: str, **more) -> dict:
    return {"backend": "openai", "model": "loopback", "base_url": url, "timeout": 10, "max_retries": 2, **more}


def write(folder: Path, config: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config.setdefault("output", {})["dir"] = str(folder / "out")
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def evol_pipeline(folder: Path, url: str, **generate) -> Path:
    return write(folder, {"name": "test-evol", "seed": 4, "teacher": teacher(url),
                          "seeds": {"instruction": SEED_INSTRUCTIONS},
                          "generate": {"task": "evol_instruct", "count": 24, "rounds": 4, **generate}})


def self_instruct_pipeline(folder: Path, url: str, **generate) -> Path:
    return write(folder, {"name": "test-self-instruct", "seed": 2, "teacher": teacher(url),
                          "generate": {"task": "self_instruct", "seed_tasks": str(SEED_TASKS), "count": 30,
                                       "instructions_per_request": 5, "round_size": 2, **generate}})


def magpie_pipeline(folder: Path, url: str, teacher_changes: dict | None = None, seeds: dict | None = None,
                    **generate) -> Path:
    config = {"name": "test-magpie", "seed": 6, "teacher": {**teacher(url), **(teacher_changes or {})},
              "generate": {"task": "magpie", "count": 40, "pre_query": "chatml", **generate}}
    if seeds:
        config["seeds"] = seeds
    return write(folder, config)


def run(path: Path, *extra: str, expect: int = 0):
    result = factory_cli("run", str(path), "--quiet", *extra, timeout=300)
    assert result.returncode == expect, result.stderr
    return result


def kept(folder: Path) -> list[dict]:
    rows = read_jsonl(folder / "out" / "data.jsonl")
    for row in rows:
        row["metadata"] = json.loads(row["metadata"]) if isinstance(row["metadata"], str) else row["metadata"]
    return rows


def rejected(folder: Path) -> list[dict]:
    return read_jsonl(folder / "out" / "rejected.jsonl")


def run_info(folder: Path) -> dict:
    return json.loads((folder / "out" / "run.json").read_text())


def outputs_of(folder: Path) -> tuple[str, str]:
    """The kept and the rejected samples, as written."""
    return (folder / "out" / "data.jsonl").read_text(), (folder / "out" / "rejected.jsonl").read_text()
