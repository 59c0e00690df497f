"""Evol-Instruct over real HTTP: lineages of evolutions, and WizardLM's elimination checks."""

from __future__ import annotations

import collections

import pytest

from factory.tasks.asking import Unusable
from factory.tasks.evol_instruct import content_words, judged_equal
from tests.helpers.instruction_pipelines import SEED_INSTRUCTIONS, evol_pipeline, kept, rejected, run


def test_each_seed_evolves_for_its_rounds_and_every_sample_is_kept_or_rejected(tmp_path, loopback):
    url = loopback()
    path = evol_pipeline(tmp_path, url)
    run(path)
    rows, dropped = kept(tmp_path), rejected(tmp_path)
    assert len(rows) + len(dropped) == 24
    assert rows, "the loopback's rewrites mostly add a constraint: most evolutions survive"
    by_id = {r["id"]: r for r in rows}
    lineages = collections.defaultdict(list)
    for row in rows:
        meta = row["metadata"]
        assert meta["method"] in ("constraints", "deepen", "concretize", "reasoning", "complicate_input", "breadth")
        assert meta["evolution"] == ("in-breadth" if meta["method"] == "breadth" else "in-depth")
        assert 1 <= meta["round"] <= 4
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert row["messages"][0]["content"] != meta["parent"]
        lineages[meta["seed"]["instruction"]].append(row)
    assert set(lineages) <= set(SEED_INSTRUCTIONS)
    methods = {r["metadata"]["method"] for r in rows}
    assert len(methods) >= 3, methods
    for seed, chain in lineages.items():
        chain.sort(key=lambda r: r["metadata"]["round"])
        first = chain[0]["metadata"]
        # The first survivor evolved the seed itself; each later one the survivor before it.
        assert first["parent"] == seed
        for before, after in zip(chain, chain[1:]):
            assert after["metadata"]["parent_id"] == before["id"] in by_id
            assert after["metadata"]["parent"] == before["messages"][0]["content"]
    # The loopback's rewrites sometimes add nothing: the equality check eliminates them.
    reasons = collections.Counter(r["reason"] for r in dropped)
    assert set(reasons) <= {"no_information_gain"}, reasons
    for row in dropped:
        assert row["metadata"]["method"] and row["metadata"]["round"] and row["metadata"]["parent_id"]


SCRIPTED = [
    # The answer to an evolved instruction that mentions a zebra is a short apology.
    (r"^Write a short story about a volcano and a zebra", "I'm sorry, but I can't help with that request."),
    # The evolving prompts, told apart by the seed instruction they carry.
    (r"(?s)#The Given Prompt#:.*penguins", "#Rewritten Prompt#: Describe how emperor penguins keep warm."),
    (r"(?s)#Given Prompt#:.*penguins", "#Created Prompt#: Describe how seals keep warm."),
    (r"(?s)Prompt#:.*volcano", "Write a short story about a volcano and a zebra that refuses to erupt."),
    (r"(?s)Prompt#:.*bread dough", "... the, of; and!"),
    # The equality check for the weather instruction: no information gain.
    (r"(?s)The First Prompt:.*weather", "Equal"),
]


def test_wizardlm_eliminations_are_rejections_with_their_reason_and_the_parent_evolves_again(tmp_path, loopback):
    url = loopback(replies=SCRIPTED)
    path = evol_pipeline(tmp_path, url)
    run(path)
    dropped = rejected(tmp_path)
    by_seed = collections.defaultdict(set)
    for row in dropped:
        by_seed[row["metadata"]["seed"]["instruction"]].add(row["reason"])
    assert by_seed["Describe how penguins keep warm in the Antarctic winter."] == {"copied_template_words"}
    assert by_seed["Write a short story about a volcano that refuses to erupt."] == {"refusal"}
    assert by_seed["Explain why bread dough needs to rest before baking."] == {"no_content"}
    assert by_seed["What is the difference between weather and climate?"] == {"no_information_gain"}
    # Every round of those lineages failed, so each round evolved the seed itself again.
    scripted = {SEED_INSTRUCTIONS[i] for i in (0, 2, 4, 5)}
    for row in dropped:
        meta = row["metadata"]
        if meta["seed"]["instruction"] in scripted:
            assert meta["parent"] == meta["seed"]["instruction"]
    refusal = next(r for r in dropped if r["reason"] == "refusal")
    assert refusal["messages"][-1] == {"role": "assistant", "content": "I'm sorry, but I can't help with that request."}
    assert "sorry" in refusal["detail"]
    # The two seeds with no scripted failure evolve as usual.
    survivors = {r["metadata"]["seed"]["instruction"] for r in kept(tmp_path)}
    assert survivors == {SEED_INSTRUCTIONS[1], SEED_INSTRUCTIONS[3]}


def test_the_equality_check_can_be_turned_off_and_then_costs_no_request(tmp_path, loopback):
    url = loopback(keep_bodies=True)
    path = evol_pipeline(tmp_path, url, count=8, elimination={"check_equal": False})
    run(path)
    prompts = [b["messages"][-1]["content"] for b in loopback.teacher.bodies]
    assert not any("The First Prompt:" in p for p in prompts)
    assert len(prompts) == 16  # an evolution and an answer for each of the 8


@pytest.mark.parametrize("text, equal", [("Equal", True), ("Not Equal", False), ("not equal.", False),
                                         ("They are equal", True)])
def test_the_equality_answer_is_read_not_equal_first(text, equal):
    assert judged_equal(text) is equal


def test_an_equality_answer_that_says_neither_is_unusable():
    with pytest.raises(Unusable):
        judged_equal("Hard to say.")


def test_content_words_skip_stop_words_and_punctuation():
    assert content_words("... the, of; and!") == []
    assert content_words("Explain the tides.") == ["explain", "tides"]
