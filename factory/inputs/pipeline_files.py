"""What a pipeline is made of, as files: the pipeline file, the templates it renders,
and the seed files and documents it reads by relative path.

`factory init` copies a shipped pipeline's files into a folder of the user's; every
run keeps a copy in its output folder (`pipeline/`), so pushing it and reproducing it
never depend on the folder the run was started from, or on files edited since.
"""

from __future__ import annotations

import glob
import shutil
from pathlib import Path
from typing import Any, Iterator

import yaml

SNAPSHOT_DIR = "pipeline"
# Seed files and documents are copied into a run's snapshot up to this size in all
# (the pipeline and templates always are): a 5 GB corpus is not duplicated per run.
SNAPSHOT_DATA_BYTES = 64 * 2**20


def data_files(pipeline, exclude: Path | None = None) -> list[Path]:
    """Files and folders inside the pipeline's folder that its keys name by relative path
    (seed files, documents, globs of them), whichever task or filter reads them; never
    `exclude` (the run's own folder) or what holds it."""
    base = pipeline.base_dir.resolve()
    exclude = exclude.resolve() if exclude is not None else None
    found: dict[Path, None] = {}
    for value in _strings(pipeline.raw):
        if value.endswith(".j2") or "\n" in value or len(value) > 255 or Path(value).is_absolute():
            continue
        matches = glob.glob(str(base / value), recursive=True) if glob.has_magic(value) else [str(base / value)]
        for match in matches:
            try:
                path = Path(match).resolve()
                exists = path.exists()
            except OSError:  # a description or a prompt, not a path
                continue
            if (exists and path != base and path.is_relative_to(base) and path != pipeline.path.resolve()
                    and not (exclude is not None and (path.is_relative_to(exclude) or exclude.is_relative_to(path)))):
                found[path] = None
    # A folder named covers the files in it.
    return sorted(p for p in found if not any(p != q and p.is_relative_to(q) for q in found))


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for name, value in node.items():
            if name == "seeds" and isinstance(value, dict):
                # Inline seed values are data (a Dataset's rows, say), not paths: only files.
                yield from (v["file"] for v in value.values() if isinstance(v, dict) and isinstance(v.get("file"), str))
            elif name not in ("output", "field"):  # where results go; a seed file's column name
                yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def pipeline_name(pipeline) -> str:
    """The copy's file name: the pipeline file's own, or pipeline.yaml for one given as a dict."""
    return pipeline.path.name if pipeline.text else "pipeline.yaml"


def pipeline_text(pipeline) -> str:
    """The pipeline file as the run read it; with `--set` changes (or given as a dict),
    the resolved keys (comments lost), saying which changes were made."""
    if pipeline.text and not pipeline.overrides:
        return pipeline.text
    changes = "".join(f"#   --set {o}\n" for o in pipeline.overrides)
    head = (f"# {pipeline.path.name} with these changes applied:\n{changes}" if pipeline.text
            else "# the pipeline as given to factory.Pipeline.from_dict\n" + changes)
    return head + yaml.safe_dump(_plain(pipeline.raw), sort_keys=False, allow_unicode=True)


def _plain(node: Any) -> Any:
    """`node` with what YAML cannot hold (a datasets.Dataset as seed values) as text."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_plain(v) for v in node]
    if node is None or isinstance(node, (str, int, float, bool)):
        return node
    return repr(node)[:200]


def copy_files(pipeline, templates: dict, into: Path, data_limit: int | None = None,
               redact=lambda text: text, exclude: Path | None = None) -> list[str]:
    """Write the pipeline file (through `redact`), `templates` (name -> Template) under
    prompts/, and its data files, at the same relative places, into `into`; returns the
    data files left out (over `data_limit` bytes in all)."""
    into.mkdir(parents=True, exist_ok=True)
    (into / pipeline_name(pipeline)).write_text(redact(pipeline_text(pipeline)), encoding="utf-8")
    for name, template in templates.items():
        target = into / "prompts" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(template.source, encoding="utf-8")
    base = pipeline.base_dir.resolve()
    left_out, used = [], 0
    for path in data_files(pipeline, exclude):
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
        relative = path.relative_to(base)
        if data_limit is not None and used + size > data_limit:
            left_out.append(str(relative))
            continue
        used += size
        target = into / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            shutil.copytree(path, target, dirs_exist_ok=True)
        else:
            shutil.copy2(path, target)
    return left_out
