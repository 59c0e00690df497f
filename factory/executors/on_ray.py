"""Shards on a Ray cluster (`executor: {type: ray}`): one Ray task per shard.

Every node needs factory installed and the pipeline's files and the output folder at
the same paths (a shared POSIX filesystem: NFS, Lustre, a mounted bucket): each shard
writes its run store there, and the driver reads it back to merge. Ray reruns a
shard whose worker process or node died (up to `RETRIES` times); the rerun resumes
from the shard's own journal. Shards already marked done are not submitted again,
by this run or by a rerun of the same command.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from factory.config.pipeline import PipelineFile
from factory.core.cost import Budget
from factory.engine.engine import RunStats
from factory.core.errors import ConfigError, FactoryError
from factory.executors.shards import (
    SHARDS_DIR,
    Shard,
    ShardOutcome,
    cost_left,
    merge,
    merged,
    plan,
    run_shard,
    seed,
    shard_pipeline,
)
from factory.engine.progress import Progress
from factory.store.run_folder import RunFolder
from factory.core.stopping import Stop, StopNow

RETRIES = 3  # reruns of a shard whose worker died (Ray's max_retries for system failures)
POLL_S = 0.5
CANCEL_MARGIN_S = 5.0  # beyond the drain's grace, for a cancelled shard to close its store and end

# Counters a shard reports that add up over shards.
_SUMMED = ("sent", "replayed", "teacher_errors", "bad_responses", "refused", "prompt_tokens", "completion_tokens",
           "cached_tokens", "reasoning_tokens", "latency_total", "cost")


@dataclass(frozen=True)
class Cluster:
    """The Ray cluster a run works on (`executor.type: ray`), joined when something first
    asks for it: a run whose stages never need it never connects."""

    address: str | None = None

    def ray(self) -> Any:
        return connect(self.address)


def cluster_for(executor: Any) -> Cluster | None:
    """The run's executor, decided once: a Cluster on Ray, None to work in this process."""
    return Cluster(executor.address) if executor.type == "ray" else None


def connect(address: str | None) -> Any:
    """Ray, connected to `address` (auto, ray://...), to the cluster this process already
    joined, or to a new local one."""
    try:
        import ray
    except ImportError as err:
        raise ConfigError("executor.type: ray needs Ray: pip install 'factory[ray]'") from err
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise ConfigError(f"executor.address: cannot reach the Ray cluster at {address or 'local'} ({err})") from err
    return ray


def generate_on_ray(pipeline: PipelineFile, folder: RunFolder, stats: RunStats, stop: Stop, fingerprint: str,
                    units: list[int], progress: Progress, budget: Budget, cluster: Cluster) -> None:
    """Run every unfinished shard as a Ray task, merging each into the run's store as it
    finishes; what the shards pay is the run's `budget` spent. Returns when all are
    merged, or after requesting `stop` when a shard ended early (an outage: exit 3) or
    the user stopped the run (after cancelling the rest)."""
    cfg = pipeline.config.executor
    store = folder.store
    shards = plan(folder.out_dir / SHARDS_DIR, units, cfg.shards)
    since = time.time()
    todo: list[Shard] = []
    for shard in shards:
        if shard.done(fingerprint):
            if not merged(store, shard, fingerprint):
                merge(store, shard, fingerprint, since)
        else:
            seed(store, shard, fingerprint)
            todo.append(shard)
    if not todo:
        return
    ray = cluster.ray()
    mine = shard_pipeline(pipeline, len(shards), cost_left(pipeline, store, shards, fingerprint))
    remote = ray.remote(num_cpus=1, max_retries=RETRIES)(run_shard)

    def finished(shard: Shard, outcome: ShardOutcome) -> None:
        add_stats(stats, outcome.stats)
        budget.spent += outcome.stats.get("cost") or 0.0
        if outcome.status == "complete":
            merge(store, shard, fingerprint, since)
            stats.units_done += len(shard.units)
            progress.update()

    progress.start()
    try:
        run_shards(ray, lambda shard: remote.remote(mine, shard, fingerprint, stop.grace), todo, stop, finished)
    finally:
        progress.close()


def run_shards(ray: Any, submit: Callable[[Shard], Any], todo: list[Shard], stop: Stop,
               finished: Callable[[Shard, ShardOutcome], None]) -> None:
    """Run the `todo` shards at once (`submit` starts one as a Ray task), handing each one's
    outcome to `finished` on this process as it ends. A shard that ends early (an outage)
    leaves the others to finish; then `stop` is requested (exit 3, naming it). When `stop`
    is requested meanwhile (a signal), the rest are cancelled: each keeps what it stored,
    and a rerun resumes them."""
    running = {submit(shard): shard for shard in todo}
    failed: list[tuple[Shard, ShardOutcome]] = []
    with stop.polled():  # a first signal is seen here, not raised inside Ray's wait
        while running:
            if stop.requested:
                _cancel(ray, running, stop, finished)
                return
            for ref in _wait(ray, list(running), 1, POLL_S):
                shard = running.pop(ref)
                outcome = _outcome(ray, ref, shard)
                finished(shard, outcome)
                if outcome.status != "complete":  # the others go on: what they finish is kept
                    failed.append((shard, outcome))
    if failed:
        shard, outcome = failed[0]
        more = f" (and {len(failed) - 1} more shards)" if len(failed) > 1 else ""
        stop.request("shard", outcome.exit_code or 3,
                     f"shard {shard.index} ({shard.label}): {outcome.reason}{more}")


def _cancel(ray: Any, running: dict[Any, Shard], stop: Stop, finished: Callable[[Shard, ShardOutcome], None]) -> None:
    """Cancel the running shards (in each, a signal: it drains as a local run does, for
    the grace period), and hand on the outcome of those that end within it."""
    for ref in running:
        ray.cancel(ref)
    for ref in _wait(ray, list(running), len(running), stop.grace + CANCEL_MARGIN_S):
        shard = running.pop(ref)
        finished(shard, _outcome(ray, ref, shard))


def _wait(ray: Any, refs: list, count: int, timeout: float) -> list:
    """The refs of those of `refs` that ended within `timeout` (at least `count`, unless it ran out)."""
    try:
        return ray.wait(refs, num_returns=count, timeout=timeout)[0]
    except SystemError as err:  # a second signal, raised in a handler while Ray's wait ran
        cause = err.__cause__ or err.__context__
        if isinstance(cause, StopNow):
            raise cause from None
        raise


def _outcome(ray: Any, ref: Any, shard: Shard) -> ShardOutcome:
    try:
        return ray.get(ref)
    except ray.exceptions.TaskCancelledError:  # stopped by the driver: what it stored is kept
        return ShardOutcome(shard.index, "stopped", "stopped", 0, {})
    except ray.exceptions.RayTaskError as err:
        cause = err.cause if isinstance(getattr(err, "cause", None), BaseException) else err
        if isinstance(cause, FactoryError):
            return ShardOutcome(shard.index, "incomplete", str(cause).splitlines()[0], 3, {})
        raise
    except ray.exceptions.RayError as err:  # the worker died more often than Ray retries
        return ShardOutcome(shard.index, "incomplete", f"its worker failed {RETRIES + 1} times ({type(err).__name__}); "
                            "rerun to resume it", 3, {})


def add_stats(stats: RunStats, shard: dict) -> None:
    """Add a shard's counters (its outcome's `stats`) to `stats`."""
    for name in _SUMMED:
        if name in shard and shard[name] is not None:
            setattr(stats, name, getattr(stats, name) + shard[name])
