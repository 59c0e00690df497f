"""The loopback teacher in a process of its own, as a real server would be."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def loopback_process(*args: str) -> Iterator[str]:
    """Start `factory loopback ARGS` on a free port; yields its base URL; kills it after."""
    proc = subprocess.Popen([sys.executable, "-m", "factory", "loopback", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        if "listening on" not in line:
            raise RuntimeError(f"loopback teacher did not start: {line!r}")
        yield line.rsplit(" ", 1)[1].strip()
    finally:
        proc.kill()
        proc.wait()


def server_stats(base_url: str) -> dict:
    """What the loopback teacher at `base_url` has seen (GET /stats)."""
    with urllib.request.urlopen(base_url.rsplit("/v1", 1)[0] + "/stats", timeout=10) as r:
        return json.load(r)
