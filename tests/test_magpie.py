"""Magpie over real HTTP (/v1/completions) and in process: queries from the pre-query
prefix, their checks and dedup, and the refusal of backends that cannot do it."""

from __future__ import annotations

import collections
import json

import pytest

from factory.cli import main
from tests.helpers.instruction_pipelines import kept, magpie_pipeline, rejected, run, run_info
from tests.helpers.processes import assert_user_error, factory_cli


def test_queries_come_from_the_pre_query_prefix_and_repeats_are_dropped_after_the_first(tmp_path, loopback):
    url = loopback(keep_bodies=True)
    path = magpie_pipeline(tmp_path, url, count=60)
    run(path)
    rows, dropped = kept(tmp_path), rejected(tmp_path)
    assert len(rows) + len(dropped) == 60
    raw = [b for b in loopback.teacher.bodies if "prompt" in b]
    assert len(raw) == 60 and {b["prompt"] for b in raw} == {"<|im_start|>user\n"}
    assert len({b["seed"] for b in raw}) == 60  # each query sampled with its own seed
    queries = [r["messages"][0]["content"] for r in rows]
    assert len(set(queries)) == len(queries) > 40
    # The loopback writes from a few dozen forms and topics: some queries come twice.
    assert dropped and {r["reason"] for r in dropped} == {"duplicate_query"}
    by_index = {r["metadata"]["sample_index"]: r for r in rows}
    for row in dropped:
        first = int(row["detail"].split("sample ")[1].split()[0])
        assert first < row["metadata"]["sample_index"]
        assert by_index[first]["messages"][0]["content"] == row["messages"][0]["content"]
    for row in rows:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert row["metadata"]["pre_query"] == "chatml" and row["metadata"]["query_finish_reason"] == "stop"
    # The answer is asked through the chat interface, as any other.
    chats = [b for b in loopback.teacher.bodies if "messages" in b]
    assert len(chats) == len(rows)


SYSTEM = "You are an expert in {{ topic }}."
REPLIES = [
    (r"expert in tides", "Hi"),
    (r"expert in glaciers", "What makes glaciers move downhill?<|im_end|>\n<|im_start|>assistant\nThey slide."),
]


def test_a_query_must_be_long_enough_and_a_run_on_turn_is_cut_at_the_end_marker(tmp_path, loopback):
    url = loopback(replies=REPLIES)
    (tmp_path / "prompts" / "magpie").mkdir(parents=True)
    (tmp_path / "prompts" / "magpie" / "system.j2").write_text(SYSTEM)
    path = magpie_pipeline(tmp_path, url, seeds={"topic": ["tides", "glaciers", "houseplants"]}, count=24,
                           templates={"system": "magpie/system.j2"}, combine="product")
    run(path)
    rows, dropped = kept(tmp_path), rejected(tmp_path)
    reasons = collections.Counter((r["metadata"]["seed"]["topic"], r["reason"]) for r in dropped)
    assert reasons[("tides", "query_too_short")] == 8
    assert reasons[("glaciers", "duplicate_query")] == 7  # every glacier query is the same one
    glaciers = [r for r in rows if r["metadata"]["seed"]["topic"] == "glaciers"]
    assert len(glaciers) == 1
    assert glaciers[0]["messages"][:2] == [{"role": "system", "content": "You are an expert in glaciers."},
                                           {"role": "user", "content": "What makes glaciers move downhill?"}]
    short = next(r for r in dropped if r["reason"] == "query_too_short")
    assert "3 attempts" in short["detail"] and "'Hi'" in short["detail"]
    assert {r["metadata"]["seed"]["topic"] for r in rows} == {"glaciers", "houseplants"}


def test_a_query_that_never_ends_its_turn_is_rejected(tmp_path, loopback):
    url = loopback(faults={"truncated": 1.0})
    path = magpie_pipeline(tmp_path, url, count=4)
    result = run(path, expect=1)  # nothing kept: said so
    assert "query_truncated 4" in result.stderr
    assert all("finish_reason=length" in r["detail"] for r in rejected(tmp_path))


def test_a_server_without_raw_completion_stops_the_run_at_its_first_answer(tmp_path, loopback):
    url = loopback(completions=False)
    path = magpie_pipeline(tmp_path, url, count=50)
    result = factory_cli("run", str(path), "--quiet")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not serve /v1/completions" in lines[0], result.stderr
    assert sum(loopback.teacher.received.values()) == 0  # 404s: nothing answered, nothing to pay


@pytest.mark.parametrize("teacher, generate, words", [
    ({"base_url": None, "api_key_env": "MAGPIE_TEST_KEY"}, {}, ["generate.task", "api.openai.com", "/v1/completions"]),
    ({"backend": "anthropic", "base_url": None, "api_key_env": "MAGPIE_TEST_KEY", "model": "claude-sonnet-4-5"}, {},
     ["teacher.backend", "Messages API"]),
    ({"mode": "batch"}, {}, ["teacher.mode", "batch"]),
    ("ray", {}, ["executor.type", "magpie", "local"]),
    ({}, {"pre_query": None}, ["generate.pre_query", "chatml", "tokenizer"]),
    ({}, {"pre_query": "gemma", "system_prompt": "You teach chess."}, ["generate.pre_query", "gemma", "system"]),
    ({}, {"pre_query": "chatml", "tokenizer": "somewhere"}, ["generate", "pre_query", "tokenizer"]),
    ({}, {"pre_query": "chatlm"}, ["generate.pre_query"]),
])
def test_backends_and_settings_that_cannot_do_it_are_refused_before_anything_is_sent(tmp_path, teacher, generate,
                                                                                      words):
    extra = ["--set", "executor.type=ray"] if teacher == "ray" else []
    path = magpie_pipeline(tmp_path, "http://127.0.0.1:9/v1", {} if teacher == "ray" else teacher, **generate)
    result = factory_cli("run", str(path), *extra, env={"MAGPIE_TEST_KEY": "sk-test"})
    assert_user_error(result.returncode, result.stderr, words)
    assert not (tmp_path / "out").exists()


def test_in_process_the_prefix_comes_from_the_models_own_template(tmp_path, tiny_model, capsys):
    path = magpie_pipeline(tmp_path, "unused", {"backend": "transformers", "model": str(tiny_model),
                                                "base_url": None, "sampling": {"max_tokens": 6}},
                           count=3, pre_query=None, max_attempts=1)
    assert main(["validate", str(path)]) == 0
    assert "[raw prompt]\n<|im_start|>user\n" in capsys.readouterr().out
    code = main(["run", str(path), "--quiet"])
    info = run_info(tmp_path)
    assert code == (0 if info["funnel"]["kept"] else 1)
    assert info["funnel"]["kept"] + info["funnel"]["rejected"] == 3
    assert info["task"]["pre_query"] == f"tokenizer:{tiny_model}"
    # A random model rarely ends its turn within 6 tokens: each query was asked, in process.
    assert info["usage"]["requests"] >= 3 and info["usage"]["completion_tokens"] > 0
    for row in rejected(tmp_path):
        assert row["reason"] in ("query_truncated", "query_too_short", "query_too_long", "duplicate_query")
    # The rerun replays the raw completions from the run store.
    assert main(["run", str(path), "--quiet"]) == code
    assert json.loads((tmp_path / "out" / "run.json").read_text())["invocations"][-1]["usage"]["requests"] == 0


def test_a_raw_request_is_keyed_by_its_prompt_and_a_chat_request_keeps_its_key(tmp_path):
    from factory.config.pipeline import TeacherConfig
    from factory.engine.engine import Engine, RunStats
    from factory.teachers.identity import KEY_VERSION
    from factory.teachers.limits import AdaptiveWindow, RateLimiter
    from factory.store.run_store import RunStore, request_key
    from factory.teachers.base import Request, Teacher

    class Silent(Teacher):
        model = "m"

        async def complete(self, request):
            raise AssertionError("nothing is sent here")

    teacher = Silent()
    teacher.config = TeacherConfig(backend="openai", base_url="http://127.0.0.1:9/v1", model="m")
    engine = Engine(teacher, RunStore.open(tmp_path), AdaptiveWindow(1), RateLimiter(None, None), RunStats())
    chat = Request([{"role": "user", "content": "hi"}], seed=1)
    described = {"v": KEY_VERSION, "model": "m", "sampling": teacher.config.sampling.model_dump(exclude_none=True),
                 "structured": "auto", "schema": None, "schema_name": "answer", "seed": 1,
                 "messages": chat.messages, "unit": 0, "step": 0}
    assert engine.key(chat, 0, 0) == request_key(described)
    a = engine.key(Request([], seed=1, prompt="<|im_start|>user\n"), 0, 0)
    b = engine.key(Request([], seed=1, prompt="<|start_header_id|>user<|end_header_id|>\n\n"), 0, 0)
    assert len({a, b, engine.key(chat, 0, 0)}) == 3
