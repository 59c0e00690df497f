"""Blocking work called from inside a running event loop (a Jupyter notebook, an async app).

The run and the judge drive their own event loop, which cannot start inside a loop that
is already running. There the work runs on a worker thread with a loop of its own, and
the caller waits for it; elsewhere it runs right here. Python delivers signals to the
main thread only, so while the main thread waits, it handles SIGINT and SIGTERM for the
work through its `Stop`, exactly as a run in the main thread does (stopping.py): the
first drains, a second stops at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable
from typing import TypeVar

from factory.core.stopping import Stop, handling_signals

T = TypeVar("T")


def in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def call_blocking(work: Callable[[], T], stop: Stop | None = None) -> T:
    """`work()`, on a worker thread when this thread runs an event loop; returns its result
    or raises its exception. `stop`: the work's, which signals to this thread request."""
    if not in_running_loop():
        return work()
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="factory-run")
    future = pool.submit(work)
    try:
        with handling_signals(stop) if stop is not None else contextlib.nullcontext():
            return future.result()
    finally:
        # After a second signal (StopNow) the caller leaves at once; the work, told to
        # stop, ends on its own with what it stored.
        pool.shutdown(wait=False)
