"""Live progress: a refreshing line on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time

from factory.core import constants
from factory.engine.engine import RunStats


class Progress:
    def __init__(self, total_units: int, stats: RunStats, label: str = "generate", stream=None, enabled: bool = True):
        self.total = total_units
        self.stats = stats
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.live = None
        self._last_log = time.monotonic()
        self._began = time.perf_counter()
        self.started = False
        # More of the line from whoever has something to show (a batch teacher's batches).
        self.parts: list = []

    def line(self) -> str:
        s = self.stats
        elapsed = max(1e-9, time.perf_counter() - self._began)
        done = s.units_done
        rate = s.sent / elapsed
        tokens = (s.prompt_tokens + s.completion_tokens) / elapsed
        # Only this invocation's pace: units an earlier one finished took no time now.
        now_done = done - s.units_before
        eta = (self.total - done) / (now_done / elapsed) if now_done > 0 else float("nan")
        failures = s.teacher_errors + s.bad_responses
        parts = [
            f"{self.label} {done}/{self.total} ({100 * done / max(1, self.total):.0f}%)",
            f"{rate:.1f} req/s",
            f"{tokens:,.0f} tok/s",
            f"ETA {_duration(eta)}",
            f"failures {failures}",
        ]
        if s.replayed:
            parts.append(f"replayed {s.replayed}")
        if s.cost:
            parts.append(f"cost {s.cost:,.4f}")
        parts.extend(part() for part in self.parts)
        return " | ".join(parts)

    def event(self, text: str) -> None:
        """Something that happened (a batch submitted or ended): its own line, at once."""
        if not self.enabled:
            return
        if self.live is not None:
            self.live.console.print(f"[factory] {text}", markup=False, highlight=False)
        else:
            print(f"[factory] {text} | {self.line()}", file=self.stream, flush=True)

    def __rich__(self):
        from rich.text import Text

        return Text(self.line())

    def start(self) -> None:
        if not self.enabled:
            return
        self.started = True
        if self.stream.isatty():
            from rich.console import Console
            from rich.live import Live

            self.live = Live(self, console=Console(file=self.stream), refresh_per_second=4, transient=False)
            self.live.start()

    def update(self) -> None:
        if not self.enabled or self.live is not None:
            return  # rich redraws on its own timer
        now = time.monotonic()
        if now - self._last_log >= constants.PROGRESS_LOG_INTERVAL_S:
            self._last_log = now
            print(f"[factory] {self.line()}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
        elif self.started:
            print(f"[factory] {self.line()}", file=self.stream, flush=True)


def _duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
