"""The same pipeline gives the same dataset whatever the machine: batch size, in-flight
window, thread count; and the console shows factory's own progress only."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers.checkout import ROOT
from tests.helpers.pipelines import write_pipeline
from tests.helpers.processes import factory_cli
from tests.helpers.tiny_models import build_tiny_qa_model


@pytest.fixture(scope="module")
def tiny_qa_model(tmp_path_factory):
    return build_tiny_qa_model(tmp_path_factory.mktemp("tiny-qa-model"))


def outputs(out) -> tuple[str, str]:
    return (out / "data.jsonl").read_text(), (out / "rejected.jsonl").read_text()


def test_the_same_dataset_whatever_the_window_and_the_timing(tmp_path, loopback):
    # Answers take random times: requests finish in another order in each run.
    url = loopback(latency_median=0.01, latency_sigma=1.0, replies=[(r"score", "Reasoning first.\n\nScore: 7")])
    path = write_pipeline(tmp_path, url, generate__count=30, generate__pairs_per_request=2,
                          filters=[{"type": "exact_dedup"}, {"type": "judge", "min_score": 5}])
    runs = []
    for name, window in (("narrow", 1), ("wide", 64)):
        out = tmp_path / name
        result = factory_cli("run", str(path), "--quiet", "--out", str(out), "--set", f"teacher.max_concurrency={window}")
        assert result.returncode == 0, result.stderr
        runs.append(outputs(out))
    assert runs[0] == runs[1] and runs[0][0].count("\n") > 0


def test_the_in_process_teacher_gives_the_same_dataset_whatever_the_batch(tmp_path, tiny_qa_model):
    # A model that answers (a random one never parses: both runs would keep nothing), and
    # samples: each answer depends on its request's own random stream, which must not
    # depend on the batch it lands in.
    path = write_pipeline(tmp_path, teacher__backend="transformers", teacher__model=str(tiny_qa_model),
                          teacher__base_url=None, teacher__sampling={"max_tokens": 40, "temperature": 0.9},
                          generate__count=10, generate__pairs_per_request=1, generate__max_attempts=2)
    runs = []
    for batch in (1, 8):
        out = tmp_path / f"batch-{batch}"
        result = factory_cli("run", str(path), "--quiet", "--out", str(out), "--set", f"teacher.batch_size={batch}")
        assert result.returncode == 0, result.stderr
        runs.append(outputs(out))
    assert runs[0] == runs[1]
    rows = [json.loads(line) for line in runs[0][0].splitlines()]
    assert len(rows) >= 8, runs[0]
    answers = {(row["messages"][-2]["content"], row["messages"][-1]["content"]) for row in rows}
    assert len(answers) >= 3, answers  # sampled, not one fixed string


@pytest.mark.parametrize("method", ["kcenter", "threshold"])
def test_diversity_picks_the_same_rows_whatever_the_thread_count(method):
    import torch

    from filters.diversity.select import kcenter_select, threshold_select

    rng = np.random.default_rng(7)
    # Clustered vectors: many near-ties, where rounding differences would show first.
    centers = rng.normal(size=(40, 96)).astype(np.float32)
    x = centers[rng.integers(0, 40, 4000)] + 0.05 * rng.normal(size=(4000, 96)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    order = np.arange(len(x))
    before = torch.get_num_threads()
    picks = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            sel = kcenter_select(x, 300) if method == "kcenter" else threshold_select(x, order, 0.97, 500)
            picks.append((sel.kept.tolist(), sel.nearest.tolist(), sel.similarity.tobytes()))
    finally:
        torch.set_num_threads(before)
    assert picks[0] == picks[1]


@pytest.mark.parametrize("answer, score", [
    ('{"rationale": "Clear.", "score": 8}', 8),
    ("A score of 10 would need sources; score 1 is for wrong answers. This one is sound.\n\nScore: 7", 7),
    ("Per the rubric [[10]] is perfect. Verdict: [[6]]", 6),
    ("Rating: 3/10 for clarity, but overall the rating: 5", 5),
])
def test_the_judge_reads_only_the_verdict(answer, score):
    from filters.judge.judge import parse_score

    assert parse_score(answer, 1, 10)[0] == score


FOREIGN = ("it/s]", "examples/s]", "ba/s]", "Loading weights", "Saving the dataset", "Creating parquet")


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "log"])
def test_no_foreign_progress_bars(tmp_path, tiny_model, terminal):
    """factory's own progress only, on a terminal and in a log: no tqdm bars from
    transformers' weight loading or datasets' saving and Parquet writing."""
    path = write_pipeline(tmp_path, teacher__backend="transformers", teacher__model=str(tiny_model),
                          teacher__base_url=None, teacher__sampling={"max_tokens": 8},
                          generate__count=3, generate__pairs_per_request=1, generate__max_attempts=1)
    if terminal:
        code, screen = _on_a_terminal([sys.executable, "-m", "factory", "run", str(path)])
    else:
        result = factory_cli("run", str(path))
        code, screen = result.returncode, result.stdout + result.stderr
    assert code in (0, 1)  # a random model may keep nothing: said so
    assert "generate 3/3" in screen  # factory's own progress was shown
    for foreign in FOREIGN:
        assert foreign not in screen, screen[-2000:]


def test_library_bars_are_off_during_a_run_and_back_after_it_even_for_libraries_it_imported():
    """A library imported inside a run (nested runs, as the CLI's and the run's) has its
    bars off there, and on again once the outermost run ends, as it would have been;
    nothing is imported only to reach a switch."""
    script = """
import sys
from factory.core.quiet_libraries import library_progress_off
with library_progress_off():
    assert "datasets" not in sys.modules and "transformers" not in sys.modules
    with library_progress_off():
        import datasets
        from transformers.utils import logging
        from huggingface_hub import utils
        inside = (datasets.is_progress_bar_enabled(), logging.is_progress_bar_enabled(), utils.are_progress_bars_disabled())
    after_inner = (datasets.is_progress_bar_enabled(), logging.is_progress_bar_enabled())
print(inside, after_inner, (datasets.is_progress_bar_enabled(), logging.is_progress_bar_enabled(),
      utils.are_progress_bars_disabled()))
"""
    env = {k: v for k, v in os.environ.items() if "PROGRESS_BAR" not in k and k != "TQDM_DISABLE"}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == "(False, False, True) (False, False) (True, True, False)".split()


def _on_a_terminal(command: list[str]) -> tuple[int, str]:
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                            env={**os.environ, "COLUMNS": "120"})
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=120), b"".join(chunks).decode(errors="replace")
