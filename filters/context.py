"""Where a stage runs: the pipeline, the output folder, the run's store, stop and budget,
and the cluster, if any, its heavy work goes to."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factory.config.pipeline import PipelineFile
from factory.core.cost import Budget
from factory.executors.on_ray import Cluster


@dataclass
class StageContext:
    """Where a stage runs: the pipeline (teacher defaults, prompts) and the output
    folder, whose run store and caches make a rerun cheap."""

    pipeline: PipelineFile
    out_dir: Path
    show_progress: bool = True
    # The run's max_cost, shared with generation: a judge spends from the same budget.
    budget: Budget = field(default_factory=lambda: Budget(None))
    # The run's store (a judge's requests are journaled there) and its stop (a signal
    # drains a judge as it drains generation).
    store: Any = None
    stop: Any = None
    # Where the heavy work runs, decided once by whoever makes the context (the run,
    # `factory filter`) from `executor.type`: a Ray cluster (factory/executors/on_ray.py),
    # or None to run here. Stages ask this, never the config.
    cluster: Cluster | None = None
