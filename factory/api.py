"""The whole factory from Python: `factory.Pipeline`, the same calls the CLI makes.

    import factory
    pipe = factory.Pipeline.from_yaml("pipelines/qa.yaml", overrides={"generate.count": 50})
    ds = pipe.run(out="outputs/qa")          # a datasets.Dataset of the kept samples
    ds.run_dir, pipe.result.funnel           # the run folder; counts per stage

Everything is checked when the Pipeline is made (config, templates, seeds, filters),
so a mistake raises a `factory.core.errors.UserError` (ConfigError, TemplateError, ...)
before anything is sent. `run` raises `Stopped` when the run ended early (an outage,
a stop); the same call resumes it. Inside a running event loop (a notebook) the run
goes to a worker thread with a loop of its own (factory/core/blocking.py); `arun` awaits it
without blocking the caller's loop.
"""

from __future__ import annotations

import asyncio
import copy
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from factory.core import constants
from factory.core.errors import ConfigError
from factory.config.pipeline import (
    build_pipeline,
    mapping_overrides,
    parse_overrides,
    read_pipeline_file,
    refuse_url_credentials,
)
from factory.core.blocking import call_blocking

# What a dry run changes: every teacher is the loopback, started for the run.
DRY_RUN = {"teacher.backend": "openai", "teacher.base_url": "http://dry-run.invalid/v1",
           "teacher.api_key_env": None, "teacher.model": "loopback-dry-run", "teacher.launch": None,
           # batch mode stays batch mode, against the loopback's batch API, polled briskly
           "teacher.batch.poll_interval": 0.2, "teacher.batch.gather": 0.2}
DICT_PATH = "<dict>"  # how a pipeline given as a dict is named in messages and run.json


class Pipeline:
    """A checked pipeline, ready to run. Make one with `from_yaml` or `from_dict`."""

    def __init__(self, raw: dict, path: Path, overrides: dict[str, Any] | list[str] | None = None,
                 base_dir: Path | None = None, dry_run: bool = False, formats: list[str] = ()):
        from factory.run.prepare import prepare

        parsed = _parse_overrides(overrides)
        if dry_run:
            _check_own_address(raw, parsed, path)
            parsed += mapping_overrides(DRY_RUN)
        self.file = build_pipeline(_with_overrides(raw, parsed), path, [], base_dir)
        # For the run's own copy of what it ran (snapshot.py): the file as read, the changes on top.
        self.file.text = path.read_text(encoding="utf-8") if path.is_file() else ""
        self.file.overrides = [f"{'.'.join(keys)}={json.dumps(value)}" for keys, value in parsed]
        if formats:  # the CLI's --format adds to output.formats
            output = self.file.config.output
            output.formats = list(dict.fromkeys([*output.formats, *formats]))
        self.dry_run = dry_run
        self.prepared = prepare(self.file)  # formats are checked here, against the task
        self.result = None  # the last run's RunResult: out_dir, kept, rejected, funnel, usage

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | list[str] | None = None, *,
                  dry_run: bool = False, formats: list[str] = ()) -> Pipeline:
        """The pipeline file at `path`; `overrides` take the keys `--set` takes, as a dict
        ({"generate.count": 10}) or as `KEY=VALUE` strings. Relative paths in the file are
        taken from its folder. `dry_run`: every teacher is the built-in loopback (free).
        `formats`: more output formats beside the file's (the CLI's --format)."""
        path = Path(path)
        return cls(read_pipeline_file(path), path, overrides, dry_run=dry_run, formats=formats)

    @classmethod
    def from_dict(cls, config: dict[str, Any], overrides: dict[str, Any] | None = None, *,
                  base_dir: str | Path | None = None, dry_run: bool = False) -> Pipeline:
        """A pipeline from a dict of the pipeline file's keys, with no file. Relative paths
        (seed files, documents, prompts_dir) and the `prompts/` folder are taken from
        `base_dir`, by default the current folder; templates are also found in the
        built-in prompts. Seed values may be a `datasets.Dataset` (its rows, as dicts) or
        any list, dicts included."""
        base = Path(base_dir) if base_dir is not None else Path.cwd()
        return cls(config, Path(DICT_PATH), overrides, base_dir=base.resolve(), dry_run=dry_run)

    @property
    def name(self) -> str:
        return self.file.config.name

    def output_dir(self, out: str | Path | None = None) -> Path:
        """Where `run(out)` writes: `out`, else output.dir, else outputs/<name>/ (a dry run's
        default gets `-dry-run` on the end, so it never replaces a real run's output)."""
        path = self.file.output_dir(str(out) if out is not None else None)
        if self.dry_run and out is None and not self.file.config.output.dir:
            path = path.with_name(path.name + "-dry-run")
        return path

    def execute(self, out: str | Path | None = None, *, show_progress: bool = False,
                grace: float | None = None):
        """Run it and return the RunResult (the CLI's call). Raises Stopped when the run ended early."""
        from factory.core.stopping import Stop

        stop = Stop(constants.DRAIN_GRACE_S if grace is None else grace)

        def work():
            return self._execute(self.output_dir(out), show_progress, stop)

        # On a worker thread (inside a running loop), signals reach the waiting thread, which
        # passes them to the run through `stop`: the first drains, a second stops at once.
        self.result = call_blocking(work, stop)
        return self.result

    def _execute(self, out: Path, show_progress: bool, stop):
        from factory.run.generate import run_pipeline

        if not self.dry_run:
            return run_pipeline(self.prepared, out, show_progress=show_progress, stop=stop)
        from factory.loopback import LoopbackOptions, serve_in_thread

        with serve_in_thread(LoopbackOptions(latency_median=0.02, latency_sigma=0.5, ledger=False)) as (url, _):
            self.file.config.teacher.base_url = url
            self.file.dry_run = True
            print(f"factory: dry run against the loopback teacher at {url}", file=sys.stderr)
            return run_pipeline(self.prepared, out, show_progress=show_progress, stop=stop)

    def run(self, out: str | Path | None = None, *, show_progress: bool = False, grace: float | None = None):
        """Run the pipeline into `out` and return the kept samples as a `datasets.Dataset`
        (empty when nothing was kept: see `result.funnel` and `run_dir/rejected.jsonl`).

        The dataset is `run_dir/dataset` loaded; `ds.run_dir` is the run folder (on this
        object only: `map`, `select` ... make new ones) and `self.result` the run's counts.
        A finished run's rerun replays everything from its store and pays for nothing."""
        result = self.execute(out, show_progress=show_progress, grace=grace)
        return load_kept(result.out_dir)

    async def arun(self, out: str | Path | None = None, *, show_progress: bool = False,
                   grace: float | None = None):
        """`run`, awaited on a worker thread: the caller's event loop keeps running meanwhile."""
        return await asyncio.to_thread(self.run, out, show_progress=show_progress, grace=grace)

    def __repr__(self) -> str:
        return f"factory.Pipeline({self.name!r}, task={self.file.config.generate.task!r})"


def load_kept(out_dir: Path):
    """A finished run's dataset, with `run_dir` set to its folder."""
    import datasets

    ds = datasets.load_from_disk(str(Path(out_dir) / "dataset"))
    ds.run_dir = Path(out_dir)
    return ds


def _parse_overrides(overrides: Any) -> list[tuple[list[str], Any]]:
    """The API's two forms, {"generate.count": 10} or ["generate.count=10"]; any other
    value is the caller's mistake, said in one ConfigError."""
    if overrides is None or isinstance(overrides, Mapping):
        return mapping_overrides(overrides or {})
    if isinstance(overrides, (list, tuple)) and all(isinstance(pair, str) for pair in overrides):
        return parse_overrides(list(overrides))
    raise ConfigError(f"overrides: expected a dict of dotted keys ({{'generate.count': 50}}) or a list of "
                      f"'KEY=VALUE' strings, not {overrides!r:.80}")


def _check_own_address(raw: Any, parsed: list[tuple[list[str], Any]], path: Path) -> None:
    """A dry run puts the loopback in the teacher's place, but the run's copy of the
    pipeline keeps the user's own base_url: a password in it is refused all the same."""
    teacher = _with_overrides(raw, parsed).get("teacher") if isinstance(raw, dict) else None
    try:
        refuse_url_credentials(teacher.get("base_url") if isinstance(teacher, dict) else None)
    except ValueError as err:
        raise ConfigError(f"{path}: teacher.base_url: {err}") from None


def _with_overrides(raw: Any, overrides: list[tuple[list[str], Any]]) -> Any:
    """A copy of `raw` with the overrides applied, and seed values given as a Dataset made
    the list of its rows (dicts), which the config and the run store's digest read as data."""
    from factory.config.pipeline import apply_overrides

    if not isinstance(raw, dict):
        return raw  # build_pipeline says what is wrong with it
    return _dataset_rows(apply_overrides(copy.deepcopy(_dataset_rows(raw)), overrides))


def _dataset_rows(raw: dict) -> dict:
    seeds = raw.get("seeds")
    if not isinstance(seeds, dict):
        return raw
    from factory.inputs.records import is_dataset

    return {**raw, "seeds": {name: value.to_list() if is_dataset(value) else value
                             for name, value in seeds.items()}}
