"""`factory filter`: the pipeline's stages on existing data in every accepted form."""

from __future__ import annotations

import collections
import json

import datasets
import pytest

from factory.cli import main
from tests.helpers.datafiles import read_jsonl, write_input
from tests.helpers.pipelines import write_pipeline
from tests.helpers.processes import assert_user_error

# Four shapes of row, each with an exact copy (case and punctuation changed) to be dropped.
ROWS = [
    {"id": "m1", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a tide?"},
                              {"role": "assistant", "content": "The rise and fall of the sea."}]},
    {"id": "m2", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "what is a TIDE"},
                              {"role": "assistant", "content": "The rise and fall of the sea"}]},
    {"instruction": "Name a volcano.", "input": "In Italy.", "output": "Vesuvius.", "category": "geo"},
    {"instruction": "Name a volcano", "input": "in italy", "output": "VESUVIUS", "category": "geo"},
    {"prompt": "Why is the sky blue?", "completion": "Rayleigh scattering of sunlight."},
    {"prompt": "Why is the sky blue", "completion": "Rayleigh scattering of sunlight"},
    {"text": "Glaciers carve U-shaped valleys."},
    {"text": "glaciers carve u-shaped valleys"},
]


@pytest.mark.parametrize("form", ["jsonl", "parquet", "saved_dataset"])
def test_every_form_and_shape_is_filtered(tmp_path, form, capsys):
    pipeline = write_pipeline(tmp_path, filters=[{"type": "exact_dedup"}])
    source = write_input(tmp_path, form, ROWS)
    out = tmp_path / "filtered"
    assert main(["filter", str(pipeline), "--input", str(source), "--out", str(out), "--quiet"]) == 0

    kept = datasets.load_from_disk(str(out / "dataset"))
    assert kept.num_rows == 4
    by_first_user = {next(m["content"] for m in row["messages"] if m["role"] != "system"): row for row in kept}
    assert set(by_first_user) == {"What is a tide?", "Name a volcano.\n\nIn Italy.", "Why is the sky blue?",
                                  "Glaciers carve U-shaped valleys."}
    assert by_first_user["What is a tide?"]["id"] == "m1"  # an input id is kept
    assert by_first_user["What is a tide?"]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert [m["role"] for m in by_first_user["Name a volcano.\n\nIn Italy."]["messages"]] == ["user", "assistant"]
    volcano_meta = by_first_user["Name a volcano.\n\nIn Italy."]["metadata"]
    assert volcano_meta["input_columns"] == {"category": "geo"}  # extra columns are not lost

    rejected = read_jsonl(out / "rejected.jsonl")
    assert len(rejected) == 4 and {r["reason"] for r in rejected} == {"exact_duplicate"}
    assert "m2" in {r["id"] for r in rejected}
    run = json.loads((out / "run.json").read_text())
    funnel = run["funnel"]
    assert funnel["requested"] == 8 and funnel["kept"] == 4 and funnel["rejected"] == 4
    assert funnel["kept"] + funnel["rejected"] == funnel["requested"]
    assert run["input"]["rows"] == 8
    card = (out / "README.md").read_text()
    assert "filtered with factory" in card and "| exact_dedup | 8 | 4 |" in card
    assert "kept 4 of 8 input rows" in capsys.readouterr().out


def test_judge_through_filter_and_refiltering_keeps_scores(tmp_path, loopback):
    url = loopback(replies=[(r"score-(\d+)", r'{"rationale": "graded", "score": \1}')])
    rows = [{"prompt": f"Question {i}?", "completion": f"Answer score-{i} here."} for i in range(1, 11)]
    source = write_input(tmp_path, "jsonl", rows)
    pipeline = write_pipeline(tmp_path, url, filters=[{"type": "judge", "min_score": 4}])
    first = tmp_path / "judged"
    assert main(["filter", str(pipeline), "--input", str(source), "--out", str(first), "--quiet"]) == 0
    kept = read_jsonl(first / "data.jsonl")
    assert sorted(r["metadata"]["judge_score"] for r in kept) == list(range(4, 11))
    assert {r["reason"] for r in read_jsonl(first / "rejected.jsonl")} == {"low_score"}
    sent = loopback.teacher.served

    # The judged output is itself an input: its scores ride along in metadata.
    second = tmp_path / "again"
    assert main(["filter", str(pipeline), "--input", str(first / "dataset"), "--out", str(second), "--quiet",
                 "--set", "filters=[{type: heuristics, min_chars: {assistant: 5}}]"]) == 0
    again = read_jsonl(second / "data.jsonl")
    assert [r["id"] for r in again] == [r["id"] for r in kept]
    assert [r["metadata"]["judge_score"] for r in again] == [r["metadata"]["judge_score"] for r in kept]
    assert loopback.teacher.served == sent


SOURCED = [
    {"id": "a", "prompt": "What is a tide?", "completion": "The sea rises.", "source_url": "u1"},
    {"id": "b", "prompt": "Explain tides.", "completion": "The sea rises and falls.", "source_url": "u1"},
    {"id": "c", "prompt": "What is a tide?", "completion": "Something else entirely.", "source_url": "u2"},
    {"id": "d", "prompt": "Why is the sky blue?", "completion": "Scattering.", "source_url": "u1"},
]


@pytest.mark.parametrize("choice,kept", [
    ({"fields": ["input_columns.source_url"]}, ["a", "c"]),  # only the field: one record per source
    ({"roles": ["user"]}, ["a", "b", "d"]),  # only the question
    ({"roles": ["user"], "fields": ["input_columns.source_url"]}, ["a", "b", "c", "d"]),
])
def test_dedup_compares_the_chosen_roles_and_fields(tmp_path, choice, kept):
    source = write_input(tmp_path, "jsonl", SOURCED)
    for kind in ("exact_dedup", "minhash_dedup"):
        pipeline = write_pipeline(tmp_path, filters=[{"type": kind, "ngram": 1, **choice} if kind == "minhash_dedup"
                                                     else {"type": kind, **choice}])
        out = tmp_path / kind
        assert main(["filter", str(pipeline), "--input", str(source), "--out", str(out), "--quiet"]) == 0
        data = read_jsonl(out / "data.jsonl")
        assert [r["id"] for r in data] == kept, kind
        rejected = read_jsonl(out / "rejected.jsonl")
        copies = collections.Counter(r["metadata"]["duplicate_of"] for r in rejected)
        for r in rejected:  # each drop names its kept record and how large their cluster is
            assert r["metadata"]["cluster_size"] == 1 + copies[r["metadata"]["duplicate_of"]]
        count = "exact_duplicates" if kind == "exact_dedup" else "near_duplicates"
        assert {r["id"]: r["metadata"].get(count) or 0 for r in data} == {k: copies[k] for k in kept}


def test_a_field_no_record_has_is_one_line_before_anything_is_written(tmp_path, capsys):
    source = write_input(tmp_path, "jsonl", SOURCED)
    pipeline = write_pipeline(tmp_path, filters=[{"type": "exact_dedup"},
                                                 {"type": "minhash_dedup", "fields": ["input_columns.sourceurl"]}])
    code = main(["filter", str(pipeline), "--input", str(source), "--out", str(tmp_path / "out")])
    assert_user_error(code, capsys.readouterr().err, ["filters[1].fields", "'input_columns.sourceurl'"])
    assert not (tmp_path / "out").exists()


def test_fields_a_judge_adds_can_be_compared_after_it(tmp_path, loopback):
    url = loopback(replies=[(r"score-(\d+)", r'{"rationale": "graded", "score": \1}')])
    rows = [{"prompt": f"Question {i}?", "completion": f"Answer score-{i % 3 + 1} here."} for i in range(9)]
    source = write_input(tmp_path, "jsonl", rows)
    pipeline = write_pipeline(tmp_path, url, filters=[{"type": "judge"}, {"type": "exact_dedup", "fields": ["judge_score"]}])
    assert main(["filter", str(pipeline), "--input", str(source), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    kept = read_jsonl(tmp_path / "out" / "data.jsonl")
    assert sorted(r["metadata"]["judge_score"] for r in kept) == [1, 2, 3]

BAD_INPUTS = [
    ("missing", None, ["input not found"]),
    ("bad-json-line", ('in.jsonl', '{"text": "ok"}\n{"text": \n'), ["in.jsonl:2", "invalid JSON"]),
    ("unknown-shape", ('in.jsonl', '{"question": "q", "answer": "a"}\n'), ["in.jsonl:1", "none of", "question"]),
    ("bad-role", ('in.jsonl', '{"messages": [{"role": "robot", "content": "x"}]}\n'), ["in.jsonl:1", "messages[0].role"]),
    ("content-not-text", ('in.jsonl', '{"messages": [{"role": "user", "content": 5}]}\n'), ["messages[0].content"]),
    ("empty-messages", ('in.jsonl', '{"messages": []}\n'), ["in.jsonl:1", "non-empty"]),
    ("output-not-text", ('in.jsonl', '{"instruction": "a", "output": ["b"]}\n'), ["in.jsonl:1", "output"]),
    ("repeated-id", ('in.jsonl', '{"id": 7, "text": "a"}\n{"id": 7, "text": "b"}\n'), ["in.jsonl:2", "repeats"]),
    ("row-not-object", ('in.jsonl', '[1, 2]\n'), ["in.jsonl:1", "expected an object"]),
    ("bad-metadata", ('in.jsonl', '{"text": "a", "metadata": "{oops"}\n'), ["in.jsonl:1", "metadata"]),
    ("not-utf8", ('in.jsonl', b'{"text": "\xff\xfe"}\n'), ["in.jsonl", "UTF-8"]),
    ("bad-parquet", ('in.parquet', b"PAR1 this is not parquet"), ["in.parquet", "Parquet"]),
    ("unsupported-suffix", ('in.csv', "text\nhello\n"), ["in.csv", "unsupported"]),
    ("folder-not-dataset", ('folder/readme.txt', "hi"), ["folder", "save_to_disk"]),
]


@pytest.mark.parametrize("content,words", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_file_is_one_line_and_exit_2(tmp_path, loopback, capsys, content, words):
    url = loopback()
    pipeline = write_pipeline(tmp_path, url, filters=[{"type": "judge"}])
    target = tmp_path / "nothing.jsonl"
    if content is not None:
        name, data = content
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        (target.write_bytes if isinstance(data, bytes) else target.write_text)(data)
        if name.startswith("folder/"):
            target = target.parent
    code = main(["filter", str(pipeline), "--input", str(target), "--out", str(tmp_path / "out"), "--quiet"])
    assert_user_error(code, capsys.readouterr().err, words)
    assert sum(loopback.teacher.received.values()) == 0
    assert not (tmp_path / "out").exists()


def test_bad_filter_config_stops_before_reading(tmp_path, capsys):
    pipeline = write_pipeline(tmp_path, filters=[{"type": "minhash_dedup", "threshold": 3}])
    source = write_input(tmp_path, "jsonl", ROWS)
    assert main(["filter", str(pipeline), "--input", str(source), "--out", str(tmp_path / "out")]) == 2
    assert "filters[0].threshold" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
