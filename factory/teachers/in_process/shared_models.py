"""Models loaded in this process, shared by the in-process teachers that load the same one.

Teachers that differ only in sampling (a preference task's candidates, a dialogue's two
roles, a judge on the generation model) would each load a copy: on a GPU the second copy
of a 7B model, or a second vLLM engine, does not fit. They share one instead, and take
turns with it (neither transformers' tokenizers nor vLLM's engine may be driven from two
threads at once). The map holds models weakly: a model stays while a teacher holds it,
and goes when the last one closes or is dropped.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Callable, Hashable


class Loaded:
    """A loaded model (whatever its backend keeps) and the lock its users take turns on."""

    def __init__(self, value: Any):
        self.value = value
        self.turn = threading.Lock()


_LOADED: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_LOADING = threading.Lock()


def shared(key: Hashable, load: Callable[[], Any]) -> Loaded:
    """The model under `key`, loaded by `load()` when no teacher holds it yet."""
    with _LOADING:  # one load at a time: a second teacher on the same model waits for the first's
        loaded = _LOADED.get(key)
        if loaded is None:
            loaded = _LOADED[key] = Loaded(load())
        return loaded


def loaded_count() -> int:
    """How many models are loaded and held (for tests)."""
    return len(_LOADED)
