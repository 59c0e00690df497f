"""Reasoning models over real HTTP: OpenAI's reasoning-model API, thinking kept apart from
every answer (Q&A, dialogues), where `output.reasoning` puts it, cached-token cost."""

from __future__ import annotations

import json

import pytest

from factory.core.reasoning import has_thinking_tag, split_thinking
from tests.helpers.datafiles import read_jsonl
from tests.helpers.pipelines import dialogue_pipeline, write_pipeline
from tests.helpers.processes import assert_user_error, factory_cli

PRICE = {"input": 1000.0, "output": 2000.0, "cached_input": 100.0}


@pytest.mark.parametrize("content, field, answer, thinking", [
    ("plain answer", None, "plain answer", None),
    ("the answer", "thought it through", "the answer", "thought it through"),
    ("<think>\nstep one\n</think>\n\nthe answer", None, "the answer", "step one"),
    ("<THINK>a</THINK> one <think>b</think>two", None, "one two", "a\n\nb"),
    # the chat template opened the tag in the prompt: content only closes it
    ("step one\n</think>\n\nthe answer", None, "the answer", "step one"),
    # cut off while thinking: no answer at all
    ("<think>still thinking when max_tokens came", None, "", "still thinking when max_tokens came"),
    ("<think>a</think>b", "from the field", "b", "from the field\n\na"),
])
def test_thinking_is_split_from_the_answer(content, field, answer, thinking):
    assert split_thinking(content, field) == (answer, thinking)
    assert not has_thinking_tag(split_thinking(content, field)[0])


def test_a_mid_text_think_tag_is_left_for_the_filters_to_see():
    text = "Sure, here it is <think> and the rest"
    assert split_thinking(text) == (text, None) and has_thinking_tag(text)


def test_a_reasoning_model_api_gets_requests_it_takes_and_the_invoice_matches(tmp_path, loopback):
    # gpt-5-mini as OpenAI serves it: max_tokens and a non-default temperature are refused
    # with a 400; thinking comes back in <think> tags; the system prompt is cached.
    url = loopback(reasoning_api=True, thinking="tags", cache_prefix=True, keep_bodies=True)
    teacher = loopback.teacher
    path = write_pipeline(tmp_path, url, teacher__model="gpt-5-mini", teacher__price=PRICE)
    result = factory_cli("run", str(path), "--quiet")
    assert result.returncode == 0, result.stderr
    assert not [k for k in teacher.outcomes if k.startswith("refused")], teacher.outcomes
    for body in teacher.bodies:
        assert body["max_completion_tokens"] == 1024
        assert not {"max_tokens", "temperature", "top_p"} & set(body)

    out = tmp_path / "out"
    rows = read_jsonl(out / "data.jsonl")
    assert len(rows) == 12
    for row in rows:
        assert not any(has_thinking_tag(m["content"]) for m in row["messages"])
        assert row["metadata"]["reasoning"].startswith("Let me think this through.")

    # The invoice: what the server billed, at the prices, by hand.
    billed = teacher.billed
    assert billed["answers"] == 6 and billed["cached_tokens"] > 0
    invoice = ((billed["prompt_tokens"] - billed["cached_tokens"]) * 1000.0 + billed["cached_tokens"] * 100.0
               + billed["completion_tokens"] * 2000.0) / 1_000_000
    info = json.loads((out / "run.json").read_text())
    assert info["cost"]["total"] == pytest.approx(invoice, abs=1e-6)
    assert info["cost"]["price_per_million"]["cached_input"] == 100.0
    assert info["usage"]["cached_tokens"] == billed["cached_tokens"]
    assert info["usage"]["completion_tokens"] == billed["completion_tokens"]
    assert f"({billed['cached_tokens']:,} cached)" in result.stdout  # the summary line says so too


def test_a_reasoning_model_the_name_does_not_tell_is_refused_with_what_to_set(tmp_path, loopback):
    url = loopback(reasoning_api=True, keep_bodies=True)
    teacher = loopback.teacher
    path = write_pipeline(tmp_path, url, teacher__model="house-reasoner", generate__count=4)
    refused = factory_cli("run", str(path), "--quiet")
    assert refused.returncode != 0
    assert "token_limit_param: max_completion_tokens" in refused.stderr
    # A 400 about max_tokens is not a refusal of json_schema: the mode never changed.
    assert all(body["response_format"]["type"] == "json_schema" for body in teacher.bodies)

    teacher.bodies.clear()
    taken = factory_cli("run", str(path), "--quiet", "--set", "teacher.token_limit_param=max_completion_tokens",
                        "--set", "teacher.sampling.temperature=null", "--set", "teacher.sampling.top_p=null",
                        "--set", "teacher.extra_body={reasoning_effort: low, top_k: 20}")
    assert taken.returncode == 0, taken.stderr
    assert teacher.bodies and all(b["reasoning_effort"] == "low" and b["top_k"] == 20 for b in teacher.bodies)
    assert len(read_jsonl(tmp_path / "out" / "data.jsonl")) == 4


def test_extra_body_may_not_set_what_factory_sets(tmp_path):
    path = write_pipeline(tmp_path, teacher__extra_body={"max_tokens": 5})
    result = factory_cli("validate", str(path))
    assert_user_error(result.returncode, result.stderr, ["teacher.extra_body", "max_tokens"])


@pytest.mark.parametrize("thinking", ["reasoning", "reasoning_content", "open_tag_in_prompt"])
def test_dialogue_thinking_goes_beside_each_reply_as_reasoning_content(tmp_path, loopback, thinking):
    url = loopback(thinking=thinking)
    path = dialogue_pipeline(tmp_path, url, output={"dir": str(tmp_path / "out"), "reasoning": "messages"})
    result = factory_cli("run", str(path), "--quiet", "--set", "filters=[]")
    assert result.returncode == 0, result.stderr
    rows = read_jsonl(tmp_path / "out" / "data.jsonl")
    assert len(rows) == 6
    for row in rows:
        for m in row["messages"]:
            assert not has_thinking_tag(m["content"])
            if m["role"] == "assistant":
                assert m["reasoning_content"].startswith("Let me think this through.")
            else:  # the simulated user's thinking is not data
                assert m["reasoning_content"] is None
        assert "reasoning" not in row["metadata"]


def test_reasoning_messages_with_several_answers_per_thinking_is_bad_input(tmp_path):
    path = write_pipeline(tmp_path, output={"reasoning": "messages"})  # 2 pairs per request
    result = factory_cli("validate", str(path))
    assert_user_error(result.returncode, result.stderr, ["output.reasoning", "pairs_per_request"])


def test_the_heuristics_filter_rejects_a_think_tag_in_existing_data(tmp_path):
    from factory.cli import main

    rows = [{"prompt": "What is a tide?", "completion": "The sea rising and falling."},
            {"prompt": "Name a volcano.", "completion": "<think>Italy has some.</think> Etna."},
            {"prompt": "Why is the sky blue?", "completion": "Scattering. </think>"}]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pipeline = write_pipeline(tmp_path, filters=[{"type": "heuristics"}])
    assert main(["filter", str(pipeline), "--input", str(source), "--out", str(tmp_path / "f"), "--quiet"]) == 0
    assert [r["messages"][-1]["content"] for r in read_jsonl(tmp_path / "f" / "data.jsonl")] == [
        "The sea rising and falling."]
    rejected = read_jsonl(tmp_path / "f" / "rejected.jsonl")
    assert [(r["stage"], r["reason"]) for r in rejected] == [("heuristics", "thinking_in_answer")] * 2


def test_reasoning_drop_keeps_it_nowhere_and_a_think_tag_left_in_an_answer_is_rejected(tmp_path, loopback):
    pair = '{"pairs": [{"question": "What is a tide?", "answer": "A rise of the sea. <think> or is it"}]}'
    url = loopback(thinking="reasoning", replies=[("volcanoes", pair)])
    path = write_pipeline(tmp_path, url, generate__pairs_per_request=1, generate__count=8,
                          output={"dir": str(tmp_path / "out"), "reasoning": "drop"},
                          filters=[{"type": "heuristics"}])
    result = factory_cli("run", str(path), "--quiet")
    assert result.returncode == 0, result.stderr
    rows = read_jsonl(tmp_path / "out" / "data.jsonl")
    rejected = read_jsonl(tmp_path / "out" / "rejected.jsonl")
    assert rows and rejected and len(rows) + len(rejected) == 8
    assert {r["reason"] for r in rejected} == {"thinking_in_answer"}
    assert all("reasoning" not in row["metadata"] and "reasoning_content" not in row["messages"][-1] for row in rows)


CLAUDE_THINKING = {"thinking": {"type": "enabled", "budget_tokens": 1024}}


def test_claude_extended_thinking_is_the_reasoning_never_the_answer(tmp_path, loopback):
    """backend anthropic with extended thinking, against Messages as Claude answers them
    (thinking blocks first; a temperature other than 1 refused): the thinking is each
    record's reasoning, no text block of it reaches an answer, and no temperature is sent."""
    pytest.importorskip("anthropic", reason="backend: anthropic needs the anthropic package (the test extra installs it)")
    url = loopback(keep_bodies=True)
    path = write_pipeline(tmp_path, url, teacher__backend="anthropic", teacher__model="claude-sonnet-4-5",
                          teacher__extra_body=CLAUDE_THINKING, teacher__sampling={"max_tokens": 4096},
                          output__reasoning="metadata", generate__count=6)
    result = factory_cli("run", str(path), "--quiet")
    assert result.returncode == 0, result.stderr
    bodies = loopback.teacher.bodies
    assert bodies and all(b["thinking"] == CLAUDE_THINKING["thinking"] and "temperature" not in b for b in bodies)
    rows = read_jsonl(tmp_path / "out" / "data.jsonl")
    assert len(rows) == 6
    for row in rows:
        assert row["metadata"]["reasoning"].startswith("Let me think this through.")
        assert not any("think this through" in m["content"] for m in row["messages"])


@pytest.mark.parametrize("teacher, words", [
    ({"sampling": {"max_tokens": 4096, "temperature": 0.3}}, ["teacher", "sampling.temperature", "1"]),
    ({"sampling": {"max_tokens": 1024}}, ["teacher", "budget_tokens", "max_tokens"]),
    ({"sampling": {"max_tokens": 4096}, "extra_body": {"thinking": {"type": "enabled", "budget_tokens": 500}}},
     ["teacher", "budget_tokens", "1024"]),
])
def test_claude_thinking_settings_it_refuses_are_bad_input_before_anything_is_sent(tmp_path, teacher, words):
    options = {"backend": "anthropic", "model": "claude-sonnet-4-5", "extra_body": CLAUDE_THINKING, **teacher}
    path = write_pipeline(tmp_path, **{f"teacher__{k}": v for k, v in options.items()})
    result = factory_cli("validate", str(path))
    assert_user_error(result.returncode, result.stderr, words)
