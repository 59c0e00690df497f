"""In-process teachers: requests that arrive together are generated together.

A background worker takes whatever is pending (up to `max_batch`) and runs the
backend's `_generate` on a thread, so the event loop keeps queueing requests while
the model works; a dialogue's next turn joins the next batch as soon as its previous
turn returns.
"""

from __future__ import annotations

import asyncio

from factory.errors import TeacherError
from factory.teachers.base import Completion, Request, Teacher


class BatchingTeacher(Teacher):
    max_batch: int = 1

    def __init__(self) -> None:
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None

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

    async def _serve(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            batch = [(r, f) for r, f in batch if not f.cancelled()]
            if not batch:
                continue
            try:
                results = await asyncio.to_thread(self._generate, [r for r, _ in batch])
            except Exception as err:  # one bad batch fails its requests, not the worker
                for _, f in batch:
                    if not f.done():
                        f.set_exception(TeacherError(f"generation failed: {err}"))
                continue
            for (_, f), result in zip(batch, results):
                if not f.done():
                    f.set_result(result)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
