"""ShareGPT, Alpaca and OpenAI files: each read back gives the rows it was written from."""

from __future__ import annotations

import json

from factory.config.formats import FORMATS
from factory.outputs.formats import reader
from tests.helpers.datafiles import read_jsonl
from tests.helpers.pipelines import dialogue_pipeline, write_pipeline
from tests.helpers.processes import assert_user_error, factory_cli


def assert_round_trip(out, formats):
    rows = read_jsonl(out / "data.jsonl")
    assert rows
    for name in formats:
        written = read_jsonl(out / FORMATS[name].file)
        assert [reader(name)(w) for w in written] == [r["messages"] for r in rows], name
        if name != "openai":
            assert [w["id"] for w in written] == [r["id"] for r in rows]
        else:
            assert all(set(w) == {"messages"} for w in written)  # OpenAI's upload refuses other keys


def test_qa_in_every_format(tmp_path, loopback):
    url = loopback()
    path = write_pipeline(tmp_path, url, generate__system_prompt="You answer questions about the sea.")
    result = factory_cli("run", str(path), "--quiet", "--format", "sharegpt", "--format", "alpaca", "--format", "openai")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    assert_round_trip(out, ["sharegpt", "alpaca", "openai"])
    first = read_jsonl(out / FORMATS["sharegpt"].file)[0]["conversations"]
    assert [t["from"] for t in first] == ["system", "human", "gpt"]
    alpaca = read_jsonl(out / FORMATS["alpaca"].file)[0]
    assert alpaca["system"] == "You answer questions about the sea." and alpaca["input"] == ""
    assert "data.alpaca.jsonl" in (out / "README.md").read_text()


def test_dialogues_as_sharegpt_and_openai_from_the_pipeline_file(tmp_path, loopback):
    url = loopback()
    path = dialogue_pipeline(tmp_path, url, {"count": 4, "turns": 3, "end_marker": None}, filters=[],
                             output__formats=["jsonl", "sharegpt", "openai"])
    result = factory_cli("run", str(path), "--quiet")
    assert result.returncode == 0, result.stderr
    assert_round_trip(tmp_path / "out", ["sharegpt", "openai"])
    assert not (tmp_path / "out" / FORMATS["alpaca"].file).exists()


def test_alpaca_for_dialogues_is_refused_before_anything_is_sent(tmp_path, loopback):
    url = loopback()
    path = dialogue_pipeline(tmp_path, url)
    result = factory_cli("run", str(path), "--quiet", "--format", "alpaca")
    assert_user_error(result.returncode, result.stderr, ["output.formats", "alpaca", "multi-turn", "sharegpt"])
    assert sum(loopback.teacher.received.values()) == 0 and not (tmp_path / "out").exists()


def test_alpaca_for_multi_turn_input_is_refused_by_filter(tmp_path, loopback):
    rows = [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                          {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}]
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = write_pipeline(tmp_path, loopback(), filters=[])
    result = factory_cli("filter", str(path), "--input", str(data), "--format", "alpaca", "--out", str(tmp_path / "f"))
    assert_user_error(result.returncode, result.stderr, [str(data), "alpaca"])
    assert not (tmp_path / "f").exists()


def test_alpaca_input_field_joins_the_instruction():
    row = {"instruction": "Translate to French.", "input": "good morning", "output": "bonjour", "system": ""}
    assert reader("alpaca")(row) == [{"role": "user", "content": "Translate to French.\n\ngood morning"},
                                      {"role": "assistant", "content": "bonjour"}]
