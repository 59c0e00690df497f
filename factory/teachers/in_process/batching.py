"""In-process teachers: requests that arrive together are generated together.

A background worker takes whatever is pending (up to `max_batch`) and runs the
backend's `_generate` on a thread, so the event loop keeps queueing requests while
the model works; a dialogue's next turn joins the next batch as soon as its previous
turn returns. A batch that does not fit in memory is split in halves and retried,
and later batches stay at the size that fitted: batches are sized to memory by
finding out, not by a guess at what a prompt costs.
"""

from __future__ import annotations

import asyncio
import collections

from factory.core.errors import OutOfMemory, TeacherError
from factory.teachers.base import Completion, Request, Teacher


class BatchingTeacher(Teacher):
    max_batch: int = 1

    def __init__(self, config, max_batch: int) -> None:
        self.config = config
        self.model = config.model
        self.max_batch = max_batch
        # Two batches' worth in flight: one generating, one gathering.
        self.default_concurrency = 2 * max_batch
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self.batch_sizes: collections.Counter[int] = collections.Counter()  # size -> batches run
        self.memory_splits = 0

    def _load(self) -> None:
        """Load the model (on a thread); raise TeacherError with a line saying what to do."""

    def _generate(self, requests: list[Request]) -> list[Completion]:
        raise NotImplementedError

    async def start(self) -> None:
        await asyncio.to_thread(self._load)
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._serve())

    async def complete(self, request: Request) -> Completion:
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((request, future))
        return await future

    # A raw-text request (`request.prompt`) joins the same batches: `_generate` sees which it is.
    completes_text = True
    complete_text = complete

    async def _serve(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            batch = [(r, f) for r, f in batch if not f.cancelled()]
            if not batch:
                continue
            await self._run(batch)

    async def _run(self, batch: list) -> None:
        try:
            results = await asyncio.to_thread(self._generate, [r for r, _ in batch])
        except OutOfMemory as err:
            if len(batch) == 1:
                self._fail(batch, TeacherError(f"{err} with a single request: lower sampling.max_tokens or "
                                               "use a smaller model"))
                return
            half = len(batch) // 2
            self.memory_splits += 1
            self.max_batch = min(self.max_batch, half)
            await self._run(batch[:half])
            await self._run(batch[half:])
            return
        except Exception as err:  # one bad batch fails its requests, not the worker
            self._fail(batch, TeacherError(f"generation failed: {err}"))
            return
        self.batch_sizes[len(batch)] += 1
        for (_, f), result in zip(batch, results):
            if not f.done():
                f.set_result(result)

    @staticmethod
    def _fail(batch: list, err: TeacherError) -> None:
        for _, f in batch:
            if not f.done():
                f.set_exception(err)

    def batching(self) -> dict:
        """How requests were batched, for run.json."""
        batches = sum(self.batch_sizes.values())
        requests = sum(size * n for size, n in self.batch_sizes.items())
        return {"batches": batches, "mean_batch": round(requests / batches, 2) if batches else None,
                "largest_batch": max(self.batch_sizes, default=None), "max_batch": self.max_batch,
                "memory_splits": self.memory_splits}

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
