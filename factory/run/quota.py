"""Exact-size, balanced datasets: `generate.keep`, `generate.balance`, top-up rounds.

The cells of a balance are the values (or combinations of values) of seed variables;
each gets a quota of the `keep` total, in proportion to its weight (largest remainder,
so the quotas add up to `keep` exactly). After each round the filters run, each cell's
kept count is compared with its quota, and the next round asks only for cells still
short, sized from the acceptance rate each cell has shown so far. A top-up unit is the
next unit index whose seed values fall in a short cell: units are still a pure function
of their index, so a rerun asks for exactly the same prompts.

The last stage of a balanced run drops what is over a quota (`surplus`), in sample
order: the dataset ends with exactly `keep` records, the same ones on every rerun.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from typing import Any, Iterable, Iterator

from factory.core.errors import ConfigError
from factory.core.record import Record
from filters.base import Stage

# A top-up round is sized from what each cell has shown so far: `kept` of `requested`
# samples. Its acceptance lies inside a Wilson interval that narrows as those samples
# grow. A round asks for enough to fill the cell even at the interval's low end (FILL_Z:
# it falls short about once in 700), unless that could overfill the cell by more than
# OVERFILL of its quota at the high end (OVERFILL_Z: about once in 100); then it asks for
# the shortfall plus that allowance at the high end, and the next round, with more
# evidence, finishes. So what the filters pass beyond the quotas stays within about
# OVERFILL of keep, and a cell with enough evidence is filled in one round. With no
# evidence (the high end is 1) a round asks for the shortfall and the allowance. A rate
# below FLOOR_RATE counts as FLOOR_RATE: a cell that has kept nothing asks for a bounded round.
FILL_Z = 3.0
OVERFILL_Z = 2.33
OVERFILL = 0.2
FLOOR_RATE = 0.05
MAX_CELLS = 10_000

Cell = tuple


class Quotas:
    def __init__(self, keep: int, variables: list[str], weights: dict[Cell, float]):
        self.keep = keep
        self.variables = variables
        self.weights = weights
        self.targets = _apportion(keep, weights)

    def cell(self, seed: dict[str, Any]) -> Cell | None:
        """The cell these seed values fall in; None when no cell has them (weight 0)."""
        key = tuple(_key(seed.get(v)) for v in self.variables)
        return key if key in self.targets else None

    def label(self, cell: Cell) -> str:
        return ", ".join(f"{v}={k}" for v, k in zip(self.variables, cell)) if self.variables else "all"

    def short(self, kept: Counter) -> dict[Cell, int]:
        return {c: t - kept[c] for c, t in self.targets.items() if kept[c] < t}


def build_quotas(generate, seeds, where: str) -> Quotas | None:
    """The quotas `generate.keep` and `generate.balance` ask for; ConfigError (exit 2)
    for a balance that names no seed variable, a value the variable does not have, or
    a weight that is not a positive number."""
    keep, balance = getattr(generate, "keep", None), getattr(generate, "balance", None)
    if keep is None:
        if balance is not None:
            raise ConfigError(f"{where}: generate.balance: needs generate.keep (the total to divide among the cells)")
        return None
    if balance is None:
        return Quotas(keep, [], {(): 1.0})
    values = dict(zip(seeds.names, seeds.lists))
    if isinstance(balance, str):
        balance = [balance]
    if isinstance(balance, list):
        balance = {name: None for name in balance}
    per_variable: list[list[tuple[str, float]]] = []
    for name, weights in balance.items():
        if name not in values:
            raise ConfigError(f"{where}: generate.balance: {name!r} is not a seed variable "
                              f"(seeds: {', '.join(seeds.names) or 'none'})")
        known = list(dict.fromkeys(_key(v) for v in values[name]))
        if weights is None:
            per_variable.append([(k, 1.0) for k in known])
            continue
        for value, weight in weights.items():
            if str(value) not in known:
                raise ConfigError(f"{where}: generate.balance.{name}: {value!r} is not a value of seeds.{name}")
            if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0:
                raise ConfigError(f"{where}: generate.balance.{name}.{value}: expected a weight >= 0")
        per_variable.append([(str(v), float(w)) for v, w in weights.items() if w > 0])
    count = math.prod(len(p) for p in per_variable)
    if count == 0:
        raise ConfigError(f"{where}: generate.balance: every weight is 0")
    if count > MAX_CELLS:
        raise ConfigError(f"{where}: generate.balance: {count:,} cells; at most {MAX_CELLS:,}")
    weights = {tuple(k for k, _ in combo): math.prod(w for _, w in combo)
               for combo in itertools.product(*per_variable)}
    return Quotas(keep, list(balance), weights)


def plan_round(quotas: Quotas, kept: Counter, requested: Counter, per_unit: int, seed_of, start: int,
               scan_limit: int) -> list[int]:
    """The units of the next top-up round: for each short cell, round_size samples (in
    whole units), taken in index order from `start`. Only counts decide it, so the same
    stored verdicts give the same round whatever the batch or the concurrency."""
    need = {cell: math.ceil(round_size(short, quotas.targets[cell], kept[cell], requested[cell]) / per_unit)
            for cell, short in quotas.short(kept).items()}
    units: list[int] = []
    index = start
    while any(need.values()) and index < start + scan_limit:
        cell = quotas.cell(seed_of(index))
        if need.get(cell):
            units.append(index)
            need[cell] -= 1
        index += 1
    return units


def round_size(short: int, quota: int, kept: int, requested: int) -> int:
    """Samples to ask for a cell `short` of its `quota` that has kept `kept` of the
    `requested` samples so far: enough at the low end of its acceptance, capped by
    what overfills it by at most OVERFILL of its quota at the high end."""
    low, _ = wilson(kept, requested, FILL_Z)
    _, high = wilson(kept, requested, OVERFILL_Z)
    filled_when_low = short / max(low, FLOOR_RATE)
    at_most_overfilled = (short + OVERFILL * quota) / max(high, FLOOR_RATE)
    return math.ceil(min(filled_when_low, at_most_overfilled))


def wilson(successes: int, trials: int, z: float) -> tuple[float, float]:
    """The Wilson score interval of a success rate: (0, 1) with no trials."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    spread = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    return max(0.0, centre - spread), min(1.0, centre + spread)


def kept_by_cell(quotas: Quotas, records: Iterable[Record]) -> Counter:
    return Counter(quotas.cell(r.metadata.get("seed") or {}) for r in records)


class Surplus(Stage):
    """The last stage of a `keep` run: at most each cell's quota, in sample order."""

    name = "quota"

    class Config(Stage.Config):
        # Part of the stage's verdict key: another keep or balance decides anew.
        keep: int
        cells: list[tuple[list[str], int]]

    def __init__(self, quotas: Quotas):
        super().__init__(self.Config(keep=quotas.keep, cells=[(list(c), t) for c, t in quotas.targets.items()]))
        self.quotas = quotas
        self.kept_cells: Counter = Counter()

    def process(self, records: Iterable[Record]) -> Iterator[Record]:
        for record in records:
            cell = self.quotas.cell(record.metadata.get("seed") or {})
            if cell is None:
                self.drop(record, "surplus", "its seed values are in no cell of generate.balance")
            elif self.kept_cells[cell] >= self.quotas.targets[cell]:
                self.drop(record, "surplus", f"the quota of {self.quotas.label(cell)} "
                                             f"({self.quotas.targets[cell]}) is full")
            else:
                self.kept_cells[cell] += 1
                yield record

    def funnel(self) -> dict[str, Any]:
        # Kept per cell, by label: stored with the verdicts, so a replay reports it too.
        return {**super().funnel(), "cells": {self.quotas.label(c): n for c, n in self.kept_cells.items()}}


def _apportion(total: int, weights: dict[Cell, float]) -> dict[Cell, int]:
    whole = sum(weights.values())
    exact = {c: total * w / whole for c, w in weights.items()}
    out = {c: math.floor(x) for c, x in exact.items()}
    left = total - sum(out.values())
    # Largest remainder; ties go to the earlier cell, so the split is the same every time.
    for c in sorted(exact, key=lambda c: -(exact[c] - out[c]))[:left]:
        out[c] += 1
    return out


def _key(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
