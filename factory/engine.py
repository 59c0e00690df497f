"""The engine: many units in flight on one event loop, every request through the journal.

No batch barriers: a unit starts the moment another finishes, so a slow request never
holds back the rest. Units are created lazily from their index, so memory does not
grow with the requested count.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Callable

from factory import constants
from factory.cost import Budget, BudgetReached, request_cost
from factory.errors import BadResponse, TeacherError
from factory.journal import Journal, request_key
from factory.limits import AdaptiveWindow, RateLimiter
from factory.record import Record, Rejection
from factory.tasks.base import Task
from factory.teachers.base import Completion, Request, Teacher


@dataclass
class RunStats:
    sent: int = 0
    replayed: int = 0
    teacher_errors: int = 0
    bad_responses: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    units_done: int = 0
    kept: int = 0
    rejected: int = 0
    consecutive_failures: int = 0
    started: float = field(default_factory=time.perf_counter)
    first_request: float | None = None
    last_answer: float | None = None
    latency_total: float = 0.0
    # Completed requests per second of the run: {second: [count, latency sum]}, for the report.
    timeline: dict = field(default_factory=dict)
    cost: float = 0.0  # paid by this invocation, at the teachers' prices
    replayed_cost: float = 0.0  # paid before, replayed from the journal

    def as_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items()
               if k not in ("started", "first_request", "last_answer", "timeline")}
        out["startup_s"] = (self.first_request - self.started) if self.first_request else None
        out["mean_latency_s"] = self.latency_total / self.sent if self.sent else None
        return out

    def timeline_points(self, most: int = 300) -> list[list[float]]:
        """[seconds into the run, requests/s, mean latency s], in at most `most` even steps."""
        if not self.timeline:
            return []
        last = max(self.timeline) + 1
        step = max(1, -(-last // most))
        points = []
        for start in range(0, last, step):
            count = sum(self.timeline.get(s, (0, 0.0))[0] for s in range(start, start + step))
            latency = sum(self.timeline.get(s, (0, 0.0))[1] for s in range(start, start + step))
            points.append([start, round(count / step, 3), round(latency / count, 4) if count else None])
        return points


def usage(stats: RunStats) -> dict:
    """Requests, tokens and cost, as run.json and the card show them."""
    out = {"requests": stats.sent, "replayed_from_journal": stats.replayed,
           "prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.completion_tokens}
    if stats.cost or stats.replayed_cost:
        out["cost"] = round(stats.cost, 6)
        out["replayed_cost"] = round(stats.replayed_cost, 6)
    return out


class Engine:
    def __init__(self, teacher: Teacher, journal: Journal, window: AdaptiveWindow, limiter: RateLimiter,
                 stats: RunStats | None = None, budget: Budget | None = None):
        self.teacher = teacher
        self.budget = budget or Budget(None)
        self.price = getattr(getattr(teacher, "config", None), "price", None)
        self.journal = journal
        self.window = window
        self.limiter = limiter
        self.stats = stats or RunStats()
        self.sampling = getattr(getattr(teacher, "config", None), "sampling", None)
        self.fatal: TeacherError | None = None
        self.watcher = None  # a server_load.LoadWatcher steering the window, when the server has metrics

    def concurrency(self) -> dict:
        """How the in-flight window was sized, for run.json."""
        out = self.window.describe()
        if self.watcher is not None:
            out.update(self.watcher.describe())
        if self.limiter.active:
            out["rate_limits"] = self.limiter.describe()
        return out

    async def ask(self, request: Request, unit: int | str, step: int | str) -> Completion:
        payload = self.teacher.request_payload(request)
        key = request_key({"request": payload, "unit": unit, "step": step})
        cached = self.journal.lookup(key)
        if cached is not None:
            self.stats.replayed += 1
            if "error" in cached:
                raise BadResponse(cached["error"])
            completion = Completion.from_dict(cached["completion"])
            paid = request_cost(self.price, completion.prompt_tokens, completion.completion_tokens)
            self.stats.replayed_cost += paid
            self.budget.replayed += paid
            return completion

        estimate = self._token_estimate(request)
        await self.limiter.acquire(estimate)
        await self.window.acquire()
        worst = 0.0
        if self.price is not None:
            worst = request_cost(self.price, self._prompt_estimate(request), self._max_tokens())
            try:
                self.budget.reserve(worst)
            except BudgetReached:
                self.window.release()
                self.limiter.answered()
                raise
        stats = self.stats
        began = time.perf_counter()
        if stats.first_request is None:
            stats.first_request = began
        try:
            completion = await self.teacher.complete(request)
        except BadResponse as err:
            # The server answered (and may have charged): journal it, so a rerun moves on.
            self.journal.store(key, {"error": str(err), "sent": request_key(payload)})
            stats.bad_responses += 1
            raise
        except TeacherError as err:
            stats.teacher_errors += 1
            stats.consecutive_failures += 1
            if stats.sent == 0 and stats.consecutive_failures >= constants.ABORT_AFTER_CONSECUTIVE_FAILURES:
                self.fatal = self.fatal or err
            raise
        finally:
            self.window.release()
            self.limiter.answered()
            self.budget.release(worst)
        self.journal.store(key, {"completion": completion.to_dict(), "sent": request_key(payload)})
        paid = request_cost(self.price, completion.prompt_tokens, completion.completion_tokens)
        self.budget.spent += paid
        stats.cost += paid
        now = time.perf_counter()
        stats.last_answer = now
        stats.latency_total += now - began
        second = stats.timeline.setdefault(int(now - stats.started), [0, 0.0])
        second[0] += 1
        second[1] += now - began
        stats.sent += 1
        stats.consecutive_failures = 0
        stats.prompt_tokens += completion.prompt_tokens
        stats.completion_tokens += completion.completion_tokens
        self.window.on_success()
        if self.limiter.active:
            self.limiter.settle(estimate, completion.prompt_tokens + completion.completion_tokens)
        return completion

    def _token_estimate(self, request: Request) -> int:
        if not self.limiter.counts_tokens:
            return 0
        return self._prompt_estimate(request) + self._max_tokens()

    @staticmethod
    def _prompt_estimate(request: Request) -> int:
        return sum(len(m["content"]) for m in request.messages) // 4  # about 4 characters a token

    def _max_tokens(self) -> int:
        return self.sampling.max_tokens if self.sampling else 256


Sink = Callable[[list[Record | Rejection]], None]


async def run_task(task: Task, engine: Engine, sink: Sink, on_progress: Callable[[], None] | None = None,
                   asker=None) -> None:
    """Run every unit of `task`, handing each unit's results to `sink` as it completes.

    Units ask `engine`, or `asker` when given (one that routes roles to their engines).

    Raises TeacherError when the teacher is unreachable from the start (nothing would
    ever succeed); any other teacher failure ends as a rejection with its reason.
    """
    bound = asyncio.Semaphore(max(1, engine.window.ceiling))
    running: set[asyncio.Task] = set()
    failure: list[BaseException] = []
    # max_cost reached: start no new unit, but let the ones in flight finish (their
    # requests are paid for, and journaled), then stop.
    budget: list[BudgetReached] = []

    async def one(unit: int) -> None:
        try:
            results = await task.run_unit(unit, asker or engine)
        except BudgetReached as err:
            budget.append(err)
            return
        except BaseException as err:  # a bug in a task must stop the run, not vanish
            if not isinstance(err, asyncio.CancelledError):
                failure.append(err)
            raise
        finally:
            bound.release()
        engine.stats.units_done += 1
        sink(results)
        if on_progress is not None:
            on_progress()

    try:
        for unit in range(task.units()):
            await bound.acquire()
            if failure or engine.fatal or budget:
                break
            t = asyncio.create_task(one(unit))
            running.add(t)
            t.add_done_callback(running.discard)
        while running and not failure and not engine.fatal:
            await asyncio.wait(set(running), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in list(running):
            t.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
    if engine.fatal:
        raise TeacherError(f"teacher failed {engine.stats.consecutive_failures} times in a row and never answered: {engine.fatal}")
    if failure:
        raise failure[0]
    if budget:
        raise budget[0]
