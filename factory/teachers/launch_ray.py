"""`teacher.launch` on a Ray cluster: one server per GPU node, all in the endpoint pool.

With `executor: {type: ray}`, the launch preset (`vllm serve`) or command starts on
every alive node that has GPUs, in a Ray actor pinned to that node and holding all of
its GPUs: one server per node, with `--data-parallel-size` replicas when the node has
more GPUs than `teacher.vllm.tensor_parallel_size` uses. Each listens on all
interfaces; the run's `teacher.base_url` becomes the list of their addresses, which
the engine's endpoint pool spreads requests over. A custom command on a cluster
without GPUs starts one server per node (that is how it is tested here: vLLM itself
needs GPUs, which this project's CI does not have). Logs go to
`teacher-server-<node ip>.log` in the run folder (a shared filesystem). A server that
exits during the run stops it as incomplete (exit 3), as a local launch does; the
servers stop when the run ends.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from factory.config.pipeline import TeacherConfig
from factory.core.errors import ConfigError, TeacherError


def server_plan(nodes: list[dict], tensor_parallel: int, custom_command: bool) -> list[tuple[str, str, int]]:
    """(node id, node address, GPUs) for each server: every alive node with at least
    `tensor_parallel` GPUs; without any GPU node, every alive node for a custom command."""
    alive = [n for n in nodes if n.get("Alive")]
    gpu_nodes = [(n["NodeID"], n["NodeManagerAddress"], int(n.get("Resources", {}).get("GPU", 0))) for n in alive]
    plan = [(node, ip, gpus) for node, ip, gpus in gpu_nodes if gpus >= tensor_parallel and gpus > 0]
    if plan:
        return plan
    if custom_command:
        return [(node, ip, 0) for node, ip, _ in gpu_nodes]
    raise ConfigError("teacher.launch on Ray: no node of the cluster has "
                      f"{tensor_parallel} GPU{'s' if tensor_parallel > 1 else ''} for a vLLM server")


def extra_args(teacher: TeacherConfig, gpus: int) -> tuple[str, ...]:
    """The vLLM preset uses all of a node's GPUs: data-parallel replicas of the tensor-parallel group."""
    if teacher.launch.command is not None:
        return ()
    replicas = gpus // teacher.vllm.tensor_parallel_size
    return ("--data-parallel-size", str(replicas)) if replicas > 1 else ()


class Server:
    """A launched server inside a Ray actor (threaded: `wait` blocks while `stop` may come)."""

    def __init__(self, teacher: TeacherConfig, out_dir: str, args: tuple[str, ...], log_name: str):
        self.teacher, self.out_dir, self.args, self.log_name = teacher, Path(out_dir), args, log_name
        self.exited = threading.Event()
        self.message = ""
        self.context = None

    def start(self) -> str:
        """Start the server and wait until it is healthy; returns its address for other nodes."""
        import ray

        from factory.teachers.launch import launched

        self.context = launched(self.teacher, self.out_dir, on_exit=self._heard, host="0.0.0.0",
                                extra_args=self.args, log_name=self.log_name)
        local = self.context.__enter__()
        return local.replace("127.0.0.1", ray.util.get_node_ip_address(), 1)

    def _heard(self, message: str) -> None:
        self.message = message
        self.exited.set()

    def wait(self) -> str:
        """Returns (with the reason) when the server exits on its own."""
        self.exited.wait()
        return self.message

    def stop(self) -> None:
        if self.context is not None:
            context, self.context = self.context, None
            context.__exit__(None, None, None)


@contextmanager
def launched_on_ray(teacher: TeacherConfig, out_dir: Path, ray: Any,
                    on_exit: Callable[[str], None] | None = None) -> Iterator[list[str]]:
    """Start the servers, yield their base URLs once all are healthy; stop them after."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    plan = server_plan(ray.nodes(), teacher.vllm.tensor_parallel_size, teacher.launch.command is not None)
    actor = ray.remote(Server)
    servers = [actor.options(num_cpus=0, num_gpus=gpus, max_concurrency=2,
                             scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
               .remote(teacher, str(out_dir), extra_args(teacher, gpus), f"teacher-server-{ip}.log")
               for node, ip, gpus in plan]
    stopping = threading.Event()
    try:
        try:
            urls = ray.get([s.start.remote() for s in servers])
        except ray.exceptions.RayTaskError as err:
            cause = getattr(err, "cause", None)
            raise TeacherError(str(cause if isinstance(cause, TeacherError) else err).splitlines()[0]) from err
        waits = [s.wait.remote() for s in servers]

        def watch() -> None:
            ready, _ = ray.wait(waits, num_returns=1)
            if not stopping.is_set() and on_exit is not None:
                try:
                    on_exit(ray.get(ready[0]))
                except ray.exceptions.RayError as err:  # the actor (or its node) died with the server
                    on_exit(f"a launched teacher server's node failed during the run ({type(err).__name__})")

        threading.Thread(target=watch, name="teacher-servers-watch", daemon=True).start()
        yield urls
    finally:
        stopping.set()
        for server in servers:
            try:
                ray.get(server.stop.remote(), timeout=30)
            except (ray.exceptions.RayError, TimeoutError):  # an actor already gone: its server went with it
                pass
            ray.kill(server)
