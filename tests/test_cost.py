"""Cost: prices give the run's cost; max_cost stops it before it goes over, resumably."""

from __future__ import annotations

import json
import sqlite3

from tests.helpers.datafiles import read_jsonl
from tests.helpers.pipelines import write_pipeline
from tests.helpers.processes import assert_user_error, factory_cli

PRICE = {"input": 1000.0, "output": 2000.0}  # per million tokens: large, so a few requests cost something


def paid(out_dir) -> tuple[int, float]:
    """Answers in the run store and what they cost at PRICE."""
    db = sqlite3.connect(str(out_dir / "run.sqlite"))
    try:
        rows = [json.loads(v)["completion"] for (v,) in db.execute("SELECT value FROM requests")]
    finally:
        db.close()
    total = sum(r["prompt_tokens"] * PRICE["input"] + r["completion_tokens"] * PRICE["output"] for r in rows) / 1e6
    return len(rows), total


def pipeline(tmp_path, url, **changes):
    return write_pipeline(tmp_path, url, generate__count=40, generate__pairs_per_request=1,
                          teacher__price=PRICE, teacher__sampling={"max_tokens": 100}, **changes)


def test_prices_give_the_cost_of_the_run(tmp_path, loopback):
    path = pipeline(tmp_path, loopback())
    result = factory_cli("run", str(path), "--quiet")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    info = json.loads((out / "run.json").read_text())
    _, expected = paid(out)
    cost = info["cost"]
    assert cost["currency"] == "USD" and cost["price_per_million"] == {"input": 1000.0, "output": 2000.0}
    assert abs(cost["total"] - expected) < 1e-5 and abs(cost["paid_now"] - expected) < 1e-5
    assert abs(info["usage"]["cost"] - expected) < 1e-5
    assert "Cost" in (out / "README.md").read_text()
    # Rerun: every unit is settled in the store: the same cost, none of it paid now.
    again = factory_cli("run", str(path), "--quiet")
    assert again.returncode == 0, again.stderr
    info = json.loads((out / "run.json").read_text())
    cost = info["cost"]
    assert cost["paid_now"] == 0 and abs(cost["replayed_from_journal"] - expected) < 1e-5
    assert abs(cost["total"] - expected) < 1e-5 and abs(info["usage"]["cost"] - expected) < 1e-5


def test_max_cost_stops_before_going_over_and_a_rerun_continues(tmp_path, loopback):
    url = loopback()
    path = pipeline(tmp_path, url, max_cost=2.0)
    stopped = factory_cli("run", str(path), "--quiet")
    assert stopped.returncode == 1
    lines = stopped.stderr.strip().splitlines()
    assert len(lines) == 1 and "max_cost 2 would be passed" in lines[0] and "run again" in lines[0], stopped.stderr
    journal = tmp_path / "out"
    done, spent = paid(journal)
    assert 0 < done < 40 and spent <= 2.0, (done, spent)
    assert not (tmp_path / "out" / "dataset").exists()
    # A higher cap: the rest is sent, nothing twice, and the total counts the first part.
    more = factory_cli("run", str(path), "--quiet", "--set", "max_cost=100")
    assert more.returncode == 0, more.stderr
    teacher = loopback.teacher
    assert sum(teacher.received.values()) == 40 and max(teacher.received.values()) == 1
    assert len(read_jsonl(tmp_path / "out" / "data.jsonl")) == 40
    cost = json.loads((tmp_path / "out" / "run.json").read_text())["cost"]
    _, total = paid(journal)
    assert abs(cost["total"] - total) < 1e-5 and abs(cost["replayed_from_journal"] - spent) < 1e-5


def test_max_cost_without_a_price_is_refused(tmp_path):
    path = write_pipeline(tmp_path, max_cost=5)
    result = factory_cli("validate", str(path))
    assert_user_error(result.returncode, result.stderr, ["max_cost", "teacher.price"])


def test_a_max_cost_stop_writes_run_json_whichever_step_it_stops(tmp_path, loopback):
    """Generation or the judge: the run stops with its one line and run.json saying incomplete."""
    url = loopback()
    path = pipeline(tmp_path, url, filters=[{"type": "judge"}])
    full = factory_cli("run", str(path), "--quiet", "--set", "max_cost=1000", "--set", "filters=[]")
    assert full.returncode == 0, full.stderr
    _, generation = paid(tmp_path / "out")
    for cap in (generation / 2, generation + 0.5):  # inside generation, then inside the judge
        stopped = factory_cli("run", str(path), "--quiet", "--out", str(tmp_path / f"out-{cap:g}"),
                              "--set", f"max_cost={cap}")
        assert stopped.returncode == 1 and "max_cost" in stopped.stderr, stopped.stderr
        assert len(stopped.stderr.strip().splitlines()) == 1, stopped.stderr
        info = json.loads((tmp_path / f"out-{cap:g}" / "run.json").read_text())
        assert info["status"] == "incomplete" and "max_cost" in info["reason"], info
    filtered = factory_cli("filter", str(path), "--input", str(tmp_path / "out" / "data.jsonl"), "--quiet",
                           "--out", str(tmp_path / "filtered"), "--set", "max_cost=0.001")
    assert filtered.returncode == 1 and len(filtered.stderr.strip().splitlines()) == 1, filtered.stderr
    info = json.loads((tmp_path / "filtered" / "run.json").read_text())
    assert info["status"] == "incomplete" and "max_cost" in info["reason"], info
