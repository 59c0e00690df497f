"""How many requests may be in flight, and how fast they may start.

`AdaptiveWindow` is the in-flight window: a semaphore whose size halves when the
teacher answers 429 (at most once per cooldown, so one burst counts once) and grows
back by one per window's worth of successes (AIMD, as TCP does). `RateLimiter` adds
requests-per-minute and tokens-per-minute buckets for paid APIs.
"""

from __future__ import annotations

import asyncio
import collections
import time

from factory import constants


class AdaptiveWindow:
    def __init__(self, limit: int, floor: int = constants.MIN_CONCURRENCY):
        self.ceiling = limit
        self.floor = min(floor, limit)
        self.limit = float(limit)
        self.in_flight = 0
        self.throttled = 0
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._last_cut = 0.0

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
            else:
                self._waiters.remove(fut)
            raise

    def release(self) -> None:
        self.in_flight -= 1
        while self._waiters and self.in_flight < self.size:
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_flight += 1
                fut.set_result(None)

    def on_success(self) -> None:
        if self.limit < self.ceiling:
            self.limit = min(self.ceiling, self.limit + 1.0 / self.limit)

    def on_throttle(self) -> None:
        self.throttled += 1
        now = time.monotonic()
        if now - self._last_cut >= constants.THROTTLE_COOLDOWN_S:
            self._last_cut = now
            self.limit = max(float(self.floor), self.limit / 2)


class RateLimiter:
    """Token buckets for requests and tokens per minute; either may be None (no limit).

    Each bucket holds one second's worth: providers enforce per-minute limits in
    slices (OpenAI: "60,000 rpm may be enforced as 1,000 requests per second"), so a
    full minute's burst at the start would be refused.
    """

    def __init__(self, rpm: int | None, tpm: int | None):
        self.rpm, self.tpm = rpm, tpm
        self._req_cap = max(1.0, (rpm or 0) / 60)
        self._tok_cap = max(1.0, (tpm or 0) / 60)
        self._requests = self._req_cap
        self._tokens = self._tok_cap
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    @property
    def active(self) -> bool:
        return bool(self.rpm or self.tpm)

    def _refill(self) -> None:
        now = time.monotonic()
        elapsed, self._stamp = now - self._stamp, now
        if self.rpm:
            self._requests = min(self._req_cap, self._requests + elapsed * self.rpm / 60)
        if self.tpm:
            self._tokens = min(self._tok_cap, self._tokens + elapsed * self.tpm / 60)

    async def acquire(self, tokens: int) -> None:
        """Wait until one request and `tokens` (an estimate) may be spent, then spend them."""
        if not self.active:
            return
        tokens = min(tokens, self._tok_cap)  # a request larger than the bucket still goes, alone
        async with self._lock:  # first come, first served
            while True:
                self._refill()
                short_req = 1 - self._requests if self.rpm else 0
                short_tok = tokens - self._tokens if self.tpm else 0
                if short_req <= 0 and short_tok <= 0:
                    if self.rpm:
                        self._requests -= 1
                    if self.tpm:
                        self._tokens -= tokens
                    return
                wait = max(short_req * 60 / self.rpm if self.rpm else 0, short_tok * 60 / self.tpm if self.tpm else 0)
                await asyncio.sleep(wait)

    def settle(self, estimated: int, actual: int) -> None:
        """Give back (or take) the difference once a request's real usage is known."""
        if self.tpm:
            self._tokens = min(self._tok_cap, self._tokens + min(estimated, self._tok_cap) - actual)
