"""The in-process backend with a tiny model the test builds: batched generation, journal, rejections."""

from __future__ import annotations

import dataclasses
import json


from factory.cli import main
from tests.helpers.datafiles import read_jsonl
from tests.helpers.pipelines import write_pipeline


def test_local_model_runs_the_pipeline_end_to_end(tmp_path, tiny_model):
    path = write_pipeline(tmp_path, teacher__backend="transformers", teacher__model=str(tiny_model),
                          teacher__batch_size=4, teacher__sampling={"max_tokens": 12, "temperature": 0.7},
                          generate__count=6, generate__pairs_per_request=1, generate__max_attempts=1)
    code = main(["run", str(path), "--quiet"])
    out = tmp_path / "out"
    info = json.loads((out / "run.json").read_text())
    assert code == (0 if info["funnel"]["kept"] else 1)  # nothing kept is a failure, said so
    # A random model writes no JSON: every sample is accounted for, with the reason.
    assert info["funnel"]["kept"] + info["funnel"]["rejected"] == 6
    rejected = read_jsonl(out / "rejected.jsonl")
    assert {r["reason"] for r in rejected} <= {"truncated", "unparseable"}
    assert all("finish_reason=" in r["detail"] for r in rejected)
    assert info["usage"]["requests"] == 6 and info["usage"]["completion_tokens"] > 0
    assert info["teacher"]["backend"] == "transformers" and info["teacher"]["device"] == "cpu"

    # The rerun generates nothing again: every unit is settled in the run store.
    assert main(["run", str(path), "--quiet"]) == code
    again = json.loads((out / "run.json").read_text())
    assert again["usage"]["requests"] == 6 and again["invocations"][-1]["usage"]["requests"] == 0


def test_model_that_cannot_be_had_says_so_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = write_pipeline(tmp_path, teacher__backend="transformers", teacher__model="nobody/no-such-model")
    assert main(["run", str(path), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot load model 'nobody/no-such-model'" in err[0] and "teacher.model" in err[0]


def _requests(n: int):
    from factory.teachers.base import Request

    topics = ["tides", "volcanoes", "glaciers", "coral reefs"]
    # Prompts of different lengths, so a batch is padded and the masks matter.
    return [Request([{"role": "user", "content": f"question {i} about " + " ".join(topics[: 1 + i % 4])}])
            for i in range(n)]


def _answer_all(config, requests):
    import asyncio

    from factory.teachers.in_process.transformers_teacher import TransformersTeacher

    async def go():
        teacher = TransformersTeacher(config)
        await teacher.start()
        try:
            return await asyncio.gather(*[teacher.complete(r) for r in requests]), teacher
        finally:
            await teacher.close()

    return asyncio.run(go())


def test_batched_greedy_generation_matches_one_at_a_time(tiny_model):
    from factory.config.pipeline import TeacherConfig

    sampling = {"max_tokens": 10, "temperature": 0.0}
    requests = _requests(12)
    one, single = _answer_all(TeacherConfig(model=str(tiny_model), batch_size=1, sampling=sampling), requests)
    batched, teacher = _answer_all(TeacherConfig(model=str(tiny_model), batch_size=8, sampling=sampling), requests)
    # Left padding with attention masks: each row generates as if it were alone.
    assert [c.text for c in batched] == [c.text for c in one]
    assert [c.prompt_tokens for c in batched] == [c.prompt_tokens for c in one]
    assert single.batching()["largest_batch"] == 1
    assert teacher.batching()["largest_batch"] == 8 and teacher.batching()["batches"] == 2  # 8 + 4


def test_a_batch_too_big_for_memory_is_split_and_later_batches_stay_smaller(tiny_model):
    from factory.config.pipeline import TeacherConfig
    from factory.core.errors import OutOfMemory
    from factory.teachers.in_process import transformers_teacher

    class SmallDevice(transformers_teacher.TransformersTeacher):
        """A device that holds three sequences at a time (a GPU's limit, on the CPU)."""

        def _generate(self, requests):
            if len(requests) > 3:
                raise OutOfMemory(f"out of memory generating a batch of {len(requests)} on cpu")
            return super()._generate(requests)

    import asyncio

    async def go():
        teacher = SmallDevice(TeacherConfig(model=str(tiny_model), batch_size=16,
                                            sampling={"max_tokens": 6, "temperature": 0.0}))
        await teacher.start()
        try:
            first = await asyncio.gather(*[teacher.complete(r) for r in _requests(16)])
            second = await asyncio.gather(*[teacher.complete(r) for r in _requests(16)])
            return first, second, teacher.batching()
        finally:
            await teacher.close()

    first, second, batching = asyncio.run(go())
    assert len(first) == len(second) == 16 and [c.text for c in first] == [c.text for c in second]
    # 16 -> 8s -> 4s -> 2s (1 + 2 + 4 splits); the second round starts at 2 and splits nothing.
    assert batching["max_batch"] == 2 and batching["memory_splits"] == 7 and batching["largest_batch"] == 2


def test_a_sampled_answer_is_the_same_whatever_the_batch(tiny_model):
    """Each request samples with its own seed: the batch it lands in changes nothing."""
    from factory.config.pipeline import TeacherConfig

    sampling = {"max_tokens": 12, "temperature": 0.9, "top_p": 0.95}
    requests = [dataclasses.replace(r, seed=1000 + i) for i, r in enumerate(_requests(10))]
    alone, _ = _answer_all(TeacherConfig(model=str(tiny_model), batch_size=1, sampling=sampling), requests)
    together, teacher = _answer_all(TeacherConfig(model=str(tiny_model), batch_size=8, sampling=sampling), requests)
    assert teacher.batching()["largest_batch"] == 8
    assert [c.text for c in together] == [c.text for c in alone]
    # Sampling, not greedy: other seeds give other answers.
    reseeded = [dataclasses.replace(r, seed=r.seed + 1) for r in requests]
    other, _ = _answer_all(TeacherConfig(model=str(tiny_model), batch_size=8, sampling=sampling), reseeded)
    assert [c.text for c in other] != [c.text for c in alone]


def test_teachers_that_differ_only_in_sampling_share_one_loaded_model(tiny_model):
    """A preference task's candidates (or a dialogue's roles) on one in-process model hold
    one copy of it, take turns generating, answer as each would alone, and the last to
    close lets it go."""
    import asyncio

    from factory.config.pipeline import TeacherConfig
    from factory.teachers.in_process import shared_models
    from factory.teachers.in_process import transformers_teacher as tt

    requests = _requests(8)
    configs = [TeacherConfig(model=str(tiny_model), batch_size=4, sampling={"max_tokens": 8, "temperature": t})
               for t in (0.0, 1.1)]
    alone = [[c.text for c in _answer_all(config, requests)[0]] for config in configs]

    async def together():
        teachers = [tt.TransformersTeacher(config) for config in configs]
        for teacher in teachers:
            await teacher.start()
        assert teachers[0]._loaded is teachers[1]._loaded and shared_models.loaded_count() == 1
        answers = await asyncio.gather(*[asyncio.gather(*[t.complete(r) for r in requests]) for t in teachers])
        await teachers[0].close()
        assert shared_models.loaded_count() == 1  # the other still uses it
        await teachers[1].close()
        return [[c.text for c in per] for per in answers]

    assert asyncio.run(together()) == alone
    assert shared_models.loaded_count() == 0
