"""`factory init TASK [DIR]`: a ready pipeline of one's own, from a shipped one.

The folder gets the pipeline file, every template it renders (a judge's rubric too),
its seed files and documents, and a README saying how to run it; edit any of them.
The shipped pipelines are found in pipelines/ (factory/core/resources.py), so a pipeline
added there is a task `factory init` offers.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from factory.core.errors import ConfigError
from factory.core.resources import shipped_pipelines
from factory.inputs.pipeline_files import copy_files

PIPELINE_FILE = "pipeline.yaml"


def find_shipped(task: str) -> Path:
    shipped = shipped_pipelines()
    for name in (task, task.replace("_", "-")):
        if name in shipped:
            return shipped[name]
    raise ConfigError(f"factory init: no shipped pipeline {task!r} (shipped: {', '.join(shipped) or 'none'})")


def init_pipeline(task: str, folder: Path | None = None) -> Path:
    """Write the shipped pipeline `task` into `folder` (default ./TASK); returns its pipeline file."""
    from factory.config.pipeline import load_pipeline
    from factory.run.prepare import prepare

    source = find_shipped(task)
    folder = Path(folder) if folder is not None else Path(source.stem)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(f"factory init: {folder} already exists and is not an empty folder; "
                          f"choose a new one (factory init {task} DIR)")
    pipeline = load_pipeline(source)
    prepared = prepare(pipeline)  # the shipped pipeline must itself be sound; sends nothing
    # Beside the folder, by its full name: "." and "x/.." have no name of their own.
    target = Path(os.path.abspath(folder))
    staging = target.with_name(f".{target.name}.init-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _write(pipeline, prepared, source, staging, target)
    except OSError as err:
        raise ConfigError(f"factory init: cannot write {folder}: {err.strerror or err}; choose a folder you can "
                          f"write (factory init {task} DIR)") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder / PIPELINE_FILE


def _write(pipeline, prepared, source: Path, staging: Path, folder: Path) -> None:
    """The new folder's files, built in `staging` and moved to `folder` in one rename."""
    stem = source.stem
    copy_files(pipeline, prepared.templates(), staging)
    shipped_file = staging / source.name
    text = shipped_file.read_text(encoding="utf-8")
    # Its comments say how to run it from a checkout: say it for the new folder.
    text = text.replace(f"pipelines/{source.name}", PIPELINE_FILE).replace("pipelines/", "")
    shipped_file.unlink()
    (staging / PIPELINE_FILE).write_text(text, encoding="utf-8")
    (staging / "README.md").write_text(_readme(pipeline, stem), encoding="utf-8")
    if folder.exists():
        folder.rmdir()  # empty, checked above
    folder.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, folder)


def _readme(pipeline, stem: str) -> str:
    cfg = pipeline.config
    return (f"# {cfg.name}\n\n{cfg.description}\n\n"
            f"Made with `factory init {stem}`. Run it with `factory run {PIPELINE_FILE}` "
            f"(see the whole flow for free first: `factory run {PIPELINE_FILE} --dry-run`); "
            "the dataset lands in `outputs/" + cfg.name + "/`.\n\n"
            f"Edit `{PIPELINE_FILE}` (teacher, seeds, count, filters), the templates under `prompts/`, "
            "and the seed files; `factory validate pipeline.yaml` checks them and shows example prompts "
            "without sending anything.\n")
