"""The outage clock behind `teacher.outage_timeout`: since when every attempt to reach
the teacher has failed, and whether that has lasted long enough to stop the run as
incomplete. The online engine keeps one per teacher; batch mode one for the provider's
batch API."""

from __future__ import annotations

import time


class OutageClock:
    def __init__(self, timeout: float):
        self.timeout = timeout
        self.last_success: float | None = None
        self.failing_since: float | None = None  # start of the oldest attempt failed since the last success
        self.last_error = ""
        self.announced = False  # this outage has been reported (cleared by the next success)

    def succeeded(self) -> None:
        self.last_success = time.monotonic()
        self.failing_since = None
        self.announced = False

    def failed(self, error: str, began: float | None = None) -> None:
        """An attempt that `began` then (default: now) failed with `error`. An attempt
        begun before the last success counts from that success."""
        began = time.monotonic() if began is None else began
        start = max(began, self.last_success or began)
        self.failing_since = start if self.failing_since is None else min(self.failing_since, start)
        self.last_error = error

    def down_for(self) -> float:
        return 0.0 if self.failing_since is None else time.monotonic() - self.failing_since

    def outage(self) -> bool:
        return self.failing_since is not None and self.down_for() >= self.timeout

    def since(self) -> str:
        """The wall-clock time the failing began, HH:MM:SS."""
        wall = time.time() - self.down_for()
        return time.strftime("%H:%M:%S", time.localtime(wall))
