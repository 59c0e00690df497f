"""Provider batch mode (`teacher.mode: batch`): the engine's requests go out through a
provider's batch API (OpenAI Batch, Anthropic Message Batches) at its batch price.

`complete()` queues the request and waits for its answer, so units, asking until an
answer is usable, the journal and the rejections work as they do online; only the
window is large. The waiting requests go out as one batch when they reach the
provider's limits (`batch.max_requests`, `batch.max_bytes`) or when no new request came
for `batch.gather` seconds. Every batch is recorded in the run store before the
provider is asked to create it, with the engine's key of each request as its custom id;
its id once it exists; and every request's outcome once it ended. A rerun, after a
crash, a kill -9 or with another key of the same organisation, polls the batches it
finds there instead of submitting their requests again.

An ended batch (completed, expired, cancelled) gives up both its results and its
errors: every answer is kept; a row the provider refused ends its unit as `refused`
with the provider's message, as an online refusal does (stored: a rerun does not send
it again); a request left unanswered (expired, cancelled, a
transient error, a batch the provider lost) is submitted again, at most
`batch.resubmits` times per invocation, after which the run stops as incomplete.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from factory.core import constants
from factory.config.backends import BATCH_BACKENDS
from factory.config.pipeline import TeacherConfig
from factory.core.registry import load
from factory.core.errors import BadResponse, RequestRefused, TeacherError
from factory.core.stopping import RunStopping, Stop
from factory.store.run_store import RunStore
from factory.teachers.base import Completion, Request, Teacher
from factory.teachers.batch.provider import BatchLost, BatchProvider, BatchStatus
from factory.teachers.outage import OutageClock


@dataclass
class Waiting:
    entry: bytes
    futures: list[asyncio.Future] = field(default_factory=list)


@dataclass
class OpenBatch:
    local: int
    remote: str
    keys: list[str]
    status: str = ""
    counts: dict[str, int] = field(default_factory=dict)


def make_provider(config: TeacherConfig) -> BatchProvider:
    """The batch API of the teacher's backend, as the backends table names it."""
    return load(BATCH_BACKENDS[config.backend].provider)(config)


class BatchTeacher(Teacher):
    default_concurrency = constants.BATCH_MAX_IN_FLIGHT

    def __init__(self, config: TeacherConfig, store: RunStore, stop: Stop | None = None,
                 provider: BatchProvider | None = None):
        self.config = config
        self.model = config.model
        self.backend = config.backend
        self.store = store
        self.stop = stop
        self.provider = provider or make_provider(config)
        api = BATCH_BACKENDS[config.backend]
        self.max_requests = config.batch.max_requests or api.max_requests
        self.max_bytes = config.batch.max_bytes or api.max_bytes
        self.waiting: dict[str, Waiting] = {}  # every request a caller waits for, by key
        self.queue: dict[str, bytes] = {}  # of those, the ones not in a batch yet (insertion order)
        self.queued_bytes = 0
        self.open: dict[int, OpenBatch] = {}  # batches at the provider, by local id
        self.in_batch: dict[str, int] = {}  # key -> local id of the open batch holding it
        self.submissions: dict[str, int] = {}  # times each key was submitted by this invocation
        self.counts = {"submitted": 0, "resumed": 0, "collected": 0, "lost": 0, "resubmitted": 0}
        self.on_event: Callable[[str], None] | None = None  # the progress display's event line
        self._last_enqueue = 0.0
        self._wake_submitter = asyncio.Event()
        self._wake_poller = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.outage = OutageClock(config.outage_timeout)
        self._last_error = ""
        # The provider refused a batch because its queue was full (OpenAI's enqueued
        # token limit): nothing goes out until one of the batches in progress ends.
        self._held = False

    # -- the Teacher contract -------------------------------------------------------------

    async def start(self) -> None:
        await self.provider.start()
        await self._resume()
        self._tasks = [asyncio.create_task(self._guarded(self._submitter()), name="batch-submitter"),
                       asyncio.create_task(self._guarded(self._poller()), name="batch-poller")]
        if self.stop is not None:
            self._tasks.append(asyncio.create_task(self._stopper(), name="batch-stopper"))

    async def complete(self, request: Request) -> Completion:
        key = request.key
        if not key:
            raise ValueError("batch mode needs the engine's request key")
        if self.stop is not None:
            self.stop.check()  # nothing new is queued once the run stops
        if key not in self.waiting:
            settled = self._settled(key)
            if settled is not None:
                return _resolve(settled)
            if key not in self.in_batch and self.submissions.get(key, 0) > self.config.batch.resubmits:
                # Asked again after its last resubmission went unanswered: not once more in
                # this invocation (the engine stops the run as incomplete; a rerun tries again).
                raise TeacherError(f"no answer after {self.submissions[key]} batches; rerun the same command "
                                   "to try again")
            self.waiting[key] = Waiting(self.provider.entry(key, request))
            if key not in self.in_batch:
                self._enqueue(key)
        future = asyncio.get_running_loop().create_future()
        self.waiting[key].futures.append(future)
        try:
            return await future
        finally:
            waiter = self.waiting.get(key)
            if waiter is not None and future in waiter.futures:
                waiter.futures.remove(future)
                if not waiter.futures:
                    # Nobody waits for it any more (a stop): a queued one need not go out; one
                    # in a batch has its outcome stored when the batch ends.
                    del self.waiting[key]
                    if key in self.queue:
                        self.queued_bytes -= len(self.queue.pop(key)) + 1

    def _settled(self, key: str) -> dict[str, Any] | None:
        """The stored outcome of `key` from a batch of an earlier invocation, when it has
        one that answers it (a missing one is asked again)."""
        found = self.store.batch_outcome(key)
        if found is None:
            return None
        _, _, outcome = found
        if outcome is None or "missing" in outcome:
            return None
        return outcome

    def describe(self) -> dict[str, Any]:
        out = {"backend": self.backend, "model": self.model, "mode": "batch", "where": self.provider.where(),
               "batch": {"max_requests": self.max_requests, "max_bytes": self.max_bytes,
                         "discount": self.config.batch.discount, **self.counts}}
        out["batches"] = [{"id": b["remote"], "status": b["status"], "requests": b["requests"], "counts": b["counts"]}
                          for b in self.store.batches() if b["remote"]]
        return out

    def secrets(self) -> list[str]:
        return self.provider.secrets()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        # Batches still running stay at the provider; the store names them for the rerun.
        for waiter in self.waiting.values():
            for future in waiter.futures:
                if not future.done():
                    future.set_exception(RunStopping("the run is closing; rerun to collect the batches in progress"))
        await self.provider.close()

    # -- progress -------------------------------------------------------------------------

    def progress_part(self) -> str:
        in_batches = sum(len(b.keys) for b in self.open.values())
        done = self.counts["collected"] + self.counts["lost"]
        return (f"batches {self.counts['submitted'] + self.counts['resumed']} submitted, {len(self.open)} in progress,"
                f" {done} done; requests {len(self.queue)} queued, {in_batches} in batches")

    def _event(self, text: str) -> None:
        if self.on_event is not None:
            self.on_event(text)

    # -- queue and submission -------------------------------------------------------------

    def _enqueue(self, key: str) -> None:
        entry = self.waiting[key].entry
        self.queue[key] = entry
        self.queued_bytes += len(entry) + 1
        self._last_enqueue = time.monotonic()
        self._wake_submitter.set()

    def _due(self) -> float | None:
        """Seconds until the queue should go out (0: now); None when it is empty or the
        provider's queue is full until one of our batches ends."""
        if not self.queue or (self._held and self.open):
            return None
        if len(self.queue) >= self.max_requests or self.queued_bytes >= self.max_bytes:
            return 0.0
        return max(0.0, self._last_enqueue + self.config.batch.gather - time.monotonic())

    def _take(self) -> list[str]:
        """The keys of the next batch: the oldest waiting, within both limits."""
        keys, size = [], 0
        for key, entry in self.queue.items():
            if len(keys) >= self.max_requests or (keys and size + len(entry) + 1 > self.max_bytes):
                break
            keys.append(key)
            size += len(entry) + 1
        return keys

    async def _submitter(self) -> None:
        while True:
            due = self._due()
            if due is None:
                self._wake_submitter.clear()
                await self._wake_submitter.wait()
                continue
            if due > 0:
                self._wake_submitter.clear()
                try:
                    await asyncio.wait_for(self._wake_submitter.wait(), timeout=due)
                except asyncio.TimeoutError:
                    pass
                continue
            if self.stop is not None and self.stop.requested:
                return  # nothing new goes out once the run stops
            keys = self._take()
            if not await self._submit(keys):
                await asyncio.sleep(min(constants.RETRY_MAX_PAUSE_S, self.config.batch.poll_interval))

    async def _submit(self, keys: list[str]) -> bool:
        """Send `keys` as one batch; False when the provider could not be asked (they stay queued)."""
        entries = [self.queue[k] for k in keys]
        local = self.store.add_batch(self.provider.name, keys)
        try:
            remote, status = await self.provider.submit(entries, lambda file: self.store.update_batch(local, file=file))
        except TeacherError as err:
            # The provider may have created it before the error reached us: look, before
            # forgetting it and sending its requests again.
            remote = await self._find_quietly(local)
            if remote is None:
                self.store.forget_batch(local)
                self._failed(err, keys)
                return False
            status = "submitted"
        self.store.update_batch(local, remote=remote, state="submitted", status=status)
        for key in keys:
            entry = self.queue.pop(key)
            self.queued_bytes -= len(entry) + 1
            self.in_batch[key] = local
            self.submissions[key] = self.submissions.get(key, 0) + 1
        self.open[local] = OpenBatch(local, remote, keys, status)
        self.counts["submitted"] += 1
        self.outage.succeeded()
        self._event(f"batch {remote} submitted: {len(keys)} requests")
        self._wake_poller.set()
        return True

    def _known(self) -> set[str]:
        return {b["remote"] for b in self.store.batches() if b["remote"]}

    async def _find_quietly(self, local: int) -> str | None:
        row = next((b for b in self.store.batches(("submitting",)) if b["id"] == local), None)
        try:
            return await self.provider.find(row, self._known()) if row else None
        except TeacherError:
            return None

    # -- polling and collecting -----------------------------------------------------------

    async def _resume(self) -> None:
        """Take up the batches an earlier invocation left at the provider."""
        for batch in self.store.batches(("submitting", "submitted")):
            if batch["provider"] != self.provider.name:
                continue  # another teacher's (a judge on another provider): it polls its own
            local, remote = batch["id"], batch["remote"]
            if batch["state"] == "submitting":
                remote = await self.provider.find(batch, self._known())
                if remote is None:
                    self.store.forget_batch(local)  # never created: its requests are asked again
                    continue
                self.store.update_batch(local, remote=remote, state="submitted")
            keys = self.store.batch_keys(local)
            self.open[local] = OpenBatch(local, remote, keys, batch["status"] or "", batch["counts"])
            for key in keys:
                self.in_batch[key] = local
            self.counts["resumed"] += 1
        if self.open:
            self._event(f"resuming {len(self.open)} batches submitted before "
                        f"({sum(len(b.keys) for b in self.open.values())} requests)")

    async def _poller(self) -> None:
        while True:
            for batch in list(self.open.values()):
                await self._poll(batch)
            self._wake_poller.clear()
            try:
                await asyncio.wait_for(self._wake_poller.wait(), timeout=self.config.batch.poll_interval)
                await asyncio.sleep(self.config.batch.poll_interval)  # a new batch: look after one interval
            except asyncio.TimeoutError:
                pass

    async def _poll(self, batch: OpenBatch) -> None:
        try:
            status = await self.provider.status(batch.remote)
            if not status.ended:
                if (status.status, status.counts) != (batch.status, batch.counts):
                    batch.status, batch.counts = status.status, status.counts
                    self.store.update_batch(batch.local, status=status.status, counts=status.counts)
                self.outage.succeeded()
                return
            outcomes = {key: outcome async for key, outcome in self.provider.outcomes(batch.remote, status)}
            state = "collected"
        except BatchLost:
            status, outcomes, state = BatchStatus("lost", True), {}, "lost"
        except TeacherError as err:
            self._failed(err, [k for k in batch.keys if k in self.waiting])
            return
        self.outage.succeeded()
        mine = set(batch.keys)
        outcomes = {k: v for k, v in outcomes.items() if k in mine}  # a row that is not ours is ignored
        why = f"batch {batch.remote} {status.status}" + "".join(f"; {e}" for e in status.detail.get("errors", [])[:3])
        queue_full = bool(status.detail.get("queue_full")) and len(self.open) > 1
        for key in batch.keys:
            outcomes.setdefault(key, {"missing": why, **({"queue_full": True} if queue_full else {})})
        self.store.collect_batch(batch.local, outcomes, state, status.status, status.counts)
        del self.open[batch.local]
        self.counts[state] += 1
        if queue_full:
            self._held = True
            self._event(f"batch {batch.remote} refused: the provider's queue is full; its {len(batch.keys)} requests "
                        f"go out again when one of the {len(self.open)} batches in progress ends")
        else:
            self._held = False  # a batch ended: room in the provider's queue
            self._wake_submitter.set()
        kept = sum("completion" in o for o in outcomes.values())
        self._event(f"batch {batch.remote} {status.status}: {kept} of {len(batch.keys)} answered")
        for key, outcome in outcomes.items():
            if self.in_batch.get(key) == batch.local:
                del self.in_batch[key]
            self._settle(key, outcome)

    def _settle(self, key: str, outcome: dict[str, Any]) -> None:
        waiter = self.waiting.get(key)
        if waiter is None:
            return  # no caller now: a later complete() finds the outcome in the store
        if "missing" in outcome:
            if outcome.get("queue_full"):
                # Never run, and not for a fault of its own: not counted.
                self.submissions[key] = max(0, self.submissions.get(key, 0) - 1)
            if self.submissions.get(key, 0) <= self.config.batch.resubmits:
                self.counts["resubmitted"] += 1
                self._enqueue(key)
                return
            error: BaseException = TeacherError(
                f"no answer after {self.submissions.get(key, 0)} batches ({outcome['missing']}); "
                "rerun the same command to try again")
            result = None
        else:
            try:
                result, error = _resolve(outcome), None
            except (BadResponse, RequestRefused) as err:
                result, error = None, err
        del self.waiting[key]
        for future in waiter.futures:
            if not future.done():
                if error is None:
                    future.set_result(result)
                else:
                    future.set_exception(error)

    # -- failures and stops ---------------------------------------------------------------

    def _failed(self, err: TeacherError, keys: list[str]) -> None:
        """The provider could not be asked (after the client's retries). Callers wait on;
        past teacher.outage_timeout they get the error, and the engine stops the run as
        incomplete (the batches stay recorded: a rerun polls them)."""
        self.outage.failed(str(err))
        fatal = getattr(err, "fatal", False)
        if self._last_error != str(err) and not fatal:
            self._last_error = str(err)
            print(f"factory: the batch API did not answer ({err}); trying again", file=sys.stderr, flush=True)
        if fatal or self.outage.outage():
            for key in keys:
                waiter = self.waiting.pop(key, None)
                if waiter is None:
                    continue
                if key in self.queue:
                    self.queued_bytes -= len(self.queue.pop(key)) + 1
                for future in waiter.futures:
                    if not future.done():
                        future.set_exception(err)

    async def _guarded(self, loop) -> None:
        """A bug in the submitter or the poller must not leave callers waiting for ever:
        they get the error, and the run stops with it."""
        try:
            await loop
        except asyncio.CancelledError:
            raise
        except Exception as err:
            for waiter in self.waiting.values():
                for future in waiter.futures:
                    if not future.done():
                        future.set_exception(err)
            raise

    async def _stopper(self) -> None:
        """On a stop, callers stop waiting at once: a batch may take hours, and what is
        at the provider stays recorded for the rerun."""
        await self.stop.wait()
        for key in list(self.waiting):
            waiter = self.waiting.pop(key)
            if key in self.queue:
                self.queued_bytes -= len(self.queue.pop(key)) + 1
            for future in waiter.futures:
                if not future.done():
                    future.set_exception(RunStopping(self.stop.reason))


def _resolve(outcome: dict[str, Any]) -> Completion:
    if "completion" in outcome:
        return Completion.from_dict(outcome["completion"])
    if "refused" in outcome:
        raise RequestRefused(outcome["refused"])
    err = BadResponse(outcome["error"])
    err.reason = outcome.get("reason", BadResponse.reason)
    raise err
