"""run_task: nothing a unit produces disappears, and nothing fails silently."""

from __future__ import annotations

import asyncio

import pytest

from factory.config.pipeline import TeacherConfig
from factory.engine.engine import Engine, RunStats, run_task
from factory.core.errors import RequestRefused
from factory.teachers.limits import AdaptiveWindow, RateLimiter
from factory.core.record import Rejection
from factory.core.stopping import Stop
from factory.store.run_store import RunStore
from factory.tasks.base import Task
from factory.teachers.base import Teacher


class Idle(Teacher):
    model = "idle"

    async def complete(self, request):  # never asked by these tasks
        raise AssertionError("no request expected")


class Counting(Task):
    """Units that ask nothing; unit 5 is refused by the teacher when `refuse` is set."""

    name = "counting"
    pipeline_name = "t"

    def __init__(self, units: int, refuse: bool = False):
        self.n, self.refuse, self.started = units, refuse, []

    def units(self) -> int:
        return self.n

    def requested(self) -> int:
        return self.n

    def check(self):
        return []

    async def run_unit(self, unit, asker):
        self.started.append(unit)
        await asyncio.sleep(0)
        if self.refuse and unit == 5:
            raise RequestRefused("context too long")
        return [unit]


def engine(tmp_path) -> Engine:
    teacher = Idle()
    teacher.config = TeacherConfig(backend="openai", base_url="http://127.0.0.1:9/v1")
    return Engine(teacher, RunStore.open(tmp_path), AdaptiveWindow(4), RateLimiter(None, None), RunStats(), stop=Stop(1))


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("where", ["sink", "progress"])
def test_an_exception_in_the_sink_or_the_display_stops_the_run(tmp_path, where):
    task, got = Counting(50), []

    def sink(unit, results):
        if where == "sink" and unit == 7:
            raise Boom("disk said no")
        got.append(unit)

    def progress():
        if where == "progress" and len(got) == 7:
            raise Boom("terminal went away")

    with pytest.raises(Boom):
        asyncio.run(run_task(task, engine(tmp_path), sink, progress))
    assert len(task.started) < 50  # it stopped: no unit started after the failure was seen


def test_a_refused_unit_ends_as_its_samples_rejected_and_the_run_goes_on(tmp_path):
    task, got = Counting(10, refuse=True), {}
    asyncio.run(run_task(task, engine(tmp_path), lambda unit, results: got.update({unit: results})))
    assert sorted(got) == list(range(10))
    (rejection,) = got[5]
    assert isinstance(rejection, Rejection) and rejection.reason == "refused" and "context too long" in rejection.detail


def test_a_stop_starts_no_new_unit(tmp_path):
    task, eng = Counting(1000), engine(tmp_path)
    done = []

    def sink(unit, results):
        done.append(unit)
        if len(done) == 3:
            eng.stop.request("signal", 130, "SIGINT received")

    asyncio.run(run_task(task, eng, sink))
    assert len(task.started) < 1000 and set(done) <= set(task.started)
