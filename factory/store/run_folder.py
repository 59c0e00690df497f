"""An output folder while a command works in it: locked, its store open, the invocation
recorded, and its outputs (views of the store) swapped in only when the run is complete.

The outputs (dataset/, the export formats, README.md, report.html, rejected.jsonl,
run.json) are built in a fresh folder beside them and moved in together; a run that
did not finish removes the earlier ones and writes only run.json with its status, so
no file from an earlier configuration survives and nothing partial looks finished.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from factory.core.files import atomic_write_text, replace_path
from factory.config.formats import FORMATS
from factory.store.run_store import RunStore

# Everything a finished run shows; the store, its lock, caches and logs are not views.
VIEWS = ("dataset", *(f.file for f in FORMATS.values()), "rejected.jsonl", "README.md", "report.html",
         "compare.json", "pipeline", "run.json")


class RunFolder:
    def __init__(self, out_dir: Path, command: str):
        self.out_dir = out_dir
        self.command = command
        self.fresh = not out_dir.exists()
        self.store: RunStore | None = None
        self._staging: Path | None = None

    def __enter__(self) -> "RunFolder":
        self.store = RunStore.open(self.out_dir)
        try:
            self.store.begin_invocation(self.command)
        except BaseException:
            self.store.close()
            raise
        return self

    def __exit__(self, kind, err, tb) -> None:
        store = self.store
        if store.invocation is not None and store.db is not None:
            status = {None: "complete"}.get(kind, getattr(err, "status", "failed"))
            try:
                store.end_invocation(status, getattr(self, "stats", {}))
            except Exception:
                if kind is None:
                    raise
        if self._staging is not None:  # a run that did not publish its views: they go with it
            shutil.rmtree(self._staging, ignore_errors=True)
        nothing_stored = store.db is not None and not store.requests() and not store.has_legacy
        try:
            store.close()
        except Exception:
            if kind is None:
                raise  # else the error already on its way says what went wrong
        if kind is not None and self.fresh and nothing_stored and getattr(err, "status", None) is None:
            # Failed before anything was asked or paid (a teacher that cannot load, a
            # bad input): leave no folder behind, as if the run had never started.
            shutil.rmtree(self.out_dir, ignore_errors=True)

    # -- views ------------------------------------------------------------------------

    def staging(self) -> Path:
        """A fresh folder to build the views in, removed when the command ends unless
        `publish` swapped it in. Any other is left by an earlier process that did not
        finish (the folder's lock says no one works in it now): removed."""
        for stale in self.out_dir.glob(".staging-*"):
            shutil.rmtree(stale, ignore_errors=True)
        self._staging = self.out_dir / f".staging-{os.getpid()}"
        self._staging.mkdir(parents=True)
        return self._staging

    def publish(self, staging: Path) -> None:
        """Swap the views built in `staging` in; views it lacks are removed. run.json goes
        last, so a reader never sees a finished status beside half-swapped files."""
        (self.out_dir / "run.json").unlink(missing_ok=True)
        for name in VIEWS:
            built = staging / name
            if built.exists():
                if name != "run.json":
                    replace_path(built, self.out_dir / name)
            else:
                _remove(self.out_dir / name)
        if (staging / "run.json").exists():
            os.replace(staging / "run.json", self.out_dir / "run.json")
        shutil.rmtree(staging, ignore_errors=True)
        self._staging = None

    def unfinished(self, info: dict[str, Any]) -> None:
        """A run that stopped before it was complete: run.json with its status, no other view."""
        for name in VIEWS:
            _remove(self.out_dir / name)
        atomic_write_text(self.out_dir / "run.json", json.dumps(info, indent=2, ensure_ascii=False, default=str) + "\n")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def whole_run_usage(store: RunStore, current: str = "running") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """What every invocation of the run asked and paid, from the store's own requests
    (so a killed invocation's requests count too), and the list of invocations (this
    one with the status `current`)."""
    per: dict[int | None, dict[str, float]] = {}
    rows = store.db.execute(
        "SELECT invocation, COUNT(*), SUM(json_extract(value, '$.completion.prompt_tokens')),"
        " SUM(json_extract(value, '$.completion.completion_tokens')), SUM(json_extract(value, '$.cost')),"
        " SUM(json_extract(value, '$.error') IS NOT NULL), SUM(json_extract(value, '$.completion.cached_tokens')),"
        " SUM(json_extract(value, '$.completion.reasoning_tokens')) FROM requests GROUP BY invocation")
    for invocation, count, prompt, completion, cost, errors, cached, reasoning in rows:
        per[invocation] = {"requests": count, "prompt_tokens": int(prompt or 0),
                           "completion_tokens": int(completion or 0), "cached_tokens": int(cached or 0),
                           "reasoning_tokens": int(reasoning or 0), "cost": round(cost or 0.0, 6),
                           "unusable_answers": int(errors or 0)}
    invocations = []
    for inv in store.invocations():
        used = per.pop(inv["id"], None)
        if inv["status"] == "migrated":
            # What 0.1 paid for, counted when it was adopted; its rows here are those same answers.
            used = dict(inv.get("usage", {}))
        inv = {k: v for k, v in inv.items() if k not in ("usage", "timeline")}
        inv["usage"] = used or {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0}
        if inv["id"] == store.invocation:
            inv["status"] = current
        inv["started"] = _iso(inv["started"])
        inv["ended"] = _iso(inv["ended"]) if inv.get("ended") else None
        invocations.append(inv)
    total: dict[str, float] = {}
    for inv in invocations:
        total = _add(total, inv["usage"])
    for leftover in per.values():  # requests of an invocation whose row is gone: still paid
        total = _add(total, leftover)
    total["cost"] = round(total.get("cost", 0.0), 6)
    return total, invocations


def answered_since(store: RunStore, since: float) -> dict[str, float]:
    """What the requests `store` answered since `since` used, counted as an engine counts
    what it sends (RunStats' names): answers `sent`, unusable ones `bad_responses`, their
    tokens, cost and latency. For requests another process asked (a shard): its store
    knows them all, even those of a worker that died before it could say."""
    row = store.db.execute(
        "SELECT SUM(json_extract(value, '$.error') IS NULL), SUM(json_extract(value, '$.error') IS NOT NULL),"
        " SUM(json_extract(value, '$.completion.prompt_tokens')), SUM(json_extract(value, '$.completion.completion_tokens')),"
        " SUM(json_extract(value, '$.completion.cached_tokens')), SUM(json_extract(value, '$.completion.reasoning_tokens')),"
        " SUM(json_extract(value, '$.cost')), SUM(json_extract(value, '$.latency')) FROM requests WHERE created >= ?",
        (since,)).fetchone()
    names = ("sent", "bad_responses", "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens")
    out: dict[str, float] = {name: int(value or 0) for name, value in zip(names, row)}
    out["cost"], out["latency_total"] = row[6] or 0.0, row[7] or 0.0
    return out


def whole_run_timeline(store: RunStore, most: int = 300) -> list[list[float]]:
    """[active seconds into the run, requests/s, mean latency s]: each invocation's
    seconds follow the last one's, so a resumed run's chart has no gaps of idle days."""
    rows = store.db.execute(
        "SELECT invocation, CAST(created AS INTEGER), COUNT(*), SUM(json_extract(value, '$.latency'))"
        " FROM requests WHERE json_extract(value, '$.latency') IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2")
    seconds: dict[int, list[float]] = {}
    offset = 0
    current = first = last = None
    for invocation, second, count, latency in rows:
        if first is None or invocation != current:  # salvaged rows: invocation NULL, sorted first
            if last is not None:
                offset += last - first + 1
            current, first = invocation, second
        last = second
        seconds[offset + second - first] = [count, latency or 0.0]
    if not seconds:
        return []
    end = max(seconds) + 1
    step = max(1, -(-end // most))
    points = []
    for start in range(0, end, step):
        count = sum(seconds.get(s, (0, 0.0))[0] for s in range(start, start + step))
        latency = sum(seconds.get(s, (0, 0.0))[1] for s in range(start, start + step))
        points.append([start, round(count / step, 3), round(latency / count, 4) if count else None])
    return points


def _add(a: dict, b: dict) -> dict:
    return {k: a.get(k, 0) + b.get(k, 0) for k in {*a, *b}}


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(seconds))

