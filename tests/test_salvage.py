"""`factory salvage` on a store that is not damaged at all, and on a folder a run holds:
salvage must copy every table the store has (the replay of a rerun depends on all of
them), and must not touch a folder in use. Real HTTP, real SQLite, real processes.
(A damaged store's salvage is in test_store.py.)"""

from __future__ import annotations

import json
import sqlite3

from tests.helpers.pipelines import slow_pipeline, write_pipeline
from tests.helpers.processes import assert_user_error, factory_cli, running, wait_for_rows
from tests.helpers.run_store import stored

# The judge stand-in fails the even samples and passes the odd ones: a funnel with drops.
RUBRIC = "Grade sample={{ metadata.sample_index }}: {{ answer }}"
SCRIPT = [(r"sample=\d*[02468]:", '{"rationale": "off", "score": 1}'),
          (r"sample=", '{"rationale": "fine", "score": 9}')]


def received(teacher) -> int:
    return sum(teacher.received.values())


def tables(db_path) -> dict[str, list[tuple]]:
    """Every row of every table of a store, sorted, read through SQLite."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        names = [n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                                          " AND name NOT LIKE 'sqlite_%'")]
        return {name: sorted(db.execute(f"SELECT * FROM {name}"), key=repr) for name in names}
    finally:
        db.close()


def judged_run(tmp_path, loopback):
    """A finished run with exact_dedup and a judge that drops half: (pipeline, out, data.jsonl, rejected.jsonl)."""
    url = loopback(replies=SCRIPT)
    (tmp_path / "prompts" / "judge").mkdir(parents=True)
    (tmp_path / "prompts" / "judge" / "grade.j2").write_text(RUBRIC)
    path = write_pipeline(tmp_path, url, generate__count=20, generate__pairs_per_request=1,
                          filters=[{"type": "exact_dedup"}, {"type": "judge", "min_score": 5, "rubric": "judge/grade.j2"}])
    out = tmp_path / "out"
    first = factory_cli("run", str(path), "--quiet")
    assert first.returncode == 0, first.stderr
    data = (out / "data.jsonl").read_text()
    rejected = (out / "rejected.jsonl").read_text()
    assert 0 < len(data.splitlines()) < 20 and rejected
    return path, out, data, rejected


def test_salvage_of_a_store_with_verdicts_copies_every_table_and_a_rerun_sends_nothing(tmp_path, loopback):
    path, out, data, rejected = judged_run(tmp_path, loopback)
    teacher = loopback.teacher
    sent = received(teacher)
    before = tables(out / "run.sqlite")
    assert before["verdicts"] and before["units"] and before["invocations"]

    salvaged = factory_cli("salvage", str(out))
    assert salvaged.returncode == 0, salvaged.stderr
    after = tables(out / "run.sqlite")
    assert set(after) == set(before)
    for name, rows in before.items():
        if name == "invocations":  # the salvage adds its own
            assert [row for row in after[name] if row[1] != "salvage"] == rows
        else:
            assert after[name] == rows, name

    rerun = factory_cli("run", str(path), "--quiet")
    assert rerun.returncode == 0, rerun.stderr
    assert received(teacher) == sent
    assert (out / "data.jsonl").read_text() == data
    assert (out / "rejected.jsonl").read_text() == rejected
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "complete"
    assert info["usage"]["requests"] == sent  # the salvaged invocations still count what was paid


def test_verdicts_on_a_damaged_page_are_computed_again_from_the_journal(tmp_path, loopback):
    """The stages' markers survive but their verdicts do not: replaying the markers would
    keep nothing, so salvage drops them and the rerun runs the filters again, the judge
    answering from the journal."""
    path, out, data, rejected = judged_run(tmp_path, loopback)
    sent = received(loopback.teacher)
    db_path = out / "run.sqlite"
    db = sqlite3.connect(str(db_path))
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'verdicts'").fetchone()
    finally:
        db.close()
    with open(db_path, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xff" * page_size)

    salvaged = factory_cli("salvage", str(out))
    assert salvaged.returncode == 0, salvaged.stderr
    assert "the filters run again" in salvaged.stdout, salvaged.stdout
    rerun = factory_cli("run", str(path), "--quiet")
    assert rerun.returncode == 0, rerun.stderr
    assert received(loopback.teacher) == sent
    assert (out / "data.jsonl").read_text() == data
    assert (out / "rejected.jsonl").read_text() == rejected
    info = json.loads((out / "run.json").read_text())
    assert [stage["verdicts"] for stage in info["funnel"]["stages"] if stage["stage"] != "generate"] == [
        "computed", "computed"]


def test_salvage_refuses_a_folder_in_use_and_leaves_it_untouched(tmp_path, loopback):
    count = 30
    path = slow_pipeline(tmp_path, loopback, count, slots=2, latency=0.2)
    teacher = loopback.teacher
    out = tmp_path / "out"
    with running(path) as proc:
        wait_for_rows(out, 2, proc)
        salvaged = factory_cli("salvage", str(out))
        still_running = proc.poll() is None
        listing = sorted(p.name for p in out.iterdir())
        _, err = proc.communicate(timeout=120)
    assert still_running, "the run ended before salvage was refused; make it longer"
    assert_user_error(salvaged.returncode, salvaged.stderr, [str(out), "in use", f"pid {proc.pid}"])
    assert "run.sqlite" in listing and not [name for name in listing if ".damaged-" in name], listing
    assert proc.returncode == 0, err
    assert stored(out) == count == received(teacher)  # the run finished into its own store

    rerun = factory_cli("run", str(path), "--quiet")
    assert rerun.returncode == 0, rerun.stderr
    assert received(teacher) == count  # nothing sent again
