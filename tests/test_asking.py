"""The one retry loop: answer sequences from a scripted asker -> the value or the last reason."""

from __future__ import annotations

import asyncio

import pytest

from factory.core.errors import BadResponse, RequestRefused, TeacherError
from factory.tasks.asking import NoUsableAnswer, Unusable, ask_until_usable
from factory.tasks.base import request_seed
from factory.teachers.base import Completion, Request

MESSAGES = [{"role": "user", "content": "Q?"}]


class Oversized(BadResponse):
    reason = "oversized"


class ScriptedAsker:
    """Answers from a queue: a text (finished normally), a Completion, or an exception to raise."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.asked: list[tuple[int | str, int | str, Request]] = []

    async def ask(self, request: Request, unit: int | str, step: int | str) -> Completion:
        self.asked.append((unit, step, request))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer if isinstance(answer, Completion) else Completion(answer, "stop")

    @property
    def steps(self) -> list[int | str]:
        return [step for _, step, _ in self.asked]


def use(completion: Completion, attempt: int) -> str:
    if completion.text.startswith("ok"):
        return completion.text
    reason = "truncated" if completion.finish_reason == "length" else "unparseable"
    raise Unusable(reason, f"{completion.text!r} (attempt {attempt + 1})")


def ask(asker, max_attempts=3, **options):
    return asyncio.run(ask_until_usable(asker, MESSAGES, use, unit=7, pipeline_seed=42,
                                        max_attempts=max_attempts, **options))


@pytest.mark.parametrize("answers, max_attempts, value, attempts", [
    (["ok 1"], 3, "ok 1", 1),
    (["junk", "ok 2"], 3, "ok 2", 2),
    ([BadResponse("empty choice"), "ok 2"], 3, "ok 2", 2),
    ([BadResponse("empty choice"), Completion("{", "length"), "ok 3"], 3, "ok 3", 3),
    (["junk", "junk", "junk", "ok 4"], 4, "ok 4", 4),
])
def test_the_first_usable_answer_is_returned(answers, max_attempts, value, attempts):
    asker = ScriptedAsker(*answers)
    answer = ask(asker, max_attempts)
    assert (answer.value, answer.attempts) == (value, attempts)
    assert answer.completion.text == value
    assert asker.steps == list(range(attempts))


@pytest.mark.parametrize("answers, max_attempts, reason, detail", [
    (["junk"], 1, "unparseable", "'junk' (attempt 1)"),
    (["junk", "junk", "more junk"], 3, "unparseable", "'more junk' (attempt 3)"),
    (["junk", Completion('{"pairs": [', "length")], 2, "truncated", "'{\"pairs\": [' (attempt 2)"),
    (["junk", BadResponse("no choices in the body")], 2, "bad_response", "no choices in the body"),
    ([BadResponse("no choices"), "junk"], 2, "unparseable", "'junk' (attempt 2)"),
    ([Oversized("answer over 1 MB")], 1, "oversized", "answer over 1 MB"),
])
def test_the_last_reason_stands_when_no_answer_is_usable(answers, max_attempts, reason, detail):
    asker = ScriptedAsker(*answers, "ok never asked")
    with pytest.raises(NoUsableAnswer) as caught:
        ask(asker, max_attempts)
    assert (caught.value.reason, caught.value.detail, caught.value.attempts) == (reason, detail, max_attempts)
    assert asker.steps == list(range(max_attempts))


@pytest.mark.parametrize("failure", [TeacherError("cannot reach the server"), RequestRefused("unknown model")])
def test_a_teacher_failure_is_not_an_answer_and_propagates(failure):
    asker = ScriptedAsker("junk", failure, "ok never asked")
    with pytest.raises(type(failure)):
        ask(asker)
    assert asker.steps == [0, 1]


def test_each_attempt_has_its_own_step_seed_and_request():
    schema = {"type": "object"}
    asker = ScriptedAsker("junk", BadResponse("empty"), "ok")
    ask(asker, schema=schema, schema_name="qa_pairs", step=lambda attempt: f"user:3:{attempt}")
    assert asker.steps == ["user:3:0", "user:3:1", "user:3:2"]
    for unit, step, request in asker.asked:
        assert unit == 7
        assert request.seed == request_seed(42, 7, step)
        assert (request.messages, request.schema, request.schema_name) == (MESSAGES, schema, "qa_pairs")
    assert len({request.seed for _, _, request in asker.asked}) == 3


def test_at_least_one_attempt():
    with pytest.raises(ValueError, match="max_attempts"):
        ask(ScriptedAsker("ok"), max_attempts=0)
