"""How many requests may be in flight, and how fast they may start.

`AdaptiveWindow` is the in-flight window: a semaphore whose size halves when the
teacher answers 429 (at most once per cooldown, so one burst counts once) and grows
back by one per window's worth of successes (AIMD, as TCP does), unless a watcher of
the server's own load steers it (teachers/server_load.py). `RateLimiter` adds
requests-per-minute and tokens-per-minute buckets for paid APIs.
"""

from __future__ import annotations

import asyncio
import collections
import re
import statistics
import time
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from factory.core import constants


class AdaptiveWindow:
    def __init__(self, limit: int, floor: int = constants.MIN_CONCURRENCY):
        self.ceiling = limit
        self.floor = min(floor, limit)
        self.limit = float(limit)
        self.in_flight = 0
        self.throttled = 0
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._last_cut = 0.0
        # Set while a LoadWatcher sizes the window from the server's metrics.
        self.steered_by: str | None = None
        # Why the window is smaller than asked for (the open-file limit), for run.json.
        self.capped: str | None = None

    @property
    def size(self) -> int:
        return max(self.floor, int(self.limit))

    async def acquire(self) -> None:
        if self.in_flight < self.size and not self._waiters:
            self.in_flight += 1
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut  # the releaser counted us in before waking us
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()
            elif fut in self._waiters:  # a wake may have passed over it (cancelled) already
                self._waiters.remove(fut)
            raise

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def resize(self, size: int) -> None:
        self.limit = float(min(self.ceiling, max(self.floor, size)))
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.size:
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_flight += 1
                fut.set_result(None)

    def on_success(self) -> None:
        if self.limit < self.ceiling and not self.steered_by:
            self.limit = min(self.ceiling, self.limit + 1.0 / self.limit)

    def on_throttle(self) -> None:
        self.throttled += 1
        now = time.monotonic()
        if now - self._last_cut >= constants.THROTTLE_COOLDOWN_S:
            self._last_cut = now
            self.limit = max(float(self.floor), self.limit / 2)

    def describe(self) -> dict:
        out = {"mode": self.steered_by or "adaptive (429s halve, successes grow)", "ceiling": self.ceiling,
               "final": self.size, "throttled": self.throttled}
        if self.capped:
            out["capped"] = self.capped
        return out


class Bucket:
    """A token bucket: `capacity` at most, refilled at `rate` per second."""

    def __init__(self, capacity: float, rate: float):
        self.capacity, self.rate = capacity, rate
        self.level = capacity
        self._stamp = time.monotonic()

    def refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self._stamp) * self.rate)
        self._stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` is there (a request larger than the bucket waits for a full one)."""
        self.refill()
        short = min(amount, self.capacity) - self.level
        return short / self.rate if short > 0 else 0.0

    def take(self, amount: float) -> None:
        self.level -= min(amount, self.capacity)


class RateLimiter:
    """Requests and tokens per minute, from the pipeline and from the provider's headers.

    The pipeline's `rpm`/`tpm` are buckets holding one second's worth: providers
    enforce per-minute limits in slices (OpenAI: "60,000 rpm may be enforced as 1,000
    requests per second"), so a full minute's burst at the start would be refused.

    A provider that sends `x-ratelimit-*` headers (OpenAI, Groq, Together, and
    others) says its own bucket: its size (limit), what is left (remaining) and when
    it is full again (reset). We mirror that bucket, so a run spends what the provider
    allows as fast as it allows it, and waits for the refill once it is spent, instead
    of learning the limit from 429s. The refill rate is (limit - remaining) / reset,
    which holds whatever the limit's period (OpenAI's are per minute, Groq's request
    limit is per day). Only one source is mirrored: several providers side by side
    each have their own buckets, and their 429s move requests to the others.

    Anthropic says the same in `anthropic-ratelimit-{requests,tokens}-{limit,remaining,
    reset}`, its reset an RFC 3339 time: both spellings are read by one rule (HEADERS).

    A 429 with `Retry-After` (or OpenAI's `retry-after-ms`) holds every request for the
    whole of that time, not only the one refused: nothing is sent before it passes.

    With `probe`, the first request goes alone and the rest wait for its answer, so
    the provider's headers are known before the window opens (for keyed APIs: a
    burst of hundreds of requests into an unknown limit is a burst of 429s).
    """

    def __init__(self, rpm: int | None, tpm: int | None, learn: bool = True, probe: bool = False):
        self.rpm, self.tpm = rpm, tpm
        self.learn = learn
        self.probe = probe and learn
        self._probe_sent = False
        self._first_answer: asyncio.Event | None = None
        self.configured = {kind: Bucket(max(1.0, limit / 60), limit / 60)
                           for kind, limit in (("requests", rpm), ("tokens", tpm)) if limit}
        self.provider: dict[str, Bucket] = {}
        self._rates: dict[str, collections.deque] = {}
        self.waited_s = 0.0  # time spent waiting for the provider's buckets to refill
        self.hold_until = 0.0  # monotonic time before which nothing is sent (Retry-After)
        self.held_s = 0.0
        self._lock = asyncio.Lock()

    @property
    def active(self) -> bool:
        return bool(self.configured or self.provider)

    @property
    def counts_tokens(self) -> bool:
        return "tokens" in self.configured or "tokens" in self.provider

    async def acquire(self, tokens: int) -> None:
        """Wait until one request and `tokens` (an estimate) may be spent, then spend them."""
        if self.probe:
            if self._first_answer is None:
                self._first_answer = asyncio.Event()
            if self._probe_sent:
                await self._first_answer.wait()
            self._probe_sent = True
        await self.held()
        if not self.active:
            return
        need = {"requests": 1, "tokens": tokens}
        async with self._lock:  # first come, first served
            while True:
                waits = [(b.wait_for(need[k]), b in self.provider.values())
                         for buckets in (self.configured, self.provider) for k, b in buckets.items()]
                wait, provider = max(waits, default=(0.0, False))
                if wait <= 0:
                    break
                if provider:
                    self.waited_s += wait
                await asyncio.sleep(wait)
            for buckets in (self.configured, self.provider):
                for kind, bucket in buckets.items():
                    bucket.take(need[kind])

    def answered(self) -> None:
        """A request came back (with an answer or not): the probe, if any, is over."""
        if self.probe:
            self.probe = False
            if self._first_answer is not None:
                self._first_answer.set()

    def settle(self, estimated: int, actual: int) -> None:
        """Give back (or take) the difference once a request's real usage is known."""
        for buckets in (self.configured, self.provider):
            bucket = buckets.get("tokens")
            if bucket is not None:
                bucket.level = min(bucket.capacity, bucket.level + min(estimated, bucket.capacity) - actual)

    async def held(self) -> None:
        """Wait until no Retry-After holds the provider (called again just before sending:
        a request that passed the buckets may have waited for the window meanwhile)."""
        while True:
            wait = self.hold_until - time.monotonic()
            if wait <= 0:
                return
            self.held_s += wait
            await asyncio.sleep(wait)

    def observe(self, headers, status: int = 200) -> None:
        """Learn from one response's rate-limit headers; absent or odd ones are ignored."""
        if not self.learn:
            return
        if status == 429:
            pause = retry_after(headers)
            if pause:
                self.hold_until = max(self.hold_until, time.monotonic() + min(pause, constants.RETRY_AFTER_MAX_S))
        for kind in ("requests", "tokens"):
            limit = remaining = reset = None
            for names, read_reset in HEADERS:
                limit = _number(headers.get(names.format(kind=kind, field="limit")))
                remaining = _number(headers.get(names.format(kind=kind, field="remaining")))
                reset = read_reset(headers.get(names.format(kind=kind, field="reset")))
                if limit:
                    break
            if not limit or remaining is None or reset is None:
                continue
            if reset > 0 and limit > remaining:
                recent = self._rates.setdefault(kind, collections.deque(maxlen=9))
                recent.append((limit - remaining) / reset)
            if kind not in self._rates:
                continue  # full so far: no rate to refill at yet
            # Reset strings are rounded (to the ms, and remaining to a whole number), the
            # client's own retries are never seen here, and the two clocks differ: keep a
            # small margin under what the provider says, rather than meet its 429s.
            rate = statistics.median(self._rates[kind]) * constants.PROVIDER_RATE_MARGIN
            bucket = self.provider.get(kind)
            if bucket is None:
                bucket = self.provider[kind] = Bucket(limit, rate)
            bucket.capacity, bucket.rate = limit, rate
            bucket.refill()
            # What the provider saw left, less what we sent since (already taken from ours).
            bucket.level = min(bucket.level, remaining * constants.PROVIDER_RATE_MARGIN)

    def describe(self) -> dict:
        out: dict = {"rpm": self.rpm, "tpm": self.tpm}
        if self.provider:
            out["from_headers"] = {kind: {"limit": b.capacity, "per_minute": round(b.rate * 60, 1)}
                                   for kind, b in self.provider.items()}
            out["waited_for_refill_s"] = round(self.waited_s, 3)
        if self.held_s:
            out["held_for_retry_after_s"] = round(self.held_s, 3)
        return out


def _number(value) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def seconds_until(stamp: str | None) -> float | None:
    """Seconds from now to an RFC 3339 time (Anthropic's reset headers); None if unreadable."""
    if not stamp:
        return None
    try:
        when = datetime.fromisoformat(stamp.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def retry_after(headers) -> float | None:
    """Seconds a 429 asks to wait: `retry-after-ms` (OpenAI), else `Retry-After` in
    seconds or as an HTTP date; None when absent or unreadable."""
    ms = _number(headers.get("retry-after-ms"))
    if ms is not None and ms >= 0:
        return ms / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _number(value)
    if seconds is not None:
        return max(0.0, seconds)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str | None) -> float | None:
    """Seconds in a reset header: "1s", "6m0s", "20ms", "1h2m3.5s", or a bare number of seconds."""
    if text is None:
        return None
    text = text.strip()
    bare = _number(text)
    if bare is not None:
        return bare
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _SECONDS[u] for n, u in parts)


# Rate-limit header spellings, with how each writes its reset: OpenAI's (and Groq's,
# Together's ...) `x-ratelimit-limit-requests` with a duration ("6m0s"), Anthropic's
# `anthropic-ratelimit-requests-limit` with an RFC 3339 time. A native backend that
# hands its response headers to `observe` is read by the same rule.
HEADERS = (("x-ratelimit-{field}-{kind}", parse_duration), ("anthropic-ratelimit-{kind}-{field}", seconds_until))
