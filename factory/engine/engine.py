"""The engine: many units in flight on one event loop, every request through the run store.

No batch barriers: a unit starts the moment another finishes, so a slow request never
holds back the rest. Units are created lazily from their index, so memory does not
grow with the requested count.

A request is keyed by what is asked (model, resolved sampling, the structured mode the
pipeline asked for, seed, messages, unit and step), the same for every backend: a rerun
replays every answer stored under its key and sends only the rest. A teacher failure
is never an answer: the request is asked again until it is answered, or until every
attempt has failed for `teacher.outage_timeout` seconds, when the run stops as
incomplete with the unit still pending.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

from factory.core import constants
from factory.core.cost import Budget, BudgetReached, effective_price, request_cost
from factory.core.errors import BadResponse, RequestRefused, TeacherError
from factory.teachers.limits import AdaptiveWindow, RateLimiter
from factory.teachers.outage import OutageClock
from factory.core.redaction import Redactor
from factory.core.stopping import INCOMPLETE, RunStopping, Stop
from factory.store.run_store import RunStore, request_key
from factory.core.structured_modes import ModeRefused, legacy_setting_key, setting_key
from factory.tasks.base import Task
from factory.teachers.base import Completion, Request, Teacher
from factory.teachers.identity import request_identity


@dataclass
class RunStats:
    """One invocation's counters (a resumed run has one per invocation in the store)."""

    sent: int = 0
    replayed: int = 0
    teacher_errors: int = 0
    bad_responses: int = 0
    refused: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    units_done: int = 0  # units finished, this invocation and the ones before
    units_before: int = 0  # of those, finished by an earlier invocation
    started: float = field(default_factory=time.perf_counter)
    first_request: float | None = None
    last_answer: float | None = None
    latency_total: float = 0.0
    cost: float = 0.0  # paid by this invocation, at the teachers' prices

    def as_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items()
               if k not in ("started", "first_request", "last_answer", "units_before")}
        out["startup_s"] = (self.first_request - self.started) if self.first_request else None
        out["mean_latency_s"] = self.latency_total / self.sent if self.sent else None
        return out

    def usage(self) -> dict:
        return {"requests": self.sent, "replayed_from_journal": self.replayed, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "cached_tokens": self.cached_tokens,
                "reasoning_tokens": self.reasoning_tokens, "cost": round(self.cost, 6)}


class Engine:
    def __init__(self, teacher: Teacher, store: RunStore, window: AdaptiveWindow, limiter: RateLimiter,
                 stats: RunStats | None = None, budget: Budget | None = None, stop: Stop | None = None):
        self.teacher = teacher
        self.config = getattr(teacher, "config", None)
        self.budget = budget or Budget(None)
        self.price = effective_price(self.config)  # in batch mode, at the batch discount
        self.store = store
        self.window = window
        self.limiter = limiter
        self.stats = stats or RunStats()
        self.stop = stop or Stop(constants.DRAIN_GRACE_S)
        self.health = OutageClock(getattr(self.config, "outage_timeout", constants.OUTAGE_TIMEOUT_S))
        self.watcher = None  # a server_load.LoadWatcher steering the window, when the server has metrics
        self._identity = request_identity(teacher)
        self._mode_saved = False
        # Servers echo keys back in error bodies: messages about failures are scrubbed.
        self._redact = Redactor(teacher.secrets())

    def concurrency(self) -> dict:
        """How the in-flight window was sized, for run.json."""
        out = self.window.describe()
        if self.watcher is not None:
            out.update(self.watcher.describe())
        if self.limiter.active:
            out["rate_limits"] = self.limiter.describe()
        return out

    def key(self, request: Request, unit: int | str, step: int | str) -> str:
        described = {**self._identity, "schema": request.schema, "schema_name": request.schema_name,
                     "seed": request.seed, "messages": request.messages, "unit": unit, "step": step}
        if request.prompt is not None:
            # Only raw-text requests name a prompt: every chat request keeps its key.
            described["prompt"] = request.prompt
        return request_key(described)

    async def ask(self, request: Request, unit: int | str, step: int | str) -> Completion:
        key = self.key(request, unit, step)
        stored = self._stored(key, request, unit, step)
        if stored is not None:
            return self._replay(stored)
        failures = 0
        while True:
            try:
                return await self._send(key, request)
            except ModeRefused:
                # Refused for its structured-output mode, which cost nothing: asked again in
                # the next one, through the window and the stop like any new request.
                continue
            except (BadResponse, RequestRefused, BudgetReached, RunStopping):
                raise
            except TeacherError as err:
                failures += 1
                if self.health.outage():
                    reason = f"teacher unreachable since {self.health.since()}: {self.health.last_error}"
                    self.stop.request("outage", INCOMPLETE, reason)
                    raise RunStopping(reason) from err
                self._announce_trouble()
                # Not an answer: ask again after a pause, unless the run is stopping.
                pause = min(constants.RETRY_MAX_PAUSE_S, constants.RETRY_FIRST_PAUSE_S * 2 ** (failures - 1))
                left = self.health.timeout - self.health.down_for()
                if await self.stop.sleep(min(pause * random.uniform(0.5, 1.0), max(0.05, left))):
                    raise RunStopping(self.stop.reason) from err

    def _stored(self, key: str, request: Request, unit, step) -> dict | None:
        stored = self.store.lookup(key)
        if stored is None and self.store.has_legacy:
            legacy = [request_key({"request": p, "unit": unit, "step": step})
                      for p in self.teacher.legacy_payloads(request)]
            stored = self.store.lookup_legacy(legacy)
            if stored is not None:
                stored.pop("sent", None)
                self.store.adopt_legacy(key, stored)  # found under its new key from now on
        return stored

    def journaled(self, request: Request, unit: int | str, step: int | str) -> tuple[str, dict | None]:
        """The request's key and what the journal holds under it (None: never answered),
        without asking the teacher or counting a replay."""
        key = self.key(request, unit, step)
        return key, self._stored(key, request, unit, step)

    def _replay(self, stored: dict) -> Completion:
        self.stats.replayed += 1
        return stored_answer(stored)

    async def _send(self, key: str, request: Request) -> Completion:
        self.stop.check()
        estimate = self._token_estimate(request)
        await self.limiter.acquire(estimate)
        await self.window.acquire()
        reserved: float | None = None  # what the budget holds for this request, once it does
        try:
            await self.limiter.held()  # a Retry-After that came while this one waited for the window
            self.stop.check()  # the wait may have been long: a stop requested meanwhile starts nothing new
            if self.price is not None:
                tokens = (self._prompt_estimate(request), self._max_tokens())
                worst = request_cost(self.price, *tokens)
                await self.budget.hold(worst, tokens)
                reserved = worst
        except BaseException:
            self.window.release()
            self.limiter.answered()
            raise
        stats = self.stats
        began = time.monotonic()
        if stats.first_request is None:
            stats.first_request = time.perf_counter()
        try:
            keyed = replace(request, key=key)
            answer = self.teacher.complete(keyed) if request.prompt is None else self.teacher.complete_text(keyed)
            # Whatever the backend, thinking never stays in the answer (factory/core/reasoning.py).
            completion = (await answer).thinking_apart()
        except BadResponse as err:
            # The server answered (and may have charged): stored, so a rerun moves on.
            self.store.store_request(key, {"error": str(err), "reason": getattr(err, "reason", "bad_response")})
            self._commit_soon()
            stats.bad_responses += 1
            self.health.succeeded()
            raise
        except RequestRefused:
            stats.refused += 1
            self.health.succeeded()  # it answered: alive, only this request is refused
            raise
        except ModeRefused:
            self.health.succeeded()
            raise
        except TeacherError as err:
            stats.teacher_errors += 1
            self.health.failed(self._redact(str(err)), began)
            raise
        finally:
            self.window.release()
            self.limiter.answered()
            if reserved is not None:
                self.budget.release(reserved)
        latency = time.monotonic() - began
        paid = request_cost(self.price, completion.prompt_tokens, completion.completion_tokens,
                            completion.cached_tokens)
        self.store.store_request(key, {"completion": completion.to_dict(), "cost": paid, "latency": round(latency, 4)})
        self._remember_mode()
        self._commit_soon()
        self.health.succeeded()
        self._account(completion, paid, latency, estimate)
        return completion

    def _account(self, completion: Completion, paid: float, latency: float, estimate: int) -> None:
        stats = self.stats
        self.budget.spent += paid
        stats.cost += paid
        now = time.perf_counter()
        stats.last_answer = now
        stats.latency_total += latency
        stats.sent += 1
        stats.prompt_tokens += completion.prompt_tokens
        stats.completion_tokens += completion.completion_tokens
        stats.cached_tokens += completion.cached_tokens
        stats.reasoning_tokens += completion.reasoning_tokens
        self.window.on_success()
        if self.limiter.active:
            self.limiter.settle(estimate, completion.prompt_tokens + completion.completion_tokens)

    def _commit_soon(self) -> None:
        self.store.commit_soon(asyncio.get_running_loop())

    def _remember_mode(self) -> None:
        # The structured-output mode a probe found is used from now on, and by every
        # rerun: the store remembers, so nothing re-probes (keys name the requested mode).
        if self._mode_saved:
            return
        modes = self.teacher.modes
        if modes is not None and modes.requested == "auto" and modes.settled:
            self.store.put_setting(setting_key(self.teacher.model), modes.current)
            self._mode_saved = True
        elif getattr(self.teacher, "schema_refused", False):  # a backend with two ways only (anthropic)
            self.store.put_setting(legacy_setting_key(self.teacher.model), True)
            self._mode_saved = True

    def _announce_trouble(self) -> None:
        if not self.health.announced and self.health.down_for() >= constants.OUTAGE_ANNOUNCE_S:
            self.health.announced = True
            print(f"factory: the teacher has not answered since {self.health.since()} ({self.health.last_error}); "
                  f"asking again for up to {self.health.timeout:g} s (teacher.outage_timeout)",
                  file=sys.stderr, flush=True)

    def _token_estimate(self, request: Request) -> int:
        if not self.limiter.counts_tokens:
            return 0
        return self._prompt_estimate(request) + self._max_tokens()

    @staticmethod
    def _prompt_estimate(request: Request) -> int:
        chars = sum(len(m["content"]) for m in request.messages) + len(request.prompt or "")
        return chars // 4  # about 4 characters a token

    def _max_tokens(self) -> int:
        sampling = getattr(self.config, "sampling", None)
        return sampling.max_tokens if sampling else 256


def stored_answer(stored: dict) -> Completion:
    """A journaled answer as the teacher gave it: its completion, or the BadResponse it was."""
    if "error" in stored:
        err = BadResponse(stored["error"])
        if stored.get("reason"):
            err.reason = stored["reason"]
        raise err
    # Answers stored before thinking was kept apart are split as they are read back.
    return Completion.from_dict(stored["completion"]).thinking_apart()


Sink = Callable[[int, list], None]


async def run_task(task: Task, engine: Engine, sink: Sink, on_progress: Callable[[], None] | None = None,
                   asker=None, units: Iterable[int] | None = None) -> None:
    """Run `units` of `task` (all by default), handing each unit's results to `sink(unit, results)`.

    A unit whose request the teacher refuses for good ends as the task's rejections
    with reason `refused`. A stop (a signal, an outage, a dead server) starts no new
    unit and lets the requests in flight finish, for at most the grace period; the
    units it cut short stay pending. max_cost does the same and raises BudgetReached.
    Any other exception, in a task, the sink or the progress display, stops the run and
    is raised: nothing disappears.
    """
    stop = engine.stop
    bound = asyncio.Semaphore(max(1, engine.window.ceiling))
    running: set[asyncio.Task] = set()
    failure: list[BaseException] = []
    budget: list[BudgetReached] = []
    refusals = [0, 0]  # refused units in a row; units ever done

    async def one(unit: int) -> None:
        try:
            try:
                results = await task.run_unit(unit, asker or engine)
            except RequestRefused as err:
                refusals[0] += 1
                if err.fatal or (refusals[0] >= constants.ABORT_AFTER_CONSECUTIVE_FAILURES and not refusals[1]):
                    raise
                results = task.unit_failure(unit, "refused", str(err))
            else:
                refusals[0] = 0
                refusals[1] += 1
            engine.stats.units_done += 1
            sink(unit, results)
            if on_progress is not None:
                on_progress()
        except BudgetReached as err:
            budget.append(err)
        except RunStopping:
            pass  # the unit stays pending; the stop's reason is reported once, by the caller
        except asyncio.CancelledError:
            raise
        except BaseException as err:  # a bug in a task, a sink or the display stops the run
            failure.append(err)
        finally:
            bound.release()

    with stop.bound():
        try:
            for unit in (range(task.units()) if units is None else units):
                await bound.acquire()
                if failure or budget or stop.requested:
                    bound.release()
                    break
                t = asyncio.create_task(one(unit))
                running.add(t)
                t.add_done_callback(running.discard)
            await _drain(running, failure, stop)
        finally:
            for t in list(running):
                t.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
    if failure:
        raise failure[0]
    if budget:
        raise budget[0]


async def _drain(running: set[asyncio.Task], failure: list, stop: Stop) -> None:
    """Wait for the units in flight; after a stop, for at most the grace period."""
    deadline = None
    while running and not failure:
        if stop.requested and deadline is None:
            deadline = time.monotonic() + stop.grace
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if timeout == 0.0:
            return  # grace spent: the caller cancels what is left (stored answers stay stored)
        waiter = asyncio.ensure_future(stop.wait()) if deadline is None else None
        try:
            await asyncio.wait(set(running) | ({waiter} if waiter else set()), timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            if waiter is not None:
                waiter.cancel()
