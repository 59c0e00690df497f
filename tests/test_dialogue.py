"""Multi-turn dialogues over real HTTP: length, roles, early end, guards, per-role teachers, resume."""

from __future__ import annotations

import json

import pytest

from factory.loopback.process import loopback_process, server_stats
from tests.helpers.datafiles import read_jsonl
from tests.helpers.pipelines import DIALOGUE_SYSTEM, dialogue_pipeline, exchanges
from tests.helpers.processes import assert_user_error, factory_cli, kill_after
from tests.helpers.run_store import stored


def run(path, *extra):
    result = factory_cli("run", str(path), "--quiet", *extra)
    assert result.returncode == 0, result.stderr
    return result


def test_conversations_have_their_planned_length_and_each_side_sees_its_own_view(tmp_path, loopback):
    url = loopback(keep_bodies=True)
    path = dialogue_pipeline(tmp_path, url, {"count": 8, "turns": [2, 4], "end_marker": None})
    run(path)
    rows = read_jsonl(tmp_path / "out" / "data.jsonl")
    assert len(rows) == 8
    planned = set()
    for row in rows:
        meta = row["metadata"]
        assert row["messages"][0] == {"role": "system", "content": DIALOGUE_SYSTEM}
        pairs = exchanges(row["messages"])
        assert len(pairs) == meta["turns"] == meta["planned_turns"] and 2 <= len(pairs) <= 4
        assert meta["ended"] == "planned_turns" and meta["persona"] in ("a student", "a teacher", "a baker")
        assert len(meta["turn_usage"]) == 2 * len(pairs)
        assert meta["usage"]["completion_tokens"] == sum(u["completion_tokens"] for u in meta["turn_usage"])
        planned.add(len(pairs))
    assert len(planned) > 1, "a [min, max] range should give conversations of different lengths"
    bodies = loopback.teacher.bodies
    assert len(bodies) == sum(2 * r["metadata"]["turns"] for r in rows)

    # Turn 2 of the first conversation, from each side.
    (u1, a1), (u2, _) = exchanges(rows[0]["messages"])[:2]
    simulator = [b["messages"] for b in bodies if len(b["messages"]) == 4 and b["messages"][2]["content"] == u1]
    assert simulator and "role-playing" in simulator[0][0]["content"]
    assert [m["role"] for m in simulator[0]] == ["system", "user", "assistant", "user"]
    assert simulator[0][3]["content"] == a1  # the assistant's reply is what the simulator answers
    assistant = [b["messages"] for b in bodies
                 if b["messages"][0]["content"] == DIALOGUE_SYSTEM and len(b["messages"]) == 4
                 and b["messages"][1]["content"] == u1]
    assert assistant and [m["content"] for m in assistant[0]] == [DIALOGUE_SYSTEM, u1, a1, u2]


SCRIPT = [
    (r"chat window has just opened", "U1 where did my notes go"),
    (r"^U1 ", "A1 look under Note menu > Version history"),
    (r"^A1 ", "U2 found them, how do I stop this happening"),
    (r"^U2 ", "A2 keep one device online until sync finishes"),
    (r"^A2 ", "thanks, all sorted [END]"),
]


def test_the_user_may_end_early_and_the_marker_never_reaches_the_data(tmp_path, loopback):
    url = loopback(replies=SCRIPT)
    path = dialogue_pipeline(tmp_path, url, {"count": 2, "turns": 4})
    run(path, "--set", "filters=[]")
    rows = read_jsonl(tmp_path / "out" / "data.jsonl")
    assert len(rows) == 2
    for row in rows:
        meta = row["metadata"]
        assert exchanges(row["messages"])[-1][0].startswith("U2")
        assert meta["turns"] == 2 and meta["planned_turns"] == 4 and meta["ended"] == "user_ended"
        assert meta["closing_message"] == "thanks, all sorted"
        assert "[END]" not in json.dumps(row["messages"])
    assert sum(loopback.teacher.received.values()) == 2 * 5


def test_ending_before_min_turns_is_retried_then_rejected(tmp_path, loopback):
    url = loopback(replies=SCRIPT)
    path = dialogue_pipeline(tmp_path, url, {"count": 2, "turns": 4, "min_turns": 3, "max_attempts": 2})
    result = factory_cli("run", str(path), "--quiet", "--set", "filters=[]")
    assert result.returncode == 1 and "kept 0 of 2" in result.stderr and "ended_too_early 2" in result.stderr
    assert not read_jsonl(tmp_path / "out" / "data.jsonl")
    rejected = read_jsonl(tmp_path / "out" / "rejected.jsonl")
    assert [r["reason"] for r in rejected] == ["ended_too_early"] * 2
    assert "turn 3 (user)" in rejected[0]["detail"]
    assert exchanges(rejected[0]["messages"])[-1][0].startswith("U2")  # what was made is kept for inspection
    # Two exchanges (4 requests) and then two attempts at the third user turn, per conversation.
    assert sum(loopback.teacher.received.values()) == 2 * 6


GUARD_SCRIPT = [
    (r"SCENARIO empty", "User:"),
    (r"SCENARIO user_as_assistant", "Hello! How can I help you today?"),
    (r"SCENARIO prompt_leak", "You are the one who needs something; do not offer help or talk like a support agent."),
    (r"SCENARIO parrot", "P1 my notebook vanished from the sidebar this morning"),
    (r"^P1 ", "P1 my notebook vanished from the sidebar this morning"),
    (r"SCENARIO assistant_as_user", "Q1 how do I export everything"),
    (r"^Q1 ", "Use File > Export notebook.\nCustomer: thanks, that worked!"),
    (r"SCENARIO marker_leak", "M1 can I share a notebook with my class"),
    (r"^M1 ", "Yes: Share > Publish link. [END]"),
    (r"SCENARIO user_repeats", "R1 the app crashes on start"),
    (r"^R1 ", "R2 which version of the app do you have?"),
    (r"^R2 ", "R1 the app crashes on start"),
    # Near misses that must pass: role words inside sentences, a colon after them.
    (r"SCENARIO clean", "C1 my user account: it shows an error when I sign in"),
    (r"^C1 ", "C2 Customers on the Pro plan can reset sessions. Try Settings > Devices."),
    (r"^C2 ", "C3 ok that worked, and the assistant on my phone too?"),
    (r"^C3 ", "C4 On the phone, sign out and in once more."),
]
EXPECTED = {
    "empty": ("empty_turn", "turn 1 (user)"),
    "user_as_assistant": ("role_break", "turn 1 (user)"),
    "prompt_leak": ("leak", "turn 1 (user)"),
    "parrot": ("repeated_turn", "turn 1 (assistant)"),
    "assistant_as_user": ("role_break", "turn 1 (assistant)"),
    "marker_leak": ("leak", "turn 1 (assistant)"),
    "user_repeats": ("repeated_turn", "turn 2 (user)"),
}


def test_each_guard_rejects_what_it_should_and_nothing_else(tmp_path, loopback):
    url = loopback(replies=GUARD_SCRIPT)
    scenarios = [*EXPECTED, "clean"]
    path = dialogue_pipeline(tmp_path, url, {"count": len(scenarios), "turns": 2, "combine": "product"},
                             seeds={"persona": ["a student"], "goal": ["fix sync"], "scenario": scenarios},
                             opening="(Chat opens. SCENARIO {{ scenario }})")
    run(path, "--set", "filters=[]")
    kept = read_jsonl(tmp_path / "out" / "data.jsonl")
    assert [r["metadata"]["seed"]["scenario"] for r in kept] == ["clean"]
    assert [u for u, _ in exchanges(kept[0]["messages"])] == ["C1 my user account: it shows an error when I sign in",
                                                              "C3 ok that worked, and the assistant on my phone too?"]
    rejected = {r["metadata"]["seed"]["scenario"]: r for r in read_jsonl(tmp_path / "out" / "rejected.jsonl")}
    assert set(rejected) == set(EXPECTED)
    for scenario, (reason, where) in EXPECTED.items():
        assert rejected[scenario]["stage"] == "generate"
        assert rejected[scenario]["reason"] == reason, (scenario, rejected[scenario]["detail"])
        assert where in rejected[scenario]["detail"], (scenario, rejected[scenario]["detail"])


def test_single_call_conversations_follow_the_schema(tmp_path, loopback):
    url = loopback(keep_bodies=True)
    path = dialogue_pipeline(tmp_path, url, {"count": 6, "mode": "single_call", "turns": [2, 3]})
    run(path, "--set", "filters=[]")
    rows = read_jsonl(tmp_path / "out" / "data.jsonl")
    assert len(rows) == 6
    for row in rows:
        assert 2 <= len(exchanges(row["messages"])) <= 3
        assert row["metadata"]["ended"] == "single_call"
    assert len(loopback.teacher.bodies) == 6
    schema = loopback.teacher.bodies[0]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["turns"]["minItems"] == 2 and schema["properties"]["turns"]["maxItems"] == 3


SINGLE_SCRIPT = [
    (r"SCENARIO ok", json.dumps({"turns": [{"user": "how do I export", "assistant": "File > Export notebook."},
                                          {"user": "and attachments?", "assistant": "They go in a folder beside it."}]})),
    (r"SCENARIO messages_form", json.dumps({"messages": [{"role": "user", "content": "is my data encrypted"},
                                                         {"role": "assistant", "content": "Yes, AES-256 at rest."},
                                                         {"role": "user", "content": "where is it stored"},
                                                         {"role": "assistant", "content": "Frankfurt or Oregon."}]})),
    (r"SCENARIO not_alternating", json.dumps({"messages": [{"role": "user", "content": "hi"},
                                                           {"role": "user", "content": "hello?"}]})),
    (r"SCENARIO too_long", json.dumps({"turns": [{"user": f"question {i}", "assistant": f"answer {i}"} for i in range(5)]})),
    (r"SCENARIO parrot", json.dumps({"turns": [{"user": "my notes are gone from the list", "assistant": "ok"},
                                               {"user": "my notes are gone from the list", "assistant": "I see."}]})),
    (r"SCENARIO prose", "Sure! Here is a conversation: the user asks, the assistant answers."),
]


def test_single_call_answers_are_validated(tmp_path, loopback):
    url = loopback(replies=SINGLE_SCRIPT)
    scenarios = ["ok", "messages_form", "not_alternating", "too_long", "parrot", "prose"]
    path = dialogue_pipeline(tmp_path, url, {"count": len(scenarios), "mode": "single_call", "turns": [2, 3],
                                             "combine": "product", "max_attempts": 1},
                             seeds={"persona": ["a student"], "goal": ["export"], "scenario": scenarios})
    (tmp_path / "prompts" / "dialogue").mkdir(parents=True, exist_ok=True)
    (tmp_path / "prompts" / "dialogue" / "single_call.j2").write_text("Write a chat. SCENARIO {{ scenario }}")
    run(path, "--set", "filters=[]", "--set", "teacher.structured_output=prompt")
    kept = {r["metadata"]["seed"]["scenario"]: r for r in read_jsonl(tmp_path / "out" / "data.jsonl")}
    assert set(kept) == {"ok", "messages_form"}
    assert exchanges(kept["messages_form"]["messages"])[1] == ("where is it stored", "Frankfurt or Oregon.")
    reasons = {r["metadata"]["seed"]["scenario"]: r["reason"] for r in read_jsonl(tmp_path / "out" / "rejected.jsonl")}
    assert reasons == {"not_alternating": "bad_structure", "too_long": "bad_structure", "parrot": "repeated_turn",
                       "prose": "unparseable"}


def test_each_role_may_have_its_own_teacher(tmp_path, loopback):
    users = loopback()
    users_server = loopback.teacher
    assistants = loopback(model="big-assistant")
    path = dialogue_pipeline(tmp_path, users, {"count": 3, "turns": 2, "end_marker": None,
                                               "teachers": {"assistant": {"base_url": assistants, "model": "big-assistant",
                                                                          "sampling": {"temperature": 0.2}}}})
    run(path, "--set", "filters=[]")
    assert sum(users_server.received.values()) == 6 and sum(loopback.teacher.received.values()) == 6
    for row in read_jsonl(tmp_path / "out" / "data.jsonl"):
        assert row["metadata"]["teacher_models"] == {"user": "loopback", "assistant": "big-assistant"}
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert info["role_teachers"]["assistant"]["model"] == "big-assistant"


def test_a_bad_role_teacher_is_refused_before_anything_is_sent(tmp_path, loopback):
    url = loopback()
    path = dialogue_pipeline(tmp_path, url, {"teachers": {"user": {"temperature": 0.3}}})
    result = factory_cli("run", str(path), "--quiet")
    assert_user_error(result.returncode, result.stderr, ["generate.teachers.user.temperature", "unknown key"])
    assert sum(loopback.teacher.received.values()) == 0 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("changes, words", [
    ({"turns": [4, 2]}, ["generate.turns", "min <= max"]),
    ({"turns": 0}, ["generate.turns"]),
    ({"min_turns": 5, "turns": [2, 3]}, ["min_turns 5"]),
    ({"mode": "both"}, ["generate.mode"]),
    ({"guards": {"user_breaks": ["(unclosed"]}}, ["generate.guards.user_breaks", "not a valid regular expression"]),
    ({"templates": {"assistant_system": "dialogue/nope.j2"}}, ["system_prompt or templates.assistant_system"]),
])
def test_bad_dialogue_config_is_one_line(tmp_path, loopback, changes, words):
    url = loopback()
    result = factory_cli("validate", str(dialogue_pipeline(tmp_path, url, changes)))
    assert_user_error(result.returncode, result.stderr, words)


def test_sigkill_mid_conversation_resumes_at_the_next_turn(tmp_path):
    generate = {"count": 6, "turns": 4, "end_marker": None}
    with loopback_process("--slots", "2", "--latency-median", "0.04") as url:
        path = dialogue_pipeline(tmp_path / "killed", url, generate, filters=[])
        out = tmp_path / "killed" / "out"
        # 6 conversations advance together: at 20 of 48 turns each is part-way through.
        kill_after(path, out, 20)
        done = stored(out)
        assert 20 <= done < 48
        before = server_stats(url)["received"]
        run(path)
        after = server_stats(url)["received"]
        # Only the turns not stored go out: none stored is asked again.
        assert sum(after.values()) - sum(before.values()) == 48 - done

        whole = dialogue_pipeline(tmp_path / "whole", url, generate, filters=[])
        run(whole)
    resumed = (tmp_path / "killed" / "out" / "data.jsonl").read_text()
    assert resumed == (tmp_path / "whole" / "out" / "data.jsonl").read_text()
    assert len(resumed.splitlines()) == 6
