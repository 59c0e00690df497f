"""generate.keep and generate.balance: exact-size, balanced datasets through top-up rounds,
against the loopback teacher, with a judge stand-in that drops one cell more than the others."""

from __future__ import annotations

import collections
import json

from factory.cli import main
from tests.helpers.datafiles import read_jsonl
from tests.helpers.pipelines import KEEP_SCRIPT, keep_pipeline, write_pipeline
from tests.helpers.processes import assert_user_error

TOPICS = ["tides", "volcanoes", "glaciers", "coral reefs"]


def metadata(row):
    meta = row["metadata"]
    return json.loads(meta) if isinstance(meta, str) else meta


def test_balanced_keep_tops_up_the_short_cell_and_ends_exact(tmp_path, loopback):
    url = loopback(replies=KEEP_SCRIPT)
    path = keep_pipeline(tmp_path, url)
    assert main(["run", str(path), "--quiet"]) == 0
    out = tmp_path / "out"
    data, rejected = read_jsonl(out / "data.jsonl"), read_jsonl(out / "rejected.jsonl")
    info = json.loads((out / "run.json").read_text())

    assert len(data) == 12
    assert collections.Counter(metadata(r)["seed"]["topic"] for r in data) == {t: 3 for t in TOPICS}
    # Every requested sample ends kept or rejected, with its reason.
    assert len(data) + len(rejected) == info["funnel"]["requested"]
    reasons = collections.Counter(r["reason"] for r in rejected)
    assert reasons["low_score"] > 0 and reasons["surplus"] > 0
    assert all(metadata(r)["seed"]["topic"] == "volcanoes" for r in rejected if r["reason"] == "low_score")
    quota = info["quota"]
    assert quota["keep"] == 12 and quota["rounds"] >= 2
    cells = {c["cell"]: c for c in quota["cells"]}
    assert all(c["kept"] == c["quota"] == 3 for c in cells.values())
    # The cell the judge drops more of was asked for more.
    assert cells["topic=volcanoes"]["requested"] > max(c["requested"] for k, c in cells.items()
                                                       if k != "topic=volcanoes")
    card = (out / "README.md").read_text()
    assert "topic=volcanoes" in card

    # A rerun sends nothing and keeps the same records.
    served = loopback.teacher.served
    assert main(["run", str(path), "--quiet"]) == 0
    assert loopback.teacher.served == served
    assert read_jsonl(out / "data.jsonl") == data


def test_same_dataset_whatever_the_window(tmp_path, loopback):
    url = loopback(replies=KEEP_SCRIPT)
    datasets = []
    for window in (1, 16):
        folder = tmp_path / f"w{window}"
        path = keep_pipeline(folder, url, teacher__max_concurrency=window)
        assert main(["run", str(path), "--quiet"]) == 0
        datasets.append([(r["id"], r["messages"]) for r in read_jsonl(folder / "out" / "data.jsonl")])
    assert datasets[0] == datasets[1]


def test_max_rounds_reached_is_exit_1_and_exports_nothing(tmp_path, loopback, capsys):
    url = loopback(replies=[(r"topic=volcanoes", '{"rationale": "off", "score": 1}'),
                            (r"topic=", '{"rationale": "fine", "score": 9}')])
    path = keep_pipeline(tmp_path, url, generate__max_rounds=2)
    assert main(["run", str(path), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "generate.max_rounds (2) reached" in err[0] and "topic=volcanoes: 3 short" in err[0]
    out = tmp_path / "out"
    assert json.loads((out / "run.json").read_text())["status"] == "incomplete"
    assert not (out / "data.jsonl").exists() and not (out / "dataset").exists()


def test_bad_balance_is_one_line_before_anything_is_sent(tmp_path, loopback, capsys):
    url = loopback()
    for balance, words in [("colour", ["generate.balance", "'colour' is not a seed variable"]),
                           ({"topic": {"lava": 1}}, ["generate.balance.topic", "'lava' is not a value"])]:
        path = write_pipeline(tmp_path, url, generate__keep=4, generate__balance=balance)
        code = main(["run", str(path), "--quiet"])
        assert_user_error(code, capsys.readouterr().err, words)
    path = write_pipeline(tmp_path, url, generate__balance="topic")
    code = main(["run", str(path), "--quiet"])
    assert_user_error(code, capsys.readouterr().err, ["balance needs keep"])
    assert loopback.teacher.served == 0
