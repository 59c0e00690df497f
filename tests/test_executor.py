"""The executor settings and the shard plan, without a cluster: bad keys are one line and
exit 2 before anything is sent; shards cover every unit once; limits are divided."""

from __future__ import annotations

from pathlib import Path

import pytest

from factory.cli import main
from factory.config.pipeline import load_pipeline
from factory.executors.shards import plan, shard_pipeline, share_limits
from tests.helpers.pipelines import write_pipeline
from tests.helpers.processes import assert_user_error


@pytest.mark.parametrize("setting,words", [
    ("executor.type=rays", ["executor.type", "local", "ray"]),
    ("executor.shards=0", ["executor.shards"]),
    ("executor.address=localhost", ["executor.address", "HOST:PORT"]),
    ("executor.nodes=3", ["executor.nodes", "unknown key"]),
])
def test_bad_executor_settings_are_one_line_and_exit_2(tmp_path, capsys, setting, words):
    path = write_pipeline(tmp_path)
    code = main(["run", str(path), "--quiet", "--set", setting])
    assert_user_error(code, capsys.readouterr().err, words)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("total,shards", [(10, 4), (3, 8), (1000, 7), (5, 5), (1, 1)])
def test_shards_cover_every_unit_once_in_order(total, shards):
    units = [*range(total), 5000, 5001]  # a top-up round's units come after the first round's
    parts = plan(Path("/run"), units, shards)
    assert [u for part in parts for u in part.units] == units
    assert len(parts) == min(len(units), shards) and all(len(p.units) for p in parts)
    assert max(len(p.units) for p in parts) - min(len(p.units) for p in parts) <= 1
    assert len({p.folder for p in parts}) == len(parts)


def test_each_shard_gets_a_share_of_the_limits_that_adds_up_to_no_more_than_them(tmp_path):
    path = write_pipeline(tmp_path, teacher__rpm=100, teacher__tpm=90000, teacher__max_concurrency=10,
                          teacher__price={"input": 1, "output": 2}, max_cost=6.0)
    pipeline = load_pipeline(path)
    mine = shard_pipeline(pipeline, 3, cost_left=4.5)
    teacher = mine.config.teacher
    assert (teacher.rpm, teacher.tpm, teacher.max_concurrency) == (33, 30000, 3)
    assert mine.config.max_cost == pytest.approx(1.5)
    assert pipeline.config.teacher.rpm == 100 and pipeline.config.max_cost == 6.0  # the run's own settings untouched
    assert mine.config.executor.type == "local"  # a shard is one process


def test_a_roles_and_a_candidates_own_limits_are_divided_too(tmp_path):
    (tmp_path / "prompts" / "dialogue").mkdir(parents=True, exist_ok=True)
    path = write_pipeline(tmp_path, generate={"task": "dialogue", "count": 4, "turns": [1, 2],
                                              "teachers": {"user": {"model": "simulator", "rpm": 60, "tpm": 9000},
                                                           "assistant": {"sampling": {"temperature": 0.2}}}})
    teachers = shard_pipeline(load_pipeline(path), 3, cost_left=None).config.generate.teachers
    assert teachers["user"] == {"model": "simulator", "rpm": 20, "tpm": 3000}
    assert teachers["assistant"] == {"sampling": {"temperature": 0.2}}  # the divided pipeline's limits apply
    path = write_pipeline(tmp_path, generate={"task": "preference", "count": 4,
                                              "candidates": [{"rpm": 40}, {"max_concurrency": 8, "model": "m2"}],
                                              "judge": {"teacher": {"rpm": 10}}})
    generate = shard_pipeline(load_pipeline(path), 2, cost_left=None).config.generate
    assert generate.candidates == [{"rpm": 20}, {"max_concurrency": 4, "model": "m2"}]
    assert generate.judge.teacher == {"rpm": 5}


def test_a_judges_own_limits_are_divided_as_the_pipelines_are():
    keys = {"model": "judge-model", "rpm": 100, "max_concurrency": 2, "tpm": None}
    assert share_limits(keys, 4) == {"model": "judge-model", "rpm": 25, "max_concurrency": 1, "tpm": None}
