"""evol_instruct, self_instruct and magpie: the same dataset whatever the window, and a run
killed part-way finishes with nothing paid twice, though later rounds depend on earlier ones."""

from __future__ import annotations

import pytest

from factory.loopback.process import loopback_process, server_stats
from tests.helpers.instruction_pipelines import (
    evol_pipeline,
    kept,
    magpie_pipeline,
    outputs_of,
    run,
    run_info,
    self_instruct_pipeline,
)
from tests.helpers.processes import kill_after
from tests.helpers.run_store import stored

TASKS = {
    "evol_instruct": lambda folder, url: evol_pipeline(folder, url, count=24),
    "self_instruct": lambda folder, url: self_instruct_pipeline(folder, url, count=40, round_size=2),
    # Small rounds would not change which query is kept; the default keeps this run at one round.
    "magpie": lambda folder, url: magpie_pipeline(folder, url, count=60),
}


@pytest.mark.parametrize("task", TASKS)
def test_the_window_does_not_change_the_dataset_and_a_rerun_sends_nothing(tmp_path, task):
    # Random service times: answers come back in a different order in each run.
    with loopback_process("--slots", "8", "--latency-median", "0.01", "--latency-sigma", "0.8") as url:
        results = []
        for window in (1, 16):
            folder = tmp_path / f"window-{window}"
            path = TASKS[task](folder, url)
            run(path, "--set", f"teacher.max_concurrency={window}")
            results.append(outputs_of(folder))
        assert results[0] == results[1]
        assert results[0][0].count("\n") > 3
        run(path, "--set", "teacher.max_concurrency=16")
        info = run_info(folder)
        assert info["invocations"][-1]["usage"]["requests"] == 0
        assert outputs_of(folder) == results[1]


@pytest.mark.parametrize("task, kill_at", [("self_instruct", 12), ("magpie", 30), ("evol_instruct", 20)])
def test_killed_part_way_the_rerun_matches_an_uninterrupted_run_and_pays_nothing_twice(tmp_path, task, kill_at):
    with loopback_process("--slots", "2", "--latency-median", "0.03", "--latency-sigma", "0.3") as url:
        whole = tmp_path / "whole"
        run(TASKS[task](whole, url))
        paid_whole = run_info(whole)["usage"]["requests"]

        killed = tmp_path / "killed"
        path = TASKS[task](killed, url)
        kill_after(path, killed / "out", kill_at)
        done_before_kill = stored(killed / "out")
        assert kill_at <= done_before_kill < paid_whole
        before = sum(server_stats(url)["received"].values())
        run(path)
        # Every answer stored before the kill is replayed (the rounds it settled are
        # recomputed from them): only the rest goes out.
        assert sum(server_stats(url)["received"].values()) - before == paid_whole - done_before_kill
        assert outputs_of(killed) == outputs_of(whole)
        assert run_info(killed)["usage"]["requests"] == paid_whole


@pytest.mark.parametrize("task, keep", [("self_instruct", 10), ("magpie", 60), ("evol_instruct", 20)])
def test_keep_tops_up_until_exactly_that_many_are_kept(tmp_path, loopback, task, keep):
    url = loopback()
    path = TASKS[task](tmp_path, url)
    run(path, "--set", f"generate.keep={keep}", "--set", f"generate.count={keep}")
    info = run_info(tmp_path)
    assert info["funnel"]["kept"] == keep
    assert len(kept(tmp_path)) == keep
    assert info["funnel"]["requested"] > keep  # some were rejected, so a top-up round ran
    if task != "evol_instruct":
        texts = [r["messages"][0]["content"] for r in kept(tmp_path)]
        assert len(set(texts)) == keep
