"""`generate.keep`: top-up rounds. After each round the filters' verdicts (stored, so
the final pass replays them) say what each quota cell kept; the next round asks only
for the cells still short, until every cell is full or `generate.max_rounds` is spent."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from typing import Any

from factory.core import constants
from factory.engine.generate import records_from_store
from factory.run.prepare import Prepared
from factory.run.quota import Quotas, Surplus, kept_by_cell, plan_round
from factory.store.run_store import RunStore
from factory.tasks.base import Task
from filters.base import StageContext


def kept_by_cell_so_far(prepared: Prepared, quotas: Quotas, store: RunStore, fingerprint: str, units: list[int],
                  context: StageContext) -> Counter:
    """What the filters keep of the units so far, per cell. The stages' verdicts are
    stored, so the final pass over the same records replays them."""
    from filters import build_stages
    from filters.verdicts import through_stages

    stages = build_stages(prepared.pipeline.config.filters, prepared.pipeline)  # fresh counters
    for stage in stages:
        stage.bind(lambda rejection: None, context)
    work = context.out_dir / f".rounds-{os.getpid()}"
    work.mkdir(exist_ok=True)
    try:
        return kept_by_cell(quotas, through_stages(stages, records_from_store(store, fingerprint, units),
                                                   store, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def next_round(task: Task, quotas: Quotas, kept: Counter, units: list[int], done_rounds: int,
                max_rounds: int) -> list[int]:
    """The next top-up round's units; [] when max_rounds is reached or no unit can fill a short cell."""
    if done_rounds >= max_rounds:
        return []
    requested: Counter = Counter()
    for unit in units:
        requested[quotas.cell(task.unit_seed(unit))] += len(task.sample_ids(unit))
    start = max(units, default=-1) + 1
    per_unit = max(1, len(task.sample_ids(start)))
    short = sum(quotas.short(kept).values())
    scan = min(constants.TOP_UP_SCAN_LIMIT, 1000 * short + 10 * task.seeds.size)
    return plan_round(quotas, kept, requested, per_unit, task.unit_seed, start, scan)


def short_message(quotas: Quotas, kept: Counter, rounds: int, max_rounds: int) -> str:
    short = quotas.short(kept)
    cells = "; ".join(f"{quotas.label(c)}: {n} short" for c, n in list(short.items())[:5])
    got = sum(min(kept[c], t) for c, t in quotas.targets.items())
    why = (f"generate.max_rounds ({max_rounds}) reached" if rounds >= max_rounds
           else "no seed combination left for the short cells")
    return (f"incomplete: kept {got} of generate.keep {quotas.keep} after {rounds} round(s): {why} ({cells}); "
            "raise generate.max_rounds (or lower keep) and rerun the same command: nothing answered is paid again")


def quota_summary(task: Task, quotas: Quotas, surplus: Surplus, units: list[int], rounds: int) -> dict[str, Any]:
    requested: Counter = Counter()
    for unit in units:
        requested[quotas.cell(task.unit_seed(unit))] += len(task.sample_ids(unit))
    kept = surplus.outcome().get("cells", {})
    return {"keep": quotas.keep, "rounds": rounds, "variables": quotas.variables,
            "cells": [{"cell": quotas.label(c), "quota": t, "requested": requested[c], "kept": kept.get(quotas.label(c), 0)}
                      for c, t in quotas.targets.items()]}
