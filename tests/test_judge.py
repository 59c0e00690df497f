"""The judge stage against a loopback judge with scripted answers, over real HTTP."""

from __future__ import annotations

import pytest

from factory.config.pipeline import load_pipeline
from factory.core.record import Record
from filters import StageContext, build_stages
from filters.judge.judge import Unscorable, parse_score
from tests.helpers.pipelines import write_pipeline

# The judged answer names the reply the scripted judge gives it.
SCRIPT = [
    (r"grade-(\d+)", r'{"rationale": "clear and correct", "score": \1}'),
    (r"bracket-(\d+)", r"The answer is accurate but terse. Rating: [[\1]]"),
    (r"outofrange", '{"rationale": "superb", "score": 42}'),
    (r"garbage", "I would rather not grade this one."),
]


def qa(i: int, answer: str) -> Record:
    return Record(f"r{i}", [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": answer}])


def judge_stage(tmp_path, url, **options):
    path = write_pipeline(tmp_path, url, filters=[{"type": "judge", **options}])
    pipeline = load_pipeline(path)
    [stage] = build_stages(pipeline.config.filters, pipeline)
    rejected = []
    stage.bind(rejected.append, StageContext(pipeline, tmp_path / "out", show_progress=False))
    return stage, rejected


RECORDS = [qa(0, "grade-8 answer"), qa(1, "grade-3 answer"), qa(2, "bracket-9 answer"),
           qa(3, "outofrange answer"), qa(4, "garbage answer"), qa(5, "grade-6 answer")]


def test_scores_rationales_and_min_score(tmp_path, loopback):
    url = loopback(replies=SCRIPT)
    stage, rejected = judge_stage(tmp_path, url, min_score=6, max_attempts=2)
    kept = list(stage(RECORDS))

    assert [r.id for r in kept] == ["r0", "r2", "r5"]
    assert [r.metadata["judge_score"] for r in kept] == [8, 9, 6]
    assert kept[0].metadata["judge_rationale"] == "clear and correct"
    assert kept[1].metadata["judge_rationale"] == "The answer is accurate but terse."
    assert all(r.metadata["judge_model"] == "loopback" for r in kept)
    reasons = {r.id: r.reason for r in rejected}
    assert reasons == {"r1": "low_score", "r3": "judge_unparseable", "r4": "judge_unparseable"}
    assert "score 3 < min_score 6" in next(r.detail for r in rejected if r.id == "r1")
    assert all(r.stage == "judge" for r in rejected)
    funnel = stage.funnel()
    assert funnel["seen"] == 6 and funnel["kept"] == 3
    assert funnel["dropped"] == {"low_score": 1, "judge_unparseable": 2}
    # Unreadable answers are retried up to max_attempts; readable ones are asked once.
    assert funnel["usage"]["requests"] == 4 + 2 * 2


def test_grading_in_chunks_changes_nothing(tmp_path, loopback, monkeypatch):
    from factory.core import constants

    url = loopback(replies=SCRIPT)
    whole, whole_rejected = judge_stage(tmp_path / "whole", url, min_score=6, max_attempts=2)
    expected = [(r.id, r.metadata["judge_score"]) for r in whole(RECORDS)]
    monkeypatch.setattr(constants, "JUDGE_CHUNK", 4)
    chunked, chunked_rejected = judge_stage(tmp_path / "chunked", url, min_score=6, max_attempts=2)
    assert [(r.id, r.metadata["judge_score"]) for r in chunked(RECORDS)] == expected
    assert [(r.id, r.reason) for r in chunked_rejected] == [(r.id, r.reason) for r in whole_rejected]
    assert chunked.funnel()["usage"]["requests"] == whole.funnel()["usage"]["requests"]


def test_rerun_replays_every_grade_from_the_journal(tmp_path, loopback):
    url = loopback(replies=SCRIPT)
    first, _ = judge_stage(tmp_path, url, min_score=6, max_attempts=2)
    kept_first = [(r.id, r.metadata["judge_score"]) for r in first(RECORDS)]
    served = loopback.teacher.served

    second, _ = judge_stage(tmp_path, url, min_score=2)  # a new threshold costs nothing
    kept_second = list(second(RECORDS))
    assert loopback.teacher.served == served + 2  # only r3/r4's new attempts (max_attempts 3 now)
    assert second.stats.replayed == 4 + 2 * 2
    assert {r.id for r in kept_second} == {"r0", "r1", "r2", "r5"}
    assert [(r.id, r.metadata["judge_score"]) for r in kept_second if r.id != "r1"] == kept_first


def test_judge_survives_faults_and_keeps_unscored_on_request(tmp_path, loopback):
    url = loopback(replies=SCRIPT, faults={"server_error": 0.2, "malformed": 0.2, "empty": 0.1})
    stage, rejected = judge_stage(tmp_path, url, max_attempts=6, on_error="keep")
    records = [qa(i, f"grade-{1 + i % 10} answer") for i in range(60)] + [qa(99, "garbage answer")]
    kept = list(stage(records))
    assert len(kept) + len(rejected) == len(records)
    scored = {r.id: r.metadata.get("judge_score") for r in kept}
    # Every gradable record got exactly the grade it asked for, faults or not.
    for i in range(60):
        assert scored.get(f"r{i}") in (1 + i % 10, None)
    assert sum(v is not None for v in scored.values()) >= 55
    assert "judge_error" in next(r for r in kept if r.id == "r99").metadata


def test_several_samples_are_aggregated(tmp_path, loopback):
    url = loopback(replies=SCRIPT)
    stage, _ = judge_stage(tmp_path, url, samples=3, aggregate="median")
    [record] = list(stage([qa(0, "grade-7 answer")]))
    assert record.metadata["judge_scores"] == [7, 7, 7]
    assert stage.stats.sent == 3


def test_a_separate_judge_teacher(tmp_path, loopback):
    generation_url = loopback()
    judge_url = loopback(replies=SCRIPT, model="judge-model")
    stage, _ = judge_stage(tmp_path, generation_url, teacher={"base_url": judge_url, "model": "judge-model"})
    [record] = list(stage([qa(0, "grade-5 answer")]))
    assert record.metadata["judge_model"] == "judge-model"
    assert loopback.teacher.served == 1  # the judge's own server answered


@pytest.mark.parametrize("text, expected", [
    ('{"rationale": "ok", "score": 7}', (7, "ok")),
    ('```json\n{"score": 4, "rationale": "weak"}\n```', (4, "weak")),
    ("Good answer overall.\nRating: [[8]]", (8, "Good answer overall.")),
    ("Score: 6/10 because it is vague", (6, "because it is vague")),
    ("**Score:** 9", (9, "")),
])
def test_parse_score_reads_common_forms(text, expected):
    assert parse_score(text, 1, 10) == expected


@pytest.mark.parametrize("text", ["", "no number here", '{"score": "high"}', "Rating: [[11]]", '{"score": 0}'])
def test_parse_score_refuses(text):
    with pytest.raises(Unscorable):
        parse_score(text, 1, 10)
