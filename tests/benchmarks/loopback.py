"""Start and query a loopback teacher in its own process (as a real server would be)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from contextlib import contextmanager


@contextmanager
def loopback_process(*args: str):
    proc = subprocess.Popen(
        [sys.executable, "-m", "factory", "loopback", "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        line = proc.stdout.readline()
        if "listening on" not in line:
            raise RuntimeError(f"loopback teacher did not start: {line!r}")
        yield line.rsplit(" ", 1)[1].strip()
    finally:
        proc.kill()
        proc.wait()


def stats(base_url: str) -> dict:
    root = base_url.rsplit("/v1", 1)[0]
    with urllib.request.urlopen(f"{root}/stats", timeout=10) as r:
        return json.load(r)
