"""Filter verdicts in the run store: a rerun replays each stage's decisions, and a changed
threshold recomputes that stage (and what its output feeds) while the stages before it replay."""

from __future__ import annotations

import json
import sqlite3

from factory.cli import main
from tests.helpers.datafiles import read_jsonl
from tests.helpers.pipelines import write_pipeline

SCRIPT = [(r"grade-(\d+)", r'{"rationale": "fine", "score": \1}')]


def rows() -> list[dict]:
    out = []
    for i in range(24):
        answer = f"Answer number {i} about tides and the moon, grade-{1 + i % 10}."
        out.append({"id": f"r{i}", "messages": [{"role": "user", "content": f"Question {i} about tides?"},
                                                 {"role": "assistant", "content": answer}],
                    # Keys out of name order and a NaN: a replay must rebuild exactly what was computed.
                    "metadata": {"zeta": i, "alpha": {"y": "t", "b": float("nan") if i % 3 == 0 else 1.5}}})
    out.append({"id": "copy", "messages": [{"role": "user", "content": "question 0 about TIDES"},
                                           {"role": "assistant", "content": out[0]["messages"][1]["content"]}]})
    return out


def filter_pipeline(tmp_path, url, min_score: int):
    return write_pipeline(tmp_path, url, filters=[
        {"type": "exact_dedup"},
        {"type": "minhash_dedup", "threshold": 0.8},
        {"type": "judge", "min_score": min_score},
    ])


def run_filter(tmp_path, url, min_score: int, out: str):
    source = tmp_path / "in.jsonl"
    if not source.exists():
        source.write_text("".join(json.dumps(r) + "\n" for r in rows()))
    path = filter_pipeline(tmp_path, url, min_score)
    code = main(["filter", str(path), "--input", str(source), "--out", str(tmp_path / out), "--quiet"])
    assert code == 0
    info = json.loads((tmp_path / out / "run.json").read_text())
    dataset = read_jsonl(tmp_path / out / "data.jsonl")
    rejected = read_jsonl(tmp_path / out / "rejected.jsonl")
    return info, dataset, rejected


def metadata(row: dict) -> dict:
    meta = row["metadata"]
    return json.loads(meta) if isinstance(meta, str) else meta


def modes(info) -> list[str]:
    return [stage["verdicts"] for stage in info["funnel"]["stages"] if stage["stage"] != "generate"]


def test_a_rerun_replays_every_stage_and_gives_the_same_outputs(tmp_path, loopback):
    url = loopback(replies=SCRIPT)
    info1, data1, rejected1 = run_filter(tmp_path, url, 5, "out")
    assert modes(info1) == ["computed"] * 3
    first = {name: (tmp_path / "out" / name).read_bytes()
             for name in ("data.jsonl", "rejected.jsonl", "data.parquet", "dataset/dataset_info.json")}
    served = loopback.teacher.served

    info2, data2, rejected2 = run_filter(tmp_path, url, 5, "out")
    assert modes(info2) == ["replayed"] * 3
    assert loopback.teacher.served == served
    assert data2 == data1 and rejected2 == rejected1
    for name in ("data.jsonl", "rejected.jsonl", "data.parquet", "dataset/dataset_info.json"):
        assert (tmp_path / "out" / name).read_bytes() == first[name], name
    assert [s["dropped"] for s in info2["funnel"]["stages"]] == [s["dropped"] for s in info1["funnel"]["stages"]]
    # The judge's score histogram survives a replay, for the card and the report.
    assert info2["funnel"]["stages"][2]["scores"] == info1["funnel"]["stages"][2]["scores"]


def test_records_no_stage_changed_replay_byte_for_byte(tmp_path, loopback):
    """Without a judge most records leave the stages untouched, as `factory filter` holds
    them: the outputs of a replay are the computed ones, byte for byte (NaN, key order)."""
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows()))
    path = write_pipeline(tmp_path, loopback(), filters=[{"type": "exact_dedup"}, {"type": "minhash_dedup"}])
    names = ("data.jsonl", "rejected.jsonl", "data.parquet", "dataset/dataset_info.json")
    outputs = []
    for _ in range(2):
        assert main(["filter", str(path), "--input", str(source), "--out", str(tmp_path / "out"), "--quiet"]) == 0
        outputs.append({name: (tmp_path / "out" / name).read_bytes() for name in names})
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert modes(info) == ["replayed"] * 2
    assert outputs[0] == outputs[1]
    assert b"NaN" not in outputs[0]["data.jsonl"] and len(read_jsonl(tmp_path / "out" / "data.jsonl")) == len(rows()) - 1


def test_a_changed_threshold_recomputes_that_stage_only(tmp_path, loopback):
    url = loopback(replies=SCRIPT)
    run_filter(tmp_path, url, 5, "out")
    served = loopback.teacher.served

    info, data, rejected = run_filter(tmp_path, url, 8, "out")
    assert modes(info) == ["replayed", "replayed", "computed"]
    assert loopback.teacher.served == served  # every grade comes from the journal
    assert {metadata(r)["judge_score"] for r in data} == {8, 9, 10}

    # The same as a fresh run with the new threshold, record for record.
    fresh_info, fresh_data, fresh_rejected = run_filter(tmp_path, url, 8, "fresh")
    assert modes(fresh_info) == ["computed"] * 3
    assert data == fresh_data
    assert sorted(rejected, key=lambda r: r["id"]) == sorted(fresh_rejected, key=lambda r: r["id"])

    # Verdicts of configurations no longer in the pipeline are not kept.
    with sqlite3.connect(tmp_path / "out" / "run.sqlite") as db:
        assert db.execute("SELECT COUNT(DISTINCT stage) FROM verdicts").fetchone()[0] == 3


def test_a_dropped_copy_is_rejected_with_its_reason_on_replay(tmp_path, loopback):
    url = loopback(replies=SCRIPT)
    run_filter(tmp_path, url, 1, "out")
    _, data, rejected = run_filter(tmp_path, url, 1, "out")
    by_id = {r["id"]: r for r in rejected}
    assert by_id["copy"]["stage"] == "exact_dedup"
    assert by_id["copy"]["reason"]
    assert "copy" not in {r["id"] for r in data}
    assert len(data) + len(rejected) == len(rows())


def test_a_finished_run_rerun_replays_generation_and_filters(tmp_path, loopback):
    url = loopback()
    path = write_pipeline(tmp_path, url, filters=[{"type": "exact_dedup"}, {"type": "minhash_dedup"}])
    assert main(["run", str(path), "--quiet"]) == 0
    first = json.loads((tmp_path / "out" / "run.json").read_text())
    served = loopback.teacher.served
    assert main(["run", str(path), "--quiet"]) == 0
    second = json.loads((tmp_path / "out" / "run.json").read_text())
    assert loopback.teacher.served == served
    assert modes(first) == ["computed"] * 2 and modes(second) == ["replayed"] * 2
    assert read_jsonl(tmp_path / "out" / "data.jsonl") and second["funnel"]["kept"] == first["funnel"]["kept"]
