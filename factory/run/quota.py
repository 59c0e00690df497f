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

# A round asks for this much more than the observed rates say it needs, so that one
# round usually finishes a cell; a cell that has kept nothing yet is assumed to keep this share.
ROUND_MARGIN = 1.1
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
    """The units of the next top-up round: for each short cell, enough units to fill it
    at the rate it has kept so far, taken in index order from `start`."""
    total_rate = sum(kept.values()) / max(1, sum(requested.values()))
    need: dict[Cell, int] = {}
    for cell, short in quotas.short(kept).items():
        rate = kept[cell] / requested[cell] if requested[cell] and kept[cell] else total_rate
        samples = math.ceil(short / max(rate, FLOOR_RATE) * ROUND_MARGIN)
        need[cell] = math.ceil(samples / per_unit)
    units: list[int] = []
    index = start
    while any(need.values()) and index < start + scan_limit:
        cell = quotas.cell(seed_of(index))
        if need.get(cell):
            units.append(index)
            need[cell] -= 1
        index += 1
    return units


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
