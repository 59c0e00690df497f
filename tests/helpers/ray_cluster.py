"""A local Ray cluster for the tests (2 CPUs), and what runs sharded on it are told and watched by."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tests.helpers.checkout import ROOT
from tests.helpers.run_store import invocations, stored


@contextmanager
def local_cluster() -> Iterator[str]:
    """Start Ray in this process; yields the address runs join it by."""
    import ray

    # Workers start from the raylet's environment: they import this checkout's factory.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    os.environ["HF_HUB_OFFLINE"] = "1"  # the embedding actors load the test model from disk
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def on_ray(address: str, shards: int = 4) -> list[str]:
    """The `--set` options that run a pipeline in `shards` shards on the cluster at `address`."""
    return ["--set", "executor.type=ray", "--set", f"executor.shards={shards}", "--set", f"executor.address={address}"]


def kill_a_running_shard(shards: Path, run: subprocess.Popen, at_least: int, limit: float = 120):
    """SIGKILL the worker process of the first shard in the folder `shards` seen with
    `at_least` stored answers and its invocation still running; returns its folder and
    how many answers it had stored."""
    deadline = time.monotonic() + limit
    seen = {}
    while time.monotonic() < deadline:
        assert run.poll() is None, f"the run finished before a shard could be killed ({seen}); make it longer"
        for shard in sorted(shards.glob("0*")) if shards.exists() else []:
            try:
                running = [pid for pid, status in invocations(shard) if status == "unended"]
                answers = stored(shard)
            except sqlite3.OperationalError:
                continue  # not created yet
            seen[shard.name] = (running, answers)
            if running and answers >= at_least and not (shard / "done.json").exists():
                os.kill(running[-1], signal.SIGKILL)
                return shard, stored(shard)
        time.sleep(0.05)
    raise AssertionError("no shard reached the size to kill it at")


def wait_for_answers(shards: Path, run: subprocess.Popen, at_least: int, limit: float = 120) -> None:
    """Until some shard in the folder `shards` has stored `at_least` answers."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert run.poll() is None, "the run finished first; make it longer"
        for shard in sorted(shards.glob("0*")) if shards.exists() else []:
            try:
                if stored(shard) >= at_least:
                    return
            except sqlite3.OperationalError:
                pass  # not created yet
        time.sleep(0.05)
    raise AssertionError("no shard stored enough answers")
