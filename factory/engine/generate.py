"""Generation units: asking the teacher for the pending ones, and reading back what the
store holds of them.

A unit is one seed combination's requests; its results (kept records and rejections)
are stored in the run store's units table under the GENERATE scope and the run's
fingerprint. The local run and every shard (factory/executors/) generate through
`generate_units`, so a unit ends the same wherever it ran.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any, Iterator

from factory.config.pipeline import PipelineFile
from factory.core.cost import Budget
from factory.core.record import Record, Rejection
from factory.core.stopping import Stop
from factory.engine.engine import RunStats, run_task
from factory.engine.open_engine import open_engine
from factory.engine.progress import Progress
from factory.store.run_store import RunStore
from factory.tasks.base import RoleAsker, Task
from factory.teachers.base import Teacher

GENERATE = "generate"  # the units table's scope for generation units
REFUSED = "refused"  # the rejection reason of a unit whose request the teacher refused for good


async def generate_units(task: Task, pipeline: PipelineFile, store: RunStore, stats: RunStats, stop: Stop,
                         fingerprint: str, pending: list[int], progress: Progress,
                         budget: Budget) -> tuple[dict[str | None, Teacher], dict]:
    """Generate the `pending` units; returns the teachers used (None: the pipeline's) and
    how the in-flight window was sized."""
    main = pipeline.config.teacher

    def sink(unit: int, results: list[Record | Rejection]) -> None:
        rows = [_result_row(r) for r in results]
        if any(isinstance(r, Record) for r in results):
            state = "done"
        elif results and all(r.reason == REFUSED for r in results):
            state = "failed"
        else:
            state = "rejected"
        store.finish_unit(GENERATE, unit, fingerprint, state, rows)
        store.commit_soon(asyncio.get_running_loop())

    async with open_engine(main, store, stats, stop, budget) as engine, AsyncExitStack() as stack:
        by_role = {}
        for role, config in task.role_teachers(pipeline).items():
            if config != main:  # a role that changes nothing shares the pipeline's engine
                by_role[role] = await stack.enter_async_context(open_engine(config, store, stats, stop, budget))
        for opened in (engine, *by_role.values()):
            if hasattr(opened.teacher, "progress_part"):  # batch mode: batches and the requests in them
                progress.parts.append(opened.teacher.progress_part)
                opened.teacher.on_event = progress.event
        try:
            progress.start()
            if pending:
                await run_task(task, engine, sink, progress.update, asker=RoleAsker(engine, by_role),
                               units=iter(pending))
        finally:
            progress.close()
            store.commit()
        teachers = {None: engine.teacher, **{role: e.teacher for role, e in by_role.items()}}
        return teachers, engine.concurrency()


def _result_row(item: Record | Rejection) -> dict[str, Any]:
    if isinstance(item, Record):
        return {"id": item.id, "messages": item.messages, "metadata": item.metadata}
    return {"id": item.id, "stage": item.stage, "reason": item.reason, "detail": item.detail,
            "messages": item.messages, "metadata": item.metadata}


def unit_rows(store: RunStore, fingerprint: str, units: list[int]) -> Iterator[dict]:
    """The stored rows of these units, in unit order: the same dataset whatever the timing."""
    wanted = set(units)
    for unit, _, rows in store.unit_results(GENERATE, fingerprint, max(units, default=-1) + 1):
        if unit in wanted:
            yield from rows


def records_from_store(store: RunStore, fingerprint: str, units: list[int]) -> Iterator[Record]:
    for row in unit_rows(store, fingerprint, units):
        if "reason" not in row:
            yield Record(row["id"], row["messages"], row["metadata"])


def rejections_from_store(store: RunStore, fingerprint: str, units: list[int]) -> Iterator[dict]:
    for row in unit_rows(store, fingerprint, units):
        if "reason" in row:
            yield row
