"""generate.keep and generate.balance: exact-size, balanced datasets through top-up rounds,
against the loopback teacher, with a judge stand-in that drops one cell more than the others."""

from __future__ import annotations

import collections
import json

import pytest

from factory.cli import main
from factory.run.quota import Quotas, plan_round, round_size
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


# A judge that keeps about half, unevenly across cells and in no pattern of the sample
# index: each sample's roll (0-99) is a multiplicative hash of its index, and it fails
# below a difficulty's bar (easy 40, medium 50, hard 60).
HALF_RUBRIC = ("Grade roll={{ (metadata.sample_index * 2654435761) % 4294967296 // 42949673 }} "
               "bar={{ {'easy': 40, 'medium': 50, 'hard': 60}[metadata.seed.difficulty] }}: {{ answer }}")
HALF_SCRIPT = [(r"roll=(\d|[1-3]\d) bar=40:", '{"rationale": "off", "score": 1}'),
               (r"roll=(\d|[1-4]\d) bar=50:", '{"rationale": "off", "score": 1}'),
               (r"roll=(\d|[1-5]\d) bar=60:", '{"rationale": "off", "score": 1}'),
               (r"roll=", '{"rationale": "fine", "score": 9}')]


# The first round: generate.count's default (keep), or a small one that leaves the
# second round almost no evidence (before the rounds were sized from confidence bounds,
# that one generated 814 samples where 612 were needed: 1.33x).
@pytest.mark.parametrize("count", [None, 12])
def test_balanced_keep_generates_within_1_3x_of_what_its_acceptance_needed(tmp_path, loopback, count):
    url = loopback(replies=HALF_SCRIPT)
    path = write_pipeline(tmp_path, url, generate__count=count, generate__keep=300, generate__balance="difficulty",
                          seeds__difficulty=["easy", "medium", "hard"],
                          filters=[{"type": "judge", "min_score": 5, "rubric": "judge/half.j2"}])
    (tmp_path / "prompts" / "qa" / "user.j2").write_text(
        'Write {{ k }} {{ difficulty }} question/answer pairs about "{{ topic }}" for {{ persona }}.')
    (tmp_path / "prompts" / "judge").mkdir()
    (tmp_path / "prompts" / "judge" / "half.j2").write_text(HALF_RUBRIC)
    assert main(["run", str(path), "--quiet"]) == 0
    out = tmp_path / "out"
    info = json.loads((out / "run.json").read_text())
    data = read_jsonl(out / "data.jsonl")

    # The keep contract: exactly keep, every cell exactly its quota.
    assert len(data) == 300
    assert collections.Counter(metadata(r)["seed"]["difficulty"] for r in data) == {
        "easy": 100, "medium": 100, "hard": 100}
    assert all(c["kept"] == c["quota"] == 100 for c in info["quota"]["cells"])
    requested = info["funnel"]["requested"]
    judge = next(s for s in info["funnel"]["stages"] if s["stage"] == "judge")
    acceptance = judge["kept"] / requested
    assert 0.4 < acceptance < 0.6  # the judge keeps about half
    needed = 300 / acceptance
    assert requested / needed <= 1.3, (requested, round(needed), info["quota"])
    # Each round costs a filter pass: the evidence of the first fills most cells in one more.
    assert info["quota"]["rounds"] <= 3


@pytest.mark.parametrize("short, kept, requested, asked", [
    (50, 0, 0, 70),        # no evidence: the shortfall and the overfill allowance (20 of 100), as if all pass
    (50, 5, 10, 88),       # thin evidence: what overfills by at most 20 at the high end; the next round finishes
    (50, 50, 100, 115),    # the margin over 50 / 0.5 = 100 shrinks as the evidence grows ...
    (50, 500, 1000, 111),
    (50, 5000, 10000, 104),
    (3, 100, 200, 8),      # a small shortfall: enough even at the low end
    (50, 0, 100, 1000),    # nothing kept yet: FLOOR_RATE bounds the round
])
def test_round_size_from_the_cells_confidence_bounds(short, kept, requested, asked):
    assert round_size(short, 100, kept, requested) == asked


def test_a_round_asks_only_for_short_cells_in_whole_units():
    def seed_of(unit):
        return {"topic": ["tides", "volcanoes"][unit % 2]}

    quotas = Quotas(20, ["topic"], {("tides",): 1.0, ("volcanoes",): 1.0})
    kept = collections.Counter({("tides",): 12, ("volcanoes",): 5})
    requested = collections.Counter({("tides",): 20, ("volcanoes",): 20})
    units = plan_round(quotas, kept, requested, 3, seed_of, 40, 10_000)
    assert all(seed_of(u)["topic"] == "volcanoes" for u in units)  # tides is full (12 of 10)
    assert len(units) == -(-round_size(5, 10, 5, 20) // 3)
