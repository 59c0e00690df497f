"""Starting the teacher's server for the user, and stopping it again whatever happens.

`teacher.launch` names a preset (`vllm`: `vllm serve MODEL` with the teacher's
settings) or any command. The server's output goes to `teacher-server.log` in the
run's folder, every known key value in it replaced by `***` (a server may print
its environment); the run waits for its health endpoint, and the server is stopped when
the run ends, on Ctrl-C and on errors, and (Linux) when factory itself is killed. If
the server exits while the run needs it, `on_exit` hears of it with one line that ends
with the last lines of the log.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator

from factory.config.pipeline import LaunchConfig, TeacherConfig
from factory.core.errors import TeacherError
from factory.core.redaction import Redactor

LOG_FILE = "teacher-server.log"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command_for(teacher: TeacherConfig, launch: LaunchConfig, port: int, host: str = "127.0.0.1") -> list[str]:
    """The command line that starts the server (a pure function of the settings); `host`
    is the address it listens on ("{host}" in a command)."""
    if launch.command:
        return [part.replace("{port}", str(port)).replace("{model}", teacher.model).replace("{host}", host)
                for part in launch.command]
    v = teacher.vllm
    cmd = ["vllm", "serve", teacher.model, "--host", host, "--port", str(port)]
    if v.tensor_parallel_size != 1:
        cmd += ["--tensor-parallel-size", str(v.tensor_parallel_size)]
    if v.gpu_memory_utilization is not None:
        cmd += ["--gpu-memory-utilization", str(v.gpu_memory_utilization)]
    if v.max_model_len is not None:
        cmd += ["--max-model-len", str(v.max_model_len)]
    if teacher.dtype != "auto":
        cmd += ["--dtype", teacher.dtype]
    return cmd + list(launch.args)


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip()) or "(empty log)"


@contextmanager
def launched(teacher: TeacherConfig, out_dir: Path, on_exit: Callable[[str], None] | None = None,
             host: str = "127.0.0.1", extra_args: tuple[str, ...] = (), log_name: str = LOG_FILE,
             secrets: list[str] | None = None) -> Iterator[str]:
    """Start the server, wait until it is healthy, yield its base URL; stop it after.

    `secrets` (default: the teacher's own key) are replaced by `***` in the server's log.

    If the server exits before the block does, `on_exit(message)` is called from a
    watcher thread (so it should only signal the run, not wait on it), at most once and
    never after the block has ended. Whether or not there is a callback, an exception
    out of the block after the server died becomes a TeacherError naming the log.
    Enter it from a thread that outlives the block (factory/run/generate.py: the main thread): on Linux
    the server gets SIGTERM when the *thread* that started it ends (PR_SET_PDEATHSIG),
    not only when the process does.
    """
    launch = teacher.launch
    port = launch.port or free_port()
    cmd = command_for(teacher, launch, port, host) + list(extra_args)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / log_name
    if secrets is None:
        secrets = [os.environ.get(teacher.api_key_env, "")] if teacher.api_key_env else []
    log = open(log_path, "ab")
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True,  # its own group: stopping it stops its children
                                preexec_fn=_dies_with_parent())
    except OSError as err:
        log.close()
        raise TeacherError(f"teacher.launch: cannot start {cmd[0]!r} ({err.strerror or err})") from err
    copier = threading.Thread(target=_copy_redacted, args=(proc.stdout, log, Redactor(secrets)),
                              name="teacher-server-log", daemon=True)
    copier.start()

    def logged() -> None:
        """Wait (briefly) for the dead server's last lines to reach the log."""
        copier.join(timeout=2)
    root = f"http://127.0.0.1:{port}"
    # Held while deciding and telling, so the block's end and the server's death are ordered.
    lock = threading.Lock()
    stopping = False
    died = threading.Event()

    def exit_message() -> str:
        return (f"the launched teacher server exited (code {proc.returncode}) during the run; "
                f"log {log_path}: {log_tail(log_path)}")

    def watch() -> None:
        proc.wait()
        logged()
        died.set()
        with lock:
            if not stopping and on_exit is not None:
                on_exit(exit_message())

    try:
        _wait_healthy(proc, root + launch.health, launch.startup_timeout, log_path, logged)
        threading.Thread(target=watch, name="teacher-server-watch", daemon=True).start()
        try:
            yield f"{root}/v1"
        except Exception as err:
            # Not BaseException: a SystemExit chosen by on_exit's receiver keeps its code,
            # and so does a run that stopped on purpose (its message already says why).
            # A failed request can be the first sign of the death: give the watcher a moment.
            if getattr(err, "status", None) is not None or not died.wait(timeout=1):
                raise
            raise TeacherError(f"{exit_message()}; completed requests are journaled, rerun to resume") from err
    finally:
        with lock:
            stopping = True
        _stop(proc)
        copier.join(timeout=5)
        log.close()


def _dies_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child when factory dies, even by kill -9.

    The `finally` in launched() cannot run after kill -9 or an OOM kill; this can. It
    reaches only the server's own process: its children are the server's to stop on
    SIGTERM (vllm does), as the process group is ours on a normal stop.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        # Looked up here, not in the child, where between fork and exec only plain calls are safe.
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def arm() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # factory died before the request was in place
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


def _copy_redacted(source: IO[bytes], log: IO[bytes], redact: Redactor) -> None:
    """The server's output into its log, line by line, without the keys it may print."""
    try:
        # Bounded lines: a progress bar redrawn with \r for hours is not held whole.
        for line in iter(lambda: source.readline(1 << 20), b""):
            log.write(redact(line.decode("utf-8", errors="replace")).encode("utf-8"))
            log.flush()
    except (OSError, ValueError):
        pass  # the log was closed after a server whose children kept the pipe open
    finally:
        source.close()


def _wait_healthy(proc: subprocess.Popen, url: str, timeout: float, log_path: Path,
                  logged: Callable[[], None]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            logged()
            raise TeacherError(f"teacher.launch: the server exited with code {proc.returncode} before it was "
                               f"ready; log {log_path}: {log_tail(log_path)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TeacherError(f"teacher.launch: no healthy answer from {url} within {timeout:g}s "
                       f"(teacher.launch.startup_timeout); log {log_path}: {log_tail(log_path)}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass
