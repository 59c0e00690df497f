"""factory as a newcomer meets it: installed from its wheel, a pipeline of one's own from `factory init`."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from factory import __version__
from factory.core.resources import shipped_pipelines
from tests.helpers.checkout import ROOT
from tests.helpers.processes import assert_user_error, factory_cli

# What a wheel is built from (a copy, so the build leaves nothing in the checkout).
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "factory", "filters", "prompts", "pipelines")


def run(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def fresh_venv_beside_this_one(venv: Path) -> Path:
    """A new venv (its python returned) that sees the site-packages of the interpreter
    running the tests, a venv's or the system's alike. `venv --system-site-packages` would
    show it the base interpreter's instead, which lacks what a venv installed. The folders
    go on its path as plain lines of a .pth file, so the .pth files inside them (the
    checkout's editable install among them) are not run: only the wheel's factory is there."""
    made = run([sys.executable, "-m", "venv", str(venv)], venv.parent)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    own = run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], venv.parent)
    assert own.returncode == 0, own.stderr
    borrowed = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    (Path(own.stdout.strip()) / "borrowed-site-packages.pth").write_text(
        "".join(f"{folder}\n" for folder in borrowed if Path(folder).is_dir()))
    return python


@pytest.mark.slow
def test_the_wheel_installs_anywhere_and_starts_a_pipeline(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, source / name)
    dist = tmp_path / "dist"
    # No build isolation: the build needs only setuptools, already here (no network).
    built = run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                 "-w", str(dist), "-q"], tmp_path)
    assert built.returncode == 0, built.stderr
    [wheel] = dist.glob("factory-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {"factory/__init__.py", "filters/__init__.py", "factory/_shipped/prompts/qa/user.j2"} <= names

    # A fresh environment that reuses the dependencies installed where these tests run (no
    # network) but not the checkout: its factory is the wheel's.
    venv = tmp_path / "venv"
    python = fresh_venv_beside_this_one(venv)
    # --ignore-installed: the checkout's own (editable) factory of the same version, seen
    # through the borrowed site-packages, must not count as already satisfied.
    installed = run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed",
                     str(wheel)], tmp_path)
    assert installed.returncode == 0, installed.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {"PYTHONPATH": "", "HF_HUB_OFFLINE": "1"}
    where = run([str(python), "-c", "import factory, filters; print(factory.__file__); print(filters.__file__)"],
                empty, env)
    assert where.returncode == 0, (where.stderr, installed.stdout)
    for line in where.stdout.split():
        assert Path(line).resolve().is_relative_to(venv.resolve()), where.stdout  # not the checkout's

    factory = str(venv / "bin" / "factory")
    version = run([factory, "--version"], empty, env)
    assert version.returncode == 0 and version.stdout.strip() == f"factory {__version__}", version

    started = run([factory, "init", "qa"], empty, env)
    assert started.returncode == 0, started.stderr
    folder = empty / "qa"
    assert (folder / "pipeline.yaml").is_file() and (folder / "README.md").is_file()
    assert {p.relative_to(folder).as_posix() for p in (folder / "prompts").rglob("*.j2")} >= {
        "prompts/qa/system.j2", "prompts/qa/user.j2", "prompts/judge/qa.j2"}

    dry = run([factory, "run", "pipeline.yaml", "--dry-run", "--quiet"], folder, env)
    assert dry.returncode == 0, dry.stderr
    out = folder / "outputs" / "beekeeping-qa-dry-run"
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "complete" and info["funnel"]["kept"] > 0
    # The run keeps the templates it used (the judge's rubric too), the same as init wrote.
    for name in ("qa/user.j2", "judge/qa.j2"):
        assert (out / "pipeline" / "prompts" / name).read_text() == (folder / "prompts" / name).read_text()
    assert str(ROOT) not in (out / "run.json").read_text()


@pytest.mark.parametrize("task", sorted(shipped_pipelines()))
def test_init_writes_a_ready_pipeline_for_every_shipped_task(tmp_path, task):
    folder = tmp_path / "mine"
    made = factory_cli("init", task, str(folder))
    assert made.returncode == 0, made.stderr
    assert "factory run pipeline.yaml" in made.stdout
    assert "factory run pipeline.yaml" in (folder / "README.md").read_text()
    text = (folder / "pipeline.yaml").read_text()
    assert "pipelines/" not in text  # its comments say how to run it from here
    # Everything it reads lies in the folder: validate there, from any current folder.
    checked = factory_cli("validate", str(folder / "pipeline.yaml"))
    assert checked.returncode == 0, checked.stderr
    out = tmp_path / "out"
    dry = factory_cli("run", str(folder / "pipeline.yaml"), "--dry-run", "--quiet", "--out", str(out),
                      "--set", "generate.count=6")
    assert dry.returncode == 0, dry.stderr
    templates = json.loads((out / "run.json").read_text())["templates"]
    for template in templates:  # rendered from the folder's own copies
        assert (folder / "prompts" / template["name"]).is_file()


def test_init_refuses_a_folder_in_use_and_an_unknown_task(tmp_path):
    folder = tmp_path / "taken"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    taken = factory_cli("init", "qa", str(folder))
    assert_user_error(taken.returncode, taken.stderr, ["taken", "not an empty folder"])
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    unknown = factory_cli("init", "poetry", str(tmp_path / "new"))
    assert_user_error(unknown.returncode, unknown.stderr, ["poetry", *sorted(shipped_pipelines())])
    assert not (tmp_path / "new").exists()


def test_version():
    result = factory_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"factory {__version__}"
