"""Why a run stops early, in one place: a signal, a teacher outage, a dead launched server.

The first SIGINT or SIGTERM starts a drain: no new unit or request starts, requests in
flight finish and are stored (for at most the grace period), then the run ends with
128 + the signal's number. A second signal stops at once. A teacher outage and a
launched server's death use the same drain through `Stop.request`, from any thread,
so they work where SIGINT never arrives (nohup, cron, CI runners, systemd).
"""

from __future__ import annotations

import asyncio
import signal
import threading
from contextlib import contextmanager
from typing import Iterator

from factory.core.errors import FactoryError

# How a run ended early: the status run.json records, and the exit code.
INCOMPLETE = 3  # the teacher became unreachable (or its server died): rerun to finish


class RunStopping(FactoryError):
    """Raised inside the engine once a stop is requested: the unit stays pending."""


class StopNow(BaseException):
    """A second signal: leave at once (what completed is already stored)."""


class Stop:
    def __init__(self, grace: float):
        self.grace = grace
        self.kind: str | None = None  # "signal", "outage", "server"
        self.exit_code = 0
        self.reason = ""  # one line: what happened, for the final message
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._polling = 0

    @property
    def requested(self) -> bool:
        return self.kind is not None

    @property
    def status(self) -> str:
        return "stopped" if self.kind == "signal" else "incomplete"

    def request(self, kind: str, exit_code: int, reason: str, grace: float | None = None) -> bool:
        """Ask the run to drain and stop; the first request wins. Safe from any thread.
        `grace` shortens the drain for this stop (0: requests in flight cannot finish)."""
        with self._lock:
            if self.kind is not None:
                return False
            self.kind, self.exit_code, self.reason = kind, exit_code, reason
            if grace is not None:
                self.grace = min(self.grace, grace)
            loop, event = self._loop, self._event
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)
        return True

    @contextmanager
    def bound(self) -> Iterator[None]:
        """While an event loop runs the engine: stops wake its waiters instead of raising."""
        loop = asyncio.get_running_loop()
        with self._lock:
            self._loop, self._event = loop, asyncio.Event()
            if self.kind is not None:
                self._event.set()
        try:
            yield
        finally:
            with self._lock:
                self._loop = self._event = None

    @contextmanager
    def polled(self) -> Iterator[None]:
        """While this thread polls `requested` between waits (the driver waiting on its
        shards): a first signal asks it to stop there instead of raising where it waits."""
        with self._lock:
            self._polling += 1
        try:
            yield
        finally:
            with self._lock:
                self._polling -= 1

    @property
    def engine_running(self) -> bool:
        return self._loop is not None or self._polling > 0

    def check(self) -> None:
        if self.kind is not None:
            raise RunStopping(self.reason)

    async def sleep(self, seconds: float) -> bool:
        """Sleep, or less when a stop is requested; True when one is."""
        if self._event is None:
            await asyncio.sleep(seconds)
            return self.requested
        try:
            await asyncio.wait_for(self._event.wait(), timeout=max(0.0, seconds))
        except asyncio.TimeoutError:
            pass
        return self.requested

    async def wait(self) -> None:
        if self._event is not None:
            await self._event.wait()


class Stopped(FactoryError):
    """The run ended before it was complete; `exit_code` says how (3, 130, 143)."""

    def __init__(self, message: str, exit_code: int, status: str):
        super().__init__(message)
        self.exit_code = exit_code
        self.status = status


@contextmanager
def handling_signals(stop: Stop) -> Iterator[None]:
    """SIGINT/SIGTERM drain the run through `stop`; a second one stops it at once."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach only the main thread; a library caller elsewhere keeps its own
        return

    def handler(signum, frame) -> None:
        name = signal.Signals(signum).name
        if stop.requested or not stop.engine_running:
            # A second signal, or one between engine phases (filters, export), where
            # nothing is in flight to drain: stop here.
            stop.request("signal", 128 + signum, f"{name} received")
            raise StopNow(f"{name} received")
        stop.request("signal", 128 + signum, f"{name} received")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
