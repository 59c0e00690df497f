"""No local absolute paths in what a run shares (the card, run.json, the report,
rejected.jsonl, the pipeline copy): a Hub visitor learns nothing from
/home/alice/work/..., and the outputs read the same on every machine.

Paths are shown relative to where they mean something: the run folder by the name it
was given (`outputs/beekeeping-qa`), files beside the pipeline as the pipeline names
them, the current folder's as relative paths, the home folder as `~`.
"""

from __future__ import annotations

import os
from pathlib import Path


def shown_path(path: Path) -> str:
    """`path` as the outputs show it: relative when it is given so or lies below the
    current folder, otherwise its last part."""
    if not path.is_absolute():
        return str(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path.name


def local_replacements(out_dir: Path, pipeline_dir: Path | None) -> list[tuple[str, str]]:
    """(absolute prefix, what to show instead), most specific first."""
    pairs: list[tuple[str, str]] = []
    out = str(out_dir.resolve())
    pairs += [(out + os.sep, shown_path(out_dir) + "/"), (out, shown_path(out_dir))]
    if pipeline_dir is not None:
        base = str(pipeline_dir.resolve())
        pairs += [(base + os.sep, ""), (base, ".")]
    cwd = str(Path.cwd().resolve())
    pairs += [(cwd + os.sep, ""), (cwd, ".")]
    home = str(Path.home().resolve())
    pairs += [(home + os.sep, "~/"), (home, "~")]
    # A longer prefix first: the run folder inside the pipeline's folder, say. The root
    # folder itself is no prefix worth replacing.
    pairs = [(local, shown) for local, shown in pairs if local.strip(os.sep)]
    return sorted(dict(pairs).items(), key=lambda pair: len(pair[0]), reverse=True)
