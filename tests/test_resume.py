"""Killed with SIGKILL part-way, then rerun: the same dataset, and nothing journaled is sent twice."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time

from tests.conftest import ROOT, factory_cli, loopback_process, server_stats, write_pipeline


def journaled(path) -> set[str]:
    db = sqlite3.connect(str(path))
    try:
        return {json.loads(v)["sent"] for (v,) in db.execute("SELECT value FROM completions")}
    finally:
        db.close()


def wait_for_rows(path, rows: int, proc, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run finished before it could be killed; make it longer"
        if path.exists():
            try:
                db = sqlite3.connect(str(path))
                count = db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]
                db.close()
                if count >= rows:
                    return
            except sqlite3.OperationalError:
                pass  # the table is not there yet
        time.sleep(0.01)
    raise AssertionError("journal never reached the expected size")


def kill_after(path, journal, rows: int) -> None:
    """Run the pipeline at `path` in its own process and SIGKILL it once `rows` requests are journaled."""
    proc = subprocess.Popen([sys.executable, "-m", "factory", "run", str(path), "--quiet"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_rows(journal, rows, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sigkill_then_rerun_matches_an_uninterrupted_run(tmp_path):
    count = 120
    with loopback_process("--slots", "4", "--latency-median", "0.08", "--latency-sigma", "0.3") as url:
        path = write_pipeline(tmp_path / "killed", url, generate__count=count, generate__pairs_per_request=1)
        journal = tmp_path / "killed" / "out" / "journal.sqlite"
        kill_after(path, journal, 40)
        before = server_stats(url)["received"]
        done_before_kill = journaled(journal)
        assert 40 <= len(done_before_kill) < count

        rerun = factory_cli("run", str(path), "--quiet")
        assert rerun.returncode == 0, rerun.stderr
        after = server_stats(url)["received"]
        resent = [k for k in done_before_kill if after.get(k, 0) > before.get(k, 0)]
        assert resent == [], f"{len(resent)} journaled requests were sent again"
        info = json.loads((tmp_path / "killed" / "out" / "run.json").read_text())
        assert info["usage"]["replayed_from_journal"] >= len(done_before_kill)
        assert info["usage"]["requests"] + info["usage"]["replayed_from_journal"] == count

        whole = write_pipeline(tmp_path / "whole", url, generate__count=count, generate__pairs_per_request=1)
        assert factory_cli("run", str(whole), "--quiet").returncode == 0

    resumed = (tmp_path / "killed" / "out" / "data.jsonl").read_text()
    uninterrupted = (tmp_path / "whole" / "out" / "data.jsonl").read_text()
    assert resumed == uninterrupted and len(resumed.splitlines()) == count


def test_a_finished_run_rerun_sends_nothing(tmp_path, loopback):
    url = loopback()
    path = write_pipeline(tmp_path, url, generate__count=10)
    assert factory_cli("run", str(path), "--quiet").returncode == 0
    sent = sum(loopback.teacher.received.values())
    first = (tmp_path / "out" / "data.jsonl").read_text()
    assert factory_cli("run", str(path), "--quiet").returncode == 0
    assert sum(loopback.teacher.received.values()) == sent
    assert (tmp_path / "out" / "data.jsonl").read_text() == first


def test_asking_for_more_sends_only_the_new_requests(tmp_path, loopback):
    url = loopback()
    path = write_pipeline(tmp_path, url, generate__count=10, generate__pairs_per_request=1)
    assert factory_cli("run", str(path), "--quiet").returncode == 0
    assert factory_cli("run", str(path), "--quiet", "--set", "generate.count=15").returncode == 0
    assert sum(loopback.teacher.received.values()) == 15
    assert len((tmp_path / "out" / "data.jsonl").read_text().splitlines()) == 15
