"""Self-Instruct over real HTTP: the bootstrap loop, its novelty check and filters, numbering, output-first."""

from __future__ import annotations

import collections
import json
import re

import pytest

from factory.tasks.self_instruct import split_instructions
from tests.helpers.instruction_pipelines import SEED_TASKS, kept, rejected, run, self_instruct_pipeline
from tests.helpers.processes import assert_user_error, factory_cli


def lcs_rouge(a: str, b: str) -> float:
    """ROUGE-L F1 by the textbook dynamic programme: the check's own arithmetic, done another way."""
    x, y = re.findall(r"[a-z0-9]+", a.lower()), re.findall(r"[a-z0-9]+", b.lower())
    table = [[0] * (len(y) + 1) for _ in range(len(x) + 1)]
    for i, p in enumerate(x):
        for j, q in enumerate(y):
            table[i + 1][j + 1] = table[i][j] + 1 if p == q else max(table[i][j + 1], table[i + 1][j])
    return 2 * table[-1][-1] / (len(x) + len(y))


def test_the_pool_grows_in_rounds_and_no_kept_instruction_is_near_another(tmp_path, loopback):
    url = loopback(keep_bodies=True)
    path = self_instruct_pipeline(tmp_path, url)
    run(path)
    rows, dropped = kept(tmp_path), rejected(tmp_path)
    assert len(rows) + len(dropped) == 30
    reasons = collections.Counter(r["reason"] for r in dropped)
    # The loopback's tasks come from a few forms: many new ones are close to one already in the pool.
    assert reasons["too_similar"] > 0 and len(rows) > 3, reasons
    seeds = [json.loads(line)["instruction"] for line in SEED_TASKS.read_text().splitlines()]
    instructions = [r["metadata"]["instruction"] for r in rows]
    for i, text in enumerate(instructions):
        assert max(lcs_rouge(text, other) for other in seeds + instructions[:i]) < 0.7, text
    for row in dropped:
        if row["reason"] == "too_similar":
            score = float(re.search(r"ROUGE-L ([0-9.]+)", row["detail"]).group(1))
            assert score >= 0.7
    for row in rows:
        meta = row["metadata"]
        assert row["messages"][0]["content"].startswith(meta["instruction"])
        assert row["messages"][1]["content"] == meta["instances"][0]["output"]
        # Round 0 has no machine tasks yet: human ones stand in; later rounds mix 6 and 2.
        expected = {"human": 8, "machine": 0} if meta["round"] == 0 else {"human": 6, "machine": 2}
        assert meta["few_shot"] == expected
    assert {r["metadata"]["round"] for r in rows} >= {0, 1}
    assert {r["metadata"]["round"] for r in rows + dropped} == {0, 1, 2}
    # Each instruction prompt of a later round lists machine tasks accepted in earlier rounds.
    prompts = [b["messages"][-1]["content"] for b in loopback.teacher.bodies
               if b["messages"][-1]["content"].rstrip().endswith(":") and "Come up with" in b["messages"][-1]["content"]]
    assert len(prompts) == 6
    accepted_before = set(instructions)
    assert sum(any(text in p for text in accepted_before) for p in prompts) >= 3


def test_classification_tasks_are_written_output_first(tmp_path, loopback):
    url = loopback(keep_bodies=True)
    path = self_instruct_pipeline(tmp_path, url, count=40)
    run(path)
    rows = kept(tmp_path)
    flags = {r["metadata"]["is_classification"] for r in rows}
    assert flags == {True, False}
    bodies = loopback.teacher.bodies
    for row in rows:
        meta = row["metadata"]
        asked = [b for b in bodies if f"Task: {meta['instruction']}\n\nReturn JSON" in b["messages"][-1]["content"]]
        assert len(asked) == 1
        schema = asked[0]["response_format"]["json_schema"]["schema"]
        order = list(schema["properties"]["instances"]["items"]["properties"])
        if meta["is_classification"]:
            assert "classification task" in asked[0]["messages"][-1]["content"] and order == ["output", "input"]
        else:
            assert order == ["input", "output"]


LIST = ("1. Write a limerick about a sleepy owl who guards a barn.\n"
        "Task 10: 2) Describe the water cycle to a curious teenager in plain words.\n"
        "Task 11: Task 12: Suggest a name for a bakery that only sells rye bread.  "
        "Task 13: Explain why the moon shows phases to a seven-year-old child.\n"
        "**Task 14:** Draw a picture of a lighthouse in a storm at night.\n"
        "15. Hi there.")


def test_numbering_never_leaks_into_instructions_and_the_papers_filters_apply(tmp_path, loopback):
    url = loopback(replies=[(r"Task \d+:\s*$", LIST)])
    path = self_instruct_pipeline(tmp_path, url, count=6, instructions_per_request=6, round_size=1)
    run(path)
    rows, dropped = kept(tmp_path), rejected(tmp_path)
    assert sorted(r["metadata"]["instruction"] for r in rows) == [
        "Describe the water cycle to a curious teenager in plain words.",
        "Explain why the moon shows phases to a seven-year-old child.",
        "Suggest a name for a bakery that only sells rye bread.",
        "Write a limerick about a sleepy owl who guards a barn.",
    ]
    assert sorted(r["reason"] for r in dropped) == ["too_short", "unsuitable"]
    assert "'Draw'" in next(r["detail"] for r in dropped if r["reason"] == "unsuitable")


def test_a_later_request_with_the_same_list_is_too_similar_to_the_pool(tmp_path, loopback):
    url = loopback(replies=[(r"Task \d+:\s*$", LIST)])
    path = self_instruct_pipeline(tmp_path, url, count=12, instructions_per_request=6, round_size=1)
    run(path)
    second = [r for r in rejected(tmp_path) if r["metadata"]["round"] == 1]
    assert collections.Counter(r["reason"] for r in second) == {"too_similar": 4, "too_short": 1, "unsuitable": 1}


@pytest.mark.parametrize("text, cut_off, expected", [
    ("Write a poem.\nTask 10: Sort the list.", False, ["Write a poem.", "Sort the list."]),
    ("Task 9: 1. Write a poem.\n2. Sort the list.", False, ["Write a poem.", "Sort the list."]),
    ("Write a poem. Task 10: Sort the list.", False, ["Write a poem.", "Sort the list."]),
    ("(1) Write a poem.\n- Sort the list.", False, ["Write a poem.", "Sort the list."]),
    ("Upgrade to version 3. Then restart.", False, ["Upgrade to version 3. Then restart."]),
    ("Write a poem.\nTask 10: Sort the", True, ["Write a poem."]),
    ("\n\nTask 10:\n", False, []),
])
def test_split_instructions(text, cut_off, expected):
    assert split_instructions(text, cut_off) == expected


def test_a_bad_seed_task_line_is_bad_input_before_anything_is_sent(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"instruction": "Sort the list.", "instances": []}\n{"instances": []}\n')
    path = self_instruct_pipeline(tmp_path, "http://127.0.0.1:9/v1", seed_tasks=str(seeds))
    result = factory_cli("run", str(path))
    assert_user_error(result.returncode, result.stderr, [f"{seeds}:2", "instruction"])


def test_the_pool_scores_as_the_textbook_rouge_l():
    from factory.tasks.rouge import RougePool

    pool_texts = [t["instruction"] for t in map(json.loads, SEED_TASKS.read_text().splitlines())]
    pool = RougePool(pool_texts)
    for text in ["Decide whether the sentiment of the movie review is positive or negative.",
                 "Suggest a menu for a dinner party for six that needs no oven.",
                 "Quantum chromodynamics gluon confinement lattice", "Sort the numbers, please!"]:
        score, nearest = pool.nearest(text)
        best = max(pool_texts, key=lambda other: lcs_rouge(text, other))
        assert score == pytest.approx(lcs_rouge(text, best)) and lcs_rouge(text, nearest) == pytest.approx(score)


def test_rounds_that_depend_on_each_other_are_not_sharded_on_ray(tmp_path):
    path = self_instruct_pipeline(tmp_path, "http://127.0.0.1:9/v1")
    result = factory_cli("run", str(path), "--set", "executor.type=ray")
    assert_user_error(result.returncode, result.stderr, ["executor.type", "self_instruct", "local"])
