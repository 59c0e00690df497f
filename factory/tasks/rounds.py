"""Round-based generation: what round r asks depends on everything rounds before it made.

Self-Instruct's few-shot prompts sample the pool of instructions accepted so far, and a
new instruction is checked against that pool; Magpie's queries are deduplicated against
all earlier ones. Done as units finish, both would depend on which request came back
first, and the dataset on the window size. So the units are cut into rounds of a fixed
size: round r starts from the state round r-1 left, fixed before any of its requests are
sent, and settles its candidates in sample order. The same pipeline then gives the same
dataset whatever the window, batch size or timing.

Each round is computed once per run, by whichever unit needs it first, and shared by the
others. A resumed run recomputes the rounds its pending units need from the journal
(their requests replay, nothing is sent twice), so the state is never stored twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Rounds(Generic[T]):
    """`get(r)`: round r's result, computed by `compute(r)` at most once per event loop."""

    def __init__(self, compute: Callable[[int], Awaitable[T]]):
        self.compute = compute
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rounds: dict[int, asyncio.Future] = {}

    async def get(self, r: int) -> T:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new run (a rerun in the same process): nothing carries over
            self._loop, self._rounds = loop, {}
        if r not in self._rounds:
            future = self._rounds[r] = asyncio.ensure_future(self.compute(r))
            # Retrieved here too, so a round that failed after its units were cancelled
            # (a stop) is not reported as an exception nobody saw.
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
        # Shielded: one unit cancelled (a stop) does not cancel the round for the others.
        return await asyncio.shield(self._rounds[r])


def refuse_shards(pipeline, task: str, why: str) -> None:
    """Round-based tasks run in one process: a Ray shard would not see the other shards'
    rounds. Raises ConfigError (exit 2, before anything is sent) for `executor.type: ray`."""
    from factory.core.errors import ConfigError

    executor = pipeline.config.executor
    if executor.type == "ray":
        raise ConfigError(f"{pipeline.path}: executor.type: {task} runs in rounds that depend on each other "
                          f"({why}), which shards on a Ray cluster would not see; use executor.type local")
