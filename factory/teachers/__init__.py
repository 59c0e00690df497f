"""Teacher backends behind one small interface; heavy libraries load only when chosen.
The backends are listed in one table, factory/config/backends.py."""

from __future__ import annotations

from typing import Callable

from factory.config.backends import BACKENDS
from factory.config.pipeline import TeacherConfig
from factory.core.registry import load
from factory.teachers.base import Completion, Request, Teacher


def make_teacher(config: TeacherConfig, on_response: Callable[..., None] | None = None,
                 store=None, stop=None) -> Teacher:
    """`on_response(status, headers)` sees every HTTP response (HTTP backends). Batch mode
    keeps its batches in the run `store` and submits nothing once `stop` is requested."""
    if config.mode == "batch":
        from factory.teachers.batch.batch_teacher import BatchTeacher

        if store is None:
            raise ValueError("batch mode keeps its batches in the run store: pass store")
        return BatchTeacher(config, store, stop)
    backend = BACKENDS[config.backend]
    several = isinstance(config.base_url, list) and backend.replicas is not None
    teacher = load(backend.replicas if several else backend.teacher)
    return teacher(config, on_response=on_response) if backend.http else teacher(config)


__all__ = ["Completion", "Request", "Teacher", "make_teacher"]
