"""A teacher with its engine: started, tied to the run store, and closed again, in one place.

Generation and every model-calling filter (the judge) open their teacher this way,
so each gets the same in-flight window, rate limits, store and failure handling.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager, suppress
from typing import AsyncIterator

from factory.core import constants
from factory.config.backends import BACKENDS
from factory.config.pipeline import TeacherConfig
from factory.core.cost import Budget
from factory.engine.engine import Engine, RunStats
from factory.teachers.limits import AdaptiveWindow, RateLimiter
from factory.core.stopping import Stop
from factory.store.run_store import RunStore
from factory.core.structured_modes import legacy_setting_key, setting_key
from factory.teachers.request_bounds import capped_window


@asynccontextmanager
async def open_engine(config: TeacherConfig, store: RunStore, stats: RunStats, stop: Stop,
                      budget: Budget | None = None) -> AsyncIterator[Engine]:
    """Start the teacher and yield its engine; every engine of a run shares the run's
    `store`, `stop` and `budget` (max_cost)."""
    from factory.teachers import make_teacher

    # Rate-limit headers come from hosted APIs: one source of them is mirrored, and with a
    # key (a paid API, most likely) the first request goes alone to read them.
    # A batch API queues requests itself: no per-minute buckets, no probe, no /metrics.
    online = config.mode == "online"
    single_http = online and BACKENDS[config.backend].http and not isinstance(config.base_url, list)
    limiter = RateLimiter(config.rpm if online else None, config.tpm if online else None, learn=single_http,
                          probe=single_http and bool(config.api_key_env))

    def on_response(status: int, headers) -> None:
        if status == 429:
            window.on_throttle()
        limiter.observe(headers, status)

    # The window is sized by what the teacher can take; the hook reaches it once it exists.
    teacher = make_teacher(config, on_response=on_response, store=store, stop=stop)
    size, capped = capped_window(config, config.max_concurrency or teacher.default_concurrency)
    window = AdaptiveWindow(size)
    window.capped = capped  # a socket per request in flight: past the open-file limit, EMFILE
    await teacher.start()
    # Found by an earlier invocation: no probe, same keys.
    refused = bool(store.setting(legacy_setting_key(teacher.model)))
    if teacher.modes is not None:
        teacher.modes.resume(store.setting(setting_key(teacher.model)), json_schema_refused=refused)
    elif refused and hasattr(teacher, "prefer_prompt"):  # a backend with two ways only (anthropic)
        teacher.prefer_prompt()
    watcher = watching = None
    try:
        watcher = await _watch_server_load(config, teacher, window)
        if watcher is not None:
            watching = asyncio.create_task(watcher.run())
            limiter.answered()  # a server publishing its load is not rate-limiting us: no probe
        engine = Engine(teacher, store, window, limiter, stats, budget, stop)
        engine.watcher = watcher
        yield engine
    finally:
        if watching is not None:
            watching.cancel()
            with suppress(asyncio.CancelledError):
                await watching
        if watcher is not None:
            await watcher.close()
        await teacher.close()


async def _watch_server_load(config: TeacherConfig, teacher, window: AdaptiveWindow):
    """A watcher steering `window` by the server's /metrics, when the server has them."""
    from factory.teachers.openai_teacher import redact_url
    from factory.teachers.server_load import LoadWatcher, metrics_url, server_urls, tell_no_metrics

    urls = server_urls(teacher) if config.server_metrics and config.mode == "online" else []
    if not urls:
        return None
    keys = teacher.secrets()
    headers = {"Authorization": f"Bearer {keys[0]}"} if keys else {}
    watcher = LoadWatcher([metrics_url(u) for u in urls], window, headers)
    if not await watcher.detect():
        if not watcher.unreachable:
            tell_no_metrics([redact_url(metrics_url(u)) for u in urls])
        return None
    if config.max_concurrency is None:  # the server's queue now bounds the window, not a guess
        window.ceiling = capped_window(config, constants.SERVER_METRICS_MAX_CONCURRENCY)[0]
    # Start small and double: a wide first window would pile requests up at the server.
    window.resize(constants.SERVER_METRICS_FIRST_WINDOW)
    return watcher
