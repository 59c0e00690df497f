"""What ships with factory besides code: the prompt templates and the ready pipelines
(with their seed files and documents).

In a checkout they are the top-level `prompts/` and `pipelines/` folders; a built
wheel carries copies of both inside the package, as `factory/_shipped/` (setup.py
puts them there), so an installed factory finds them without a checkout.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent  # factory/, this file being factory/core/resources.py


def shipped_dir(name: str) -> Path:
    """The shipped folder `name` ("prompts" or "pipelines"): the wheel's copy when
    installed, the checkout's own folder otherwise."""
    inside = _PACKAGE / "_shipped" / name
    return inside if inside.is_dir() else _PACKAGE.parent / name


def shipped_pipelines() -> dict[str, Path]:
    """Task name (the pipeline file's stem: qa, dialogue, grounded-qa ...) -> its file."""
    folder = shipped_dir("pipelines")
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}
