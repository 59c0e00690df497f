"""Shared fixtures: a loopback teacher over real HTTP, pipelines written into tmp_path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from factory.loopback import LoopbackOptions, serve_in_thread
from factory.loopback.process import loopback_process, server_stats  # noqa: F401  (re-exported for tests)

ROOT = Path(__file__).resolve().parent.parent

QA_USER = 'Write {{ k }} question/answer pairs about "{{ topic }}" for {{ persona }}.'


@pytest.fixture
def loopback():
    """A loopback teacher on its own thread: yields a function options -> base_url."""
    stack = []

    def start(**options):
        cm = serve_in_thread(LoopbackOptions(**options))
        url, teacher = cm.__enter__()
        stack.append(cm)
        start.teacher = teacher
        return url

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


def write_pipeline(folder: Path, base_url: str = "http://127.0.0.1:9/v1", **changes) -> Path:
    """A small Q&A pipeline with its own prompts and seed files; `changes` are dotted keys."""
    (folder / "prompts" / "qa").mkdir(parents=True, exist_ok=True)
    (folder / "prompts" / "qa" / "user.j2").write_text(QA_USER)
    (folder / "prompts" / "qa" / "system.j2").write_text("You write {{ k }} pairs at a time.")
    (folder / "topics.txt").write_text("tides\nvolcanoes\nglaciers\ncoral reefs\n")
    config = {
        "name": "test-qa",
        "seed": 3,
        "teacher": {"backend": "openai", "model": "loopback", "base_url": base_url, "timeout": 10, "max_retries": 4},
        "seeds": {"topic": {"file": "topics.txt"}, "persona": ["a student", "a ship captain"]},
        "generate": {"task": "qa", "count": 12, "pairs_per_request": 2,
                     "templates": {"system": "qa/system.j2", "user": "qa/user.j2"}},
        "output": {"dir": str(folder / "out")},
    }
    for dotted, value in changes.items():
        node = config
        *parents, last = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def factory_cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real `factory` command in a child process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "factory", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=ROOT)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip()


def assert_user_error(code: int, err: str, words: list[str]) -> None:
    """A user's mistake: exit 2 and one line, naming everything in `words`."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("factory: error: "), err
    for word in words:
        assert word in lines[0], lines[0]
