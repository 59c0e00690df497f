"""No progress bars from the libraries factory drives while a run works.

datasets' map and save, the Hub's downloads and transformers' shard loading each draw
tqdm bars: on a terminal they tear through factory's own progress line, in a log they
are noise. Each library has its own switch. Importing a library only to reach its
switch would cost a second or more (transformers, datasets) in runs that never use
it, so a library not imported yet is switched off the moment something imports it,
by a finder on `sys.meta_path` that wraps that one module's loader. What was on
before is on again afterwards (factory may be a library in a notebook).
"""

from __future__ import annotations

import importlib.abc
import os
import sys
import threading
from contextlib import contextmanager
from typing import Callable, Iterator


def _datasets():
    import datasets

    return datasets.is_progress_bar_enabled, datasets.disable_progress_bars, datasets.enable_progress_bars


def _hub():
    from huggingface_hub import utils

    return (lambda: not utils.are_progress_bars_disabled()), utils.disable_progress_bars, utils.enable_progress_bars


def _transformers():
    from transformers.utils import logging

    return logging.is_progress_bar_enabled, logging.disable_progress_bar, logging.enable_progress_bar


# The module whose import makes the switch reachable -> (is on, off, on).
SWITCHES: dict[str, Callable[[], tuple[Callable, Callable, Callable]]] = {
    "datasets": _datasets,
    "huggingface_hub.utils": _hub,
    "transformers.utils.logging": _transformers,
}


class _Bars:
    """The switches turned off so far, with whether each was on, to turn back on."""

    def __init__(self):
        self.lock = threading.Lock()
        self.was_on: dict[str, tuple[bool, Callable]] = {}

    def off(self, module: str) -> None:
        try:
            enabled, off, on = SWITCHES[module]()
        except ImportError:
            return
        was_on = enabled()
        with self.lock:
            if module == "transformers.utils.logging" and "huggingface_hub.utils" in self.was_on:
                # transformers starts with the Hub's state, which is off here because of us.
                was_on = self.was_on["huggingface_hub.utils"][0]
            self.was_on.setdefault(module, (was_on, on))
        off()

    def restore(self) -> None:
        with self.lock:
            turned, self.was_on = list(self.was_on.values()), {}
        for was_on, on in turned:
            if was_on:
                on()


class _OnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for a watched module it asks the finders after it and wraps
    the loader they give, so that the switch is turned off once the module has run."""

    def __init__(self, watched: set[str], bars: _Bars):
        self.watched = watched
        self.bars = bars

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.watched:
            return None
        for finder in sys.meta_path:
            # Nested runs each have a finder: only the real finders are asked.
            if isinstance(finder, _OnImport) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader, fullname, self)
                return spec
        return None


class _Loader(importlib.abc.Loader):
    def __init__(self, loader, name: str, finder: _OnImport):
        self.loader = loader
        self.name = name
        self.finder = finder

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)  # a package's whole __init__: its switch exists now
        # Every run watching it (nested runs each have a finder), the earliest first: it
        # alone saw the switch on, and it alone turns it back on when it ends.
        for finder in reversed([f for f in sys.meta_path if isinstance(f, _OnImport)] or [self.finder]):
            if self.name in finder.watched:
                finder.watched.discard(self.name)
                finder.bars.off(self.name)

    def __getattr__(self, name):  # the wrapped loader's get_code, get_filename, is_package ...
        if name == "loader":  # not set yet (a copy being made): no wrapped loader to ask
            raise AttributeError(name)
        return getattr(self.loader, name)


@contextmanager
def library_progress_off() -> Iterator[None]:
    """Every library's progress bars off inside, and any other tqdm's (tqdm >= 4.66 reads
    TQDM_DISABLE); as they were afterwards."""
    bars = _Bars()
    finder = _OnImport({name for name in SWITCHES if name not in sys.modules}, bars)
    for name in SWITCHES:
        if name in sys.modules:
            bars.off(name)
    sys.meta_path.insert(0, finder)
    env = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if finder in sys.meta_path:
            sys.meta_path.remove(finder)
        bars.restore()
        if env is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = env
