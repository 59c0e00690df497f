"""A teacher with its engine: started, journaled, and closed again, in one place.

Generation and every model-calling filter (the judge) open their teacher this way,
so each gets the same in-flight window, rate limits, journal and failure handling.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Callable

from factory.config import TeacherConfig
from factory.engine import Engine, RunStats
from factory.journal import Journal
from factory.limits import AdaptiveWindow, RateLimiter


@asynccontextmanager
async def open_engine(config: TeacherConfig, journal_path: Path, stats: RunStats,
                      before_journal: Callable[[], None] | None = None,
                      journal: Journal | None = None) -> AsyncIterator[Engine]:
    """Start the teacher, then open the journal; `before_journal` runs in between.

    The teacher comes first so that one which cannot be reached or loaded fails
    before anything (an output folder, a journal) is created. Engines of one run (a
    dialogue's user simulator and assistant) share one `journal` when it is given.
    """
    from factory.teachers import make_teacher

    # The window is sized by what the teacher can take; the throttle hook reaches it once it exists.
    teacher = make_teacher(config, on_throttle=lambda: window.on_throttle())
    window = AdaptiveWindow(config.max_concurrency or teacher.default_concurrency)
    await teacher.start()
    try:
        if before_journal is not None:
            before_journal()
        own = journal is None
        journal = Journal(journal_path) if own else journal
        try:
            yield Engine(teacher, journal, window, RateLimiter(config.rpm, config.tpm), stats)
        finally:
            if own:
                journal.close()
    finally:
        await teacher.close()
