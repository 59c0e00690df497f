"""The preference task against the loopback teacher over real HTTP: pairs in TRL's form,
position-bias handling, every rejection reason, resume, and bad input refused up front."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest
import yaml

from factory.cli import main
from factory.tasks.asking import Unusable
from factory.tasks.preference import parse_verdict
from tests.helpers.datafiles import read_jsonl
from tests.helpers.pipelines import PREFERENCE_PROMPTS, write_preference
from tests.helpers.processes import assert_user_error, factory_cli


def rejected_rows(out: Path) -> list[dict]:
    return read_jsonl(out / "rejected.jsonl")


def test_pairs_are_trl_conversational_rows_with_scores_and_margin(tmp_path, loopback):
    url = loopback()
    path = write_preference(tmp_path, url, min_margin=1, candidates=[
        {"sampling": {"temperature": 0.2}}, {"sampling": {"temperature": 0.9}}, {"sampling": {"temperature": 1.4}}])
    assert main(["run", str(path), "--quiet"]) == 0
    out = tmp_path / "out"
    ds = datasets.load_from_disk(str(out / "dataset"))
    assert set(ds.column_names) == {"id", "prompt", "chosen", "rejected", "metadata"}
    rejected = rejected_rows(out)
    assert len(ds) + len(rejected) == 6 and len(ds) > 0
    for row in ds:
        # TRL's explicit form: the prompt as messages, each answer one assistant message.
        assert [m["role"] for m in row["prompt"]] == ["system", "user"]
        assert row["prompt"][1]["content"] in PREFERENCE_PROMPTS
        assert [m["role"] for m in row["chosen"]] == [m["role"] for m in row["rejected"]] == ["assistant"]
        assert row["chosen"][0]["content"] != row["rejected"][0]["content"]
        meta = row["metadata"]
        assert meta["chosen"]["score"] - meta["rejected"]["score"] == meta["margin"] >= 1
        assert "content" not in meta["rejected"]  # the text is the `rejected` column, not repeated
        scores = [c["score"] for c in meta["candidates"]]
        assert meta["chosen"]["score"] == max(scores) and meta["rejected"]["score"] == min(scores)
        assert {c["temperature"] for c in meta["candidates"]} == {0.2, 0.9, 1.4}
        assert meta["chosen"]["model"] == "loopback" and meta["judge"]["model"] == "loopback"
    for row in rejected:
        assert row["reason"] in ("low_margin", "tied_scores", "identical_answers"), row
    # The OpenAI file is its DPO upload form, the same pairs.
    dpo = read_jsonl(out / "data.openai.jsonl")
    assert len(dpo) == len(ds)
    assert dpo[0]["input"]["messages"] == ds[0]["prompt"]
    assert dpo[0]["preferred_output"] == ds[0]["chosen"] and dpo[0]["non_preferred_output"] == ds[0]["rejected"]


def test_the_judge_sees_shuffled_orders_and_both_orders_are_averaged(tmp_path, loopback):
    url = loopback(keep_bodies=True)
    path = write_preference(tmp_path, url, min_margin=0, judge={"both_orders": True})
    assert main(["run", str(path), "--quiet"]) == 0
    verdicts = [b for b in loopback.teacher.bodies if "<candidate id=" in b["messages"][-1]["content"]]
    assert len(verdicts) == 12  # two judgements per prompt
    rows = read_jsonl(tmp_path / "out" / "data.jsonl") + [r for r in rejected_rows(tmp_path / "out")]
    orders = [r["metadata"]["judge"]["orders"] if isinstance(r["metadata"], str)
              else r["metadata"]["judge"]["orders"] for r in rows]
    for first, second in orders:
        assert list(first.values()) == list(reversed(list(second.values())))
    # Shuffled per prompt: candidate 1 is not always shown first.
    assert {first["A"] for first, _ in orders} == {1, 2}
    # A judge that scores answers by their text gives each the same score in both orders.
    for row in rows:
        meta = row["metadata"] if isinstance(row["metadata"], dict) else row["metadata"]
        for candidate in meta["candidates"]:
            assert len(candidate["scores"]) == 2 and candidate["scores"][0] == candidate["scores"][1]


def test_a_verdict_missing_a_score_is_retried_then_rejected(tmp_path, loopback):
    # The judge leaves out candidate B for two of the prompts, whatever it is asked.
    url = loopback(replies=[(r"(?s)(tomatoes|garlic).*<candidate id=", '{"rationale": "A is fine", "scores": {"A": 7}}')])
    path = write_preference(tmp_path, url, judge={"max_attempts": 2})
    main(["run", str(path), "--quiet"])
    missing = [r for r in rejected_rows(tmp_path / "out") if r["reason"] == "missing_score"]
    assert len(missing) == 2
    assert all("no score for candidate B" in r["detail"] and "2 attempts" in r["detail"] for r in missing)
    assert {r["messages"][-1]["content"] for r in missing} == {PREFERENCE_PROMPTS[2], PREFERENCE_PROMPTS[4]}


def test_identical_candidates_are_rejected_not_paired(tmp_path, loopback):
    # Without a per-request seed the loopback writes the same answer at any temperature.
    url = loopback()
    path = write_preference(tmp_path, url)
    config = yaml.safe_load(path.read_text())
    config["teacher"]["send_seed"] = False
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path), "--quiet"]) == 1  # nothing kept
    reasons = {r["reason"] for r in rejected_rows(tmp_path / "out")}
    assert reasons == {"identical_answers"}


def test_margins_below_min_margin_and_ties_are_rejected(tmp_path, loopback):
    url = loopback()
    path = write_preference(tmp_path, url, min_margin=8, count=6)
    main(["run", str(path), "--quiet"])
    out = tmp_path / "out"
    kept = read_jsonl(out / "data.jsonl") if (out / "data.jsonl").exists() else []
    rejected = rejected_rows(out)
    assert len(kept) + len(rejected) == 6
    assert all(r["metadata"]["margin"] >= 8 for r in kept)
    assert {r["reason"] for r in rejected} <= {"low_margin", "tied_scores"} and rejected
    low = next(r for r in rejected if r["reason"] in ("low_margin", "tied_scores"))
    assert low["metadata"]["margin"] < 8 and low["metadata"]["rejected"]["content"]


def test_several_teachers_by_candidate_and_a_rerun_pays_nothing(tmp_path, loopback):
    first, second = loopback(), loopback()
    path = write_preference(tmp_path, first, candidates=[
        {"model": "small-model"}, {"model": "big-model", "base_url": second, "sampling": {"temperature": 0.4}}])
    assert main(["run", str(path), "--quiet"]) == 0
    kept = read_jsonl(tmp_path / "out" / "data.jsonl")
    models = {r["metadata"]["chosen"]["model"] for r in kept} | \
             {r["metadata"]["rejected"]["model"] for r in kept}
    assert models <= {"small-model", "big-model"} and len(kept) > 0
    done = factory_cli("run", str(path), "--quiet")
    assert done.returncode == 0, done.stderr
    assert "0 sent now" in done.stdout
    assert read_jsonl(tmp_path / "out" / "data.jsonl") == kept


def test_filters_read_the_prompt_and_the_chosen_answer(tmp_path, loopback):
    url = loopback()
    path = write_preference(tmp_path, url, min_margin=0)
    config = yaml.safe_load(path.read_text())
    config["filters"] = [{"type": "heuristics", "min_chars": {"assistant": 10_000}}]
    path.write_text(yaml.safe_dump(config))
    main(["run", str(path), "--quiet"])
    dropped = [r for r in rejected_rows(tmp_path / "out") if r["stage"] == "heuristics"]
    assert dropped and all(r["messages"][-1]["role"] == "assistant" for r in dropped)
    assert all(r["metadata"]["rejected"]["content"] for r in dropped)


@pytest.mark.parametrize("change, words", [
    ({"output": {"formats": ["sharegpt"]}}, ["output.formats", "sharegpt", "preference pairs"]),
    ({"output": {"formats": ["alpaca"]}}, ["output.formats", "alpaca"]),
    ({"generate": {"candidates": [{"sampling": {"temperature": 0.5}}]}}, ["generate.candidates", "at least 2"]),
    ({"generate": {"candidates": [{"sampling": {"temprature": 0.5}}, {}]}}, ["candidates[0]", "temprature"]),
    ({"generate": {"min_margin": 12}}, ["min_margin", "scale"]),
    ({"generate": {"judge": {"rubric": "preference/nope.j2"}}}, ["judge.rubric", "nope.j2"]),
])
def test_bad_input_is_one_line_and_nothing_is_sent(tmp_path, loopback, change, words):
    url = loopback()
    path = write_preference(tmp_path, url)
    config = yaml.safe_load(path.read_text())
    for section, values in change.items():
        config[section].update(values)
    path.write_text(yaml.safe_dump(config))
    done = factory_cli("run", str(path), "--quiet")
    assert_user_error(done.returncode, done.stderr, words)
    assert loopback.teacher.received == {}


@pytest.mark.parametrize("text, scores", [
    ('{"rationale": "B is wrong", "scores": {"A": 8, "B": 3}}', {"A": 8, "B": 3}),
    ('```json\n{"rationale": "x", "scores": [{"candidate": "A", "score": 6}, {"candidate": "B", "score": 9}]}\n```',
     {"A": 6, "B": 9}),
    ("A is better.\nA: 7\nB: 4", {"A": 7, "B": 4}),
])
def test_verdicts_are_read_in_their_common_shapes(text, scores):
    assert parse_verdict(text, "AB", 1, 10)[0] == scores


@pytest.mark.parametrize("text, reason", [
    ('{"rationale": "x", "scores": {"A": 8}}', "missing_score"),
    ('{"rationale": "x", "scores": {"A": 8, "B": 42}}', "missing_score"),
    ('{"rationale": "x", "scores": {"A": 8, "B": "good"}}', "missing_score"),
    ("I cannot compare these.", "unparseable"),
])
def test_unusable_verdicts_say_why(text, reason):
    with pytest.raises(Unusable) as err:
        parse_verdict(text, "AB", 1, 10)
    assert err.value.reason == reason


def test_factory_filter_reads_pairs_and_writes_them_back_as_pairs(tmp_path, loopback):
    url = loopback()
    path = write_preference(tmp_path, url, min_margin=0)
    assert main(["run", str(path), "--quiet"]) == 0
    source = datasets.load_from_disk(str(tmp_path / "out" / "dataset"))
    config = yaml.safe_load(path.read_text())
    config["filters"] = [{"type": "exact_dedup", "fields": ["rejected.content"]}]
    path.write_text(yaml.safe_dump(config))
    done = factory_cli("filter", str(path), "--input", str(tmp_path / "out" / "dataset"),
                       "--out", str(tmp_path / "filtered"), "--quiet")
    assert done.returncode == 0, done.stderr
    filtered = datasets.load_from_disk(str(tmp_path / "filtered" / "dataset"))
    assert set(filtered.column_names) == {"id", "prompt", "chosen", "rejected", "metadata"}
    assert [(r["id"], r["prompt"], r["chosen"], r["rejected"]) for r in filtered] == \
           [(r["id"], r["prompt"], r["chosen"], r["rejected"]) for r in source]
    assert filtered[0]["metadata"]["margin"] == source[0]["metadata"]["margin"]


def chosen_by_id(out: Path) -> dict[str, int]:
    return {r["id"]: r["metadata"]["chosen"]["candidate"] for r in read_jsonl(out / "data.jsonl")}


def test_judging_both_orders_cancels_a_judge_that_favours_the_first_candidate(tmp_path, loopback):
    """A judge adding 5 points to whatever it sees first picks by position; averaged over
    both orders, it picks what the same judge without the bias picks."""
    runs = {}
    for name, bias, both in [("fair", 0, False), ("biased", 5, False), ("biased-both", 5, True)]:
        folder = tmp_path / name
        folder.mkdir()
        path = write_preference(folder, loopback(judge_position_bias=bias), min_margin=0.5,
                                judge={"both_orders": both})
        main(["run", str(path), "--quiet"])
        runs[name] = chosen_by_id(folder / "out")
    assert runs["fair"] and runs["biased-both"] == runs["fair"]
    # Shown one order only, the biased judge picks differently at least once.
    assert any(runs["biased"].get(i) != c for i, c in runs["fair"].items())


def test_a_candidate_that_keeps_failing_leaves_the_others_to_pair(tmp_path, loopback):
    good, cut_off = loopback(), loopback(faults={"truncated": 1.0})
    three = [{}, {"sampling": {"temperature": 1.2}}, {"base_url": cut_off}]
    path = write_preference(tmp_path, good, min_margin=0, candidates=three, max_attempts=2)
    main(["run", str(path), "--quiet"])
    out = tmp_path / "out"
    rows = read_jsonl(out / "data.jsonl")
    assert rows
    for row in rows:
        meta = row["metadata"]
        assert meta["candidates"][2]["failed"][0] == "truncated"
        assert {meta["chosen"]["candidate"], meta["rejected"]["candidate"]} == {1, 2}
        assert list(meta["judge"]["orders"][0].values()) in ([1, 2], [2, 1])  # the judge saw the two left
    # With only two candidates, one failing leaves no pair: the unit is rejected with its reason.
    path = write_preference(tmp_path, good, candidates=[{}, {"base_url": cut_off}], max_attempts=2)
    config = yaml.safe_load(path.read_text())
    config["output"]["dir"] = str(tmp_path / "two")
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path), "--quiet"]) == 1
    reasons = {r["reason"] for r in rejected_rows(tmp_path / "two")}
    assert reasons == {"truncated"}


def test_keep_tops_up_until_the_dataset_has_that_many_pairs(tmp_path, loopback):
    url = loopback()
    path = write_preference(tmp_path, url, min_margin=3)
    config = yaml.safe_load(path.read_text())
    del config["generate"]["count"]
    config["generate"]["keep"] = 5
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path), "--quiet"]) == 0
    ds = datasets.load_from_disk(str(tmp_path / "out" / "dataset"))
    assert len(ds) == 5 and set(ds.column_names) >= {"prompt", "chosen", "rejected"}
    assert all(m["margin"] >= 3 for m in ds["metadata"])
