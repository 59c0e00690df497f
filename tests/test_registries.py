"""The tables of tasks, teacher backends and output formats name their code by strings
(nothing is imported until chosen): every name must lead to what it says."""

from __future__ import annotations

import pytest

from factory.config.backends import BACKENDS
from factory.config.formats import FORMATS
from factory.config.sizing import Sizing
from factory.config.tasks import TASKS
from factory.core.registry import load
from factory.tasks.base import Task
from factory.teachers.base import Teacher
from factory.teachers.batch.provider import BatchProvider
from filters import REGISTRY, Stage


@pytest.mark.parametrize("name", TASKS)
def test_each_task_names_its_class_and_its_config(name):
    kind = TASKS[name]
    assert issubclass(load(kind.task), Task)
    # The table routes `generate:` to its model by the task's name (one model may serve
    # several tasks that take the same keys): the model must have the `task` key.
    assert issubclass(kind.config, Sizing) and "task" in kind.config.model_fields


@pytest.mark.parametrize("name", BACKENDS)
def test_each_backend_names_its_teacher_and_batch_provider(name):
    backend = BACKENDS[name]
    for path in filter(None, (backend.teacher, backend.replicas)):
        assert issubclass(load(path), Teacher)
    if backend.batch is not None:
        provider = load(backend.batch.provider)
        assert issubclass(provider, BatchProvider) and provider.name == name


@pytest.mark.parametrize("name", FORMATS)
def test_each_format_names_a_module_that_writes_and_reads_it(name):
    f = FORMATS[name]
    if f.module is None:  # the dataset's own rows
        return
    assert callable(load(f"{f.module}:write")) and callable(load(f"{f.module}:read")) and f.card_line
    if f.pairs:
        assert callable(load(f"{f.module}:write_pair")) and f.pair_card_line


@pytest.mark.parametrize("name", REGISTRY)
def test_each_filter_type_names_its_stage(name):
    assert issubclass(load(REGISTRY[name]), Stage)
