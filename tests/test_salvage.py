"""`factory salvage` on a folder a run holds: refused, and nothing touched. Real HTTP,
real SQLite, real processes. (A damaged store's salvage is in test_store.py.)"""

from __future__ import annotations

from tests.helpers.pipelines import slow_pipeline
from tests.helpers.processes import assert_user_error, factory_cli, running, wait_for_rows
from tests.helpers.run_store import stored


def received(teacher) -> int:
    return sum(teacher.received.values())


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
