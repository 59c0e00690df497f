"""Filter stages, one per module, built from the pipeline's `filters:` list.

Each entry names its stage with `type`; the remaining keys go to that stage's own
config model, which refuses unknown keys. Stage modules are imported only when a
pipeline uses them (dedup and diversity pull in numpy, datasketch, torch).
"""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import ValidationError

from factory.config import Pipeline, describe_validation_error
from factory.errors import ConfigError
from factory.record import Record
from filters.base import RecordFilter, Stage, StageContext, TextConfig

# type -> "module:Class"; the class has a `Config` pydantic model and takes it in __init__.
REGISTRY: dict[str, str] = {
    "heuristics": "filters.heuristics:Heuristics",
    "exact_dedup": "filters.exact_dedup:ExactDedup",
    "minhash_dedup": "filters.minhash_dedup:MinHashDedup",
    "judge": "filters.judge:Judge",
    "diversity": "filters.diversity:Diversity",
}


def build_stages(entries: list[dict[str, Any]], pipeline: Pipeline) -> list[Stage]:
    where = str(pipeline.path)
    stages = []
    for i, entry in enumerate(entries):
        label = f"{where}: filters[{i}]"
        kind = entry.get("type")
        if kind not in REGISTRY:
            known = ", ".join(sorted(REGISTRY)) or "none"
            raise ConfigError(f"{label}.type: unknown filter {kind!r} (known: {known})")
        module, _, cls_name = REGISTRY[kind].partition(":")
        cls = getattr(importlib.import_module(module), cls_name)
        options = {k: v for k, v in entry.items() if k != "type"}
        try:
            config = cls.Config.model_validate(options)
        except ValidationError as err:
            raise ConfigError(f"{label}.{describe_validation_error(err)}") from err
        stage = cls(config)
        stage.where = label
        stage.prepare(pipeline, label)
        stages.append(stage)
    return stages


def check_fields(stages: list[Stage], records: list[Record]) -> None:
    """Before anything is written: every `fields` entry names metadata that some input
    record has, or that an earlier stage adds (a judge's score, say)."""
    supplied: frozenset[str] = frozenset()
    for stage in stages:
        if isinstance(stage.config, TextConfig):
            stage.config.check_fields(records, stage.where, supplied)
        supplied |= stage.adds_metadata


__all__ = ["REGISTRY", "RecordFilter", "Stage", "StageContext", "build_stages", "check_fields"]
