"""The order in which a stage that keeps the first of alike records walks them.

MinHash dedup (in one process and on Ray) and the diversity selection keep, of records
too alike, the one they meet first; with judge scores, the best is met first.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def walk_order(scores: Sequence[float | None], count: int) -> np.ndarray:
    """Record indexes, best judge score first; stable, so ties and unscored records keep
    their input order. With no score at all (or `scores` empty): as they came, 0..count-1."""
    if any(s is not None for s in scores):
        return np.argsort(np.array([-(s if s is not None else -np.inf) for s in scores], dtype=float), kind="stable")
    return np.arange(count)
