"""Blocking work called from inside a running event loop (a Jupyter notebook, an async app).

The run and the judge drive their own event loop with `asyncio.run`, which cannot start
inside a loop that is already running. There the work runs on a worker thread with a
loop of its own, and the caller waits for it; elsewhere it runs right here. A worker
thread gets no signals (Python delivers them to the main thread only), so a Ctrl-C
while waiting is passed on through `on_interrupt`, which asks the work to drain.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def call_blocking(work: Callable[[], T], on_interrupt: Callable[[], None] | None = None) -> T:
    """`work()`, on a worker thread when this thread runs an event loop; returns its result
    or raises its exception. A KeyboardInterrupt while waiting calls `on_interrupt` and
    keeps waiting for the work to finish draining (a second one leaves at once)."""
    if not in_running_loop():
        return work()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="factory-run") as pool:
        future = pool.submit(work)
        try:
            return future.result()
        except KeyboardInterrupt:
            if on_interrupt is None:
                raise
            on_interrupt()
            return future.result()
