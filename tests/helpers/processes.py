"""The real `factory` command in a child process: run to the end, or started, watched and killed."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tests.helpers.checkout import ROOT
from tests.helpers.run_store import stored


def factory_cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real `factory` command in a child process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "factory", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=ROOT)


def assert_user_error(code: int, err: str, words: list[str]) -> None:
    """A user's mistake: exit 2 and one line, naming everything in `words`."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("factory: error: "), err
    for word in words:
        assert word in lines[0], lines[0]


def start_factory(*args: str) -> subprocess.Popen:
    """`factory ARGS --quiet` in a child process, running on, its output piped."""
    return subprocess.Popen([sys.executable, "-m", "factory", *args, "--quiet"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def start_run(path: Path, *extra: str) -> subprocess.Popen:
    """`factory run PATH EXTRA --quiet` in a child process, running on, its output piped."""
    return start_factory("run", str(path), *extra)


@contextmanager
def running(path: Path, *extra: str) -> Iterator[subprocess.Popen]:
    """`start_run` for the with-block; killed at its end if it still runs, so a test that
    failed half-way leaves no run behind."""
    proc = start_run(path, *extra)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def wait_for_rows(out_dir: Path, rows: int, proc: subprocess.Popen, limit: float = 60) -> None:
    """Until the run in `proc` has stored `rows` answers in `out_dir`."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run finished before it could be killed; make it longer"
        if (out_dir / "run.sqlite").exists():
            try:
                if stored(out_dir) >= rows:
                    return
            except sqlite3.OperationalError:
                pass  # the table is not there yet
        time.sleep(0.01)
    raise AssertionError("the store never reached the expected size")


def kill_after(path: Path, out_dir: Path, rows: int) -> None:
    """Run the pipeline at `path` in its own process and SIGKILL it once `rows` answers are stored."""
    proc = start_run(path)
    wait_for_rows(out_dir, rows, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
