"""Server-aware concurrency: keep a small queue waiting at the server, and no more.

vLLM and SGLang publish how many requests they are running and how many wait, on
their Prometheus `/metrics` page. When the teacher's server has one, a watcher reads
it a few times a second and sizes the in-flight window so that about `target`
requests wait at the server: enough that a freed slot is filled at once (the server
stays saturated), few enough that thousands of requests do not pile up there, each
holding a connection and a timeout, and going stale when the run stops.

Servers without such a page keep the adaptive window (limits.AdaptiveWindow), which
only learns from 429s, and factory says so once on the console: SGLang publishes its
gauges only when started with `--enable-metrics`, and a user should know why a local
server is driven blind.
"""

from __future__ import annotations

import asyncio
import math
import sys
from dataclasses import dataclass
from typing import Any

from factory.core import constants
from factory.teachers.limits import AdaptiveWindow

# Gauges per server kind: running, waiting, and cache use (0..1), newest name first.
GAUGES = {
    "vllm": ("vllm:num_requests_running", "vllm:num_requests_waiting",
             ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")),
    "sglang": ("sglang:num_running_reqs", "sglang:num_queue_reqs", ("sglang:token_usage",)),
}


@dataclass(frozen=True)
class ServerLoad:
    kind: str
    running: float
    waiting: float
    cache: float | None = None  # fraction of the KV cache in use, when published

    def __add__(self, other: "ServerLoad") -> "ServerLoad":
        caches = [c for c in (self.cache, other.cache) if c is not None]
        return ServerLoad(self.kind, self.running + other.running, self.waiting + other.waiting,
                          max(caches) if caches else None)


def parse_metrics(text: str) -> ServerLoad | None:
    """The load a Prometheus page reports, summed over engines and models; None when
    the page has none of the gauges we know (not a vLLM or SGLang server)."""
    from prometheus_client.parser import text_string_to_metric_families

    # Only our gauges: a vLLM page is mostly histograms, and parsing those is the slow part.
    wanted = {name for running, waiting, caches in GAUGES.values() for name in (running, waiting, *caches)}
    lines = [line for line in text.splitlines() if line.split("{", 1)[0].split(" ", 1)[0] in wanted]
    values: dict[str, list[float]] = {}
    try:
        for family in text_string_to_metric_families("\n".join(lines) + "\n"):
            for sample in family.samples:
                values.setdefault(sample.name, []).append(sample.value)
    except ValueError:
        return None
    for kind, (running, waiting, caches) in GAUGES.items():
        if running in values and waiting in values:
            cache = next((max(values[c]) for c in caches if c in values), None)
            return ServerLoad(kind, sum(values[running]), sum(values[waiting]), cache)
    return None


def metrics_url(base_url: str) -> str:
    """vLLM and SGLang serve /metrics at the root, beside /v1."""
    root = base_url.rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    return root + "/metrics"


def queue_target(running: float) -> int:
    """Requests to keep waiting at the server: a few, more for a server running many."""
    return max(constants.SERVER_QUEUE_MIN, math.ceil(running * constants.SERVER_QUEUE_FRACTION))


def next_window(window: int, in_flight: int, load: ServerLoad, floor: int, ceiling: int) -> int:
    """The window that brings the server's queue to its target.

    A server queues only when it is full, so while requests wait, what it runs is
    its capacity: the window becomes our share of that plus the target (the excess
    or shortfall of the queue taken out of, or added to, what we have in flight).
    With nothing waiting its capacity is unknown: if it is running all we send, we
    are the limit (the window is full) and its cache has room, double the window
    (TCP's slow start), since the next reading says at once if that was too much.
    """
    target = queue_target(load.running)
    if load.waiting > 0:
        wanted = in_flight - (load.waiting - target)
    elif (in_flight >= window - 1 and load.running >= constants.SERVER_RUNNING_ALL * in_flight
          and (load.cache is None or load.cache < constants.SERVER_CACHE_FULL)):
        wanted = 2 * window
    else:
        wanted = window
    return int(min(ceiling, max(floor, wanted)))


class LoadWatcher:
    """Polls the servers' metrics and steers `window`; run() until cancelled."""

    def __init__(self, urls: list[str], window: AdaptiveWindow, headers: dict[str, str]):
        self.urls = urls
        self.window = window
        self.headers = headers
        self.kind = ""
        self.polls = 0
        self.failed_polls = 0
        self.most_waiting = 0.0
        self.smallest = self.largest = window.size
        self._session = None

    async def detect(self) -> bool:
        """Whether every server publishes a load we can read (one quick request each)."""
        import aiohttp

        self._session = aiohttp.ClientSession(headers=self.headers, timeout=aiohttp.ClientTimeout(
            total=constants.SERVER_METRICS_TIMEOUT_S))
        self.unreachable = False
        load = await self._read()
        if load is None:
            await self.close()
            return False
        self.kind = load.kind
        return True

    async def _read(self) -> ServerLoad | None:
        import aiohttp

        total = None
        for url in self.urls:
            try:
                async with self._session.get(url) as response:
                    if response.status != 200:
                        return None
                    load = parse_metrics(await response.text())
            except aiohttp.ClientConnectorError:
                self.unreachable = True  # no server at all: the outage rule speaks, not this
                return None
            except (aiohttp.ClientError, asyncio.TimeoutError, UnicodeDecodeError):
                return None
            if load is None:
                return None
            total = load if total is None else total + load
        return total

    async def run(self) -> None:
        window = self.window
        window.steered_by = f"{self.kind} /metrics"
        failures = 0
        while True:
            await asyncio.sleep(constants.SERVER_METRICS_POLL_S)
            load = await self._read()
            if load is None:
                # A server restarting, or one replica down: hold the window for a while,
                # then hand it back to the adaptive rule.
                self.failed_polls += 1
                failures += 1
                if failures >= constants.SERVER_METRICS_GIVE_UP and window.steered_by:
                    window.steered_by = None
                continue
            failures = 0
            window.steered_by = f"{self.kind} /metrics"
            self.polls += 1
            self.most_waiting = max(self.most_waiting, load.waiting)
            size = next_window(window.size, window.in_flight, load, window.floor, window.ceiling)
            window.resize(size)
            self.smallest, self.largest = min(self.smallest, size), max(self.largest, size)

    def describe(self) -> dict[str, Any]:
        return {"mode": f"server metrics ({self.kind})", "polls": self.polls, "failed_polls": self.failed_polls,
                "window_range": [self.smallest, self.largest], "most_waiting_at_server": self.most_waiting}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


_told: set[str] = set()


def tell_no_metrics(urls: list[str]) -> None:
    """One console line per server (per process) that has no usable /metrics page."""
    new = [u for u in urls if u not in _told]
    if not new:
        return
    _told.update(new)
    print(f"factory: no usable /metrics at {', '.join(new)}: the in-flight window adapts to 429s instead of "
          "the server's queue (SGLang serves its metrics when started with --enable-metrics; "
          "teacher.server_metrics: false skips this check)", file=sys.stderr, flush=True)


def server_urls(teacher: Any) -> list[str]:
    """The base URLs of an HTTP teacher (one server, or a pool's replicas); [] otherwise."""
    endpoints = getattr(teacher, "endpoints", None)
    if endpoints is not None:
        return [e.teacher.base_url for e in endpoints]
    base_url = getattr(teacher, "base_url", None)
    return [base_url] if isinstance(base_url, str) and base_url else []
