"""Filter stages, one per module, built from the pipeline's `filters:` list.

Each entry names its stage with `type`; the remaining keys go to that stage's own
config model, which refuses unknown keys. Stage modules are imported only when a
pipeline uses them (dedup and diversity pull in numpy, datasketch, torch).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from factory.config.pipeline import PipelineFile, describe_validation_error
from factory.core.errors import ConfigError
from factory.core.registry import load
from factory.core.record import Record
from filters.base import RecordFilter, Stage, StageContext, TextConfig

# type -> "module:Class"; the class has a `Config` pydantic model and takes it in __init__.
REGISTRY: dict[str, str] = {
    "heuristics": "filters.heuristics.heuristics:Heuristics",
    "exact_dedup": "filters.dedup.exact:ExactDedup",
    "minhash_dedup": "filters.dedup.minhash:MinHashDedup",
    "judge": "filters.judge.judge:Judge",
    "diversity": "filters.diversity.diversity:Diversity",
    "pii": "filters.pii.pii:Pii",
    "decontaminate": "filters.decontaminate.decontaminate:Decontaminate",
}


def build_stages(entries: list[dict[str, Any]], pipeline: PipelineFile) -> list[Stage]:
    where = str(pipeline.path)
    stages = []
    for i, entry in enumerate(entries):
        label = f"{where}: filters[{i}]"
        kind = entry.get("type")
        if kind not in REGISTRY:
            known = ", ".join(sorted(REGISTRY)) or "none"
            raise ConfigError(f"{label}.type: unknown filter {kind!r} (known: {known})")
        cls = load(REGISTRY[kind])
        options = {k: v for k, v in entry.items() if k != "type"}
        try:
            config = cls.Config.model_validate(options)
        except ValidationError as err:
            raise ConfigError(f"{label}.{describe_validation_error(err)}") from err
        stage = cls(config)
        stage.where = label
        stage.position = i
        stage.prepare(pipeline, label)
        stages.append(stage)
    return stages


def check_models(stages: list[Stage]) -> None:
    """Every model the stages will load is here (after the cheaper checks of their options)."""
    for stage in stages:
        stage.check_models()


def check_stage_inputs(stages: list[Stage], roles: set[str], fields: set[str], origin: str) -> None:
    """Before anything is sent: every role and metadata field a stage's options name
    (`roles`, `fields`, a heuristics bound per role) reaches that stage. A misspelt one
    would match nothing: dedup would compare empty texts and keep one record of all.

    `roles`: the roles the records have; `fields`: their metadata as dotted paths (see
    `Task.metadata_fields`), to which each stage adds its `adds_metadata` for the stages
    after it; `origin` ends the message's "is not a role ..." ("the qa task writes").
    Raises ConfigError naming the stage's key.
    """
    supplied: set[str] = set()
    for i, stage in enumerate(stages):
        for key, kind, name in stage.config.reads():
            if kind == "role" and name not in roles:
                raise ConfigError(f"{stage.where}.{key}: {name!r} is not a role {origin} "
                                  f"(roles: {', '.join(sorted(roles)) or 'none'})")
            if kind == "field" and name.split(".")[0] not in supplied and not _known_field(name, fields):
                later = next((s for s in stages[i + 1:] if name.split(".")[0] in s.adds_metadata), None)
                if later is not None:
                    raise ConfigError(f"{stage.where}.{key}: {name!r} is added by {later.name}, which runs after "
                                      f"this stage; list that filter first")
                raise ConfigError(f"{stage.where}.{key}: {name!r} is not a metadata field {origin} "
                                  f"({_fields_near(name, fields | supplied)})")
        supplied |= stage.adds_metadata


def check_fields(stages: list[Stage], records: list[Record]) -> None:
    """Before anything is written: every role and field the stages name is in some input
    record, or is metadata an earlier stage adds (a judge's score, say)."""
    if not records:
        return
    roles = {m["role"] for r in records for m in r.messages}
    # Every record's metadata paths only when some stage names a field.
    named = any(kind == "field" for stage in stages for _, kind, _ in stage.config.reads())
    fields = set().union(*(_paths(r.metadata) for r in records)) if named else set()
    check_stage_inputs(stages, roles, fields, "any input record has")
    supplied: frozenset[str] = frozenset()
    for stage in stages:
        # A path below a plain value (`task.name`) is in no record either.
        if isinstance(stage.config, TextConfig):
            stage.config.check_fields(records, stage.where, supplied)
        supplied |= stage.adds_metadata


def _known_field(path: str, fields: set[str]) -> bool:
    if path in fields:
        return True
    parts = path.split(".")
    for end in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in fields:
            # Below a field nothing is known about (a seed value that is an object): accepted.
            return not any(f.startswith(prefix + ".") for f in fields)
    return False


def _fields_near(path: str, fields: set[str]) -> str:
    """The known fields beside where `path` went wrong, for the message."""
    parts = path.split(".")
    parent = ""
    for end in range(len(parts) - 1, 0, -1):
        if ".".join(parts[:end]) in fields:
            parent = ".".join(parts[:end]) + "."
            break
    near = sorted(f for f in fields if f.startswith(parent) and "." not in f[len(parent):])
    shown = ", ".join(near[:20]) + (f" and {len(near) - 20} more" if len(near) > 20 else "")
    return f"fields: {shown or 'none'}"


def _paths(metadata: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for key, value in metadata.items():
        out.add(prefix + key)
        if isinstance(value, dict):
            out |= _paths(value, f"{prefix}{key}.")
    return out


def __getattr__(name: str):
    """The stage classes by name (`filters.MinHashDedup`), imported when first asked for."""
    for path in REGISTRY.values():
        if path.rpartition(":")[2] == name:
            return load(path)
    raise AttributeError(f"module 'filters' has no attribute {name!r}")


__all__ = ["REGISTRY", "RecordFilter", "Stage", "StageContext", "build_stages", "check_fields", "check_models",
           "check_stage_inputs"]
