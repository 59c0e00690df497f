"""Starting the teacher's server for the user, and stopping it again whatever happens.

`teacher.launch` names a preset (`vllm`: `vllm serve MODEL` with the teacher's
settings) or any command. The server's output goes to `teacher-server.log` in the
run's folder; the run waits for its health endpoint, and the server is stopped when
the run ends, on Ctrl-C and on errors. If the server exits while the run needs it,
the run stops as it would on Ctrl-C (everything completed is journaled) and says so
with the last lines of the log.
"""

from __future__ import annotations

import _thread
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from factory.config import LaunchConfig, TeacherConfig
from factory.errors import TeacherError

LOG_FILE = "teacher-server.log"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command_for(teacher: TeacherConfig, launch: LaunchConfig, port: int) -> list[str]:
    """The command line that starts the server (a pure function of the settings)."""
    if launch.command:
        return [part.replace("{port}", str(port)).replace("{model}", teacher.model) for part in launch.command]
    v = teacher.vllm
    cmd = ["vllm", "serve", teacher.model, "--host", "127.0.0.1", "--port", str(port)]
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
def launched(teacher: TeacherConfig, out_dir: Path) -> Iterator[str]:
    """Start the server, wait until it is healthy, yield its base URL; stop it after."""
    launch = teacher.launch
    port = launch.port or free_port()
    cmd = command_for(teacher, launch, port)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / LOG_FILE
    log = open(log_path, "ab")
    try:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # its own group: stopping it stops its children
    except OSError as err:
        log.close()
        raise TeacherError(f"teacher.launch: cannot start {cmd[0]!r} ({err.strerror or err})") from err
    root = f"http://127.0.0.1:{port}"
    died = threading.Event()
    stopping = threading.Event()
    try:
        _wait_healthy(proc, root + launch.health, launch.startup_timeout, log_path)

        def watch() -> None:
            proc.wait()
            if not stopping.is_set():
                died.set()
                _thread.interrupt_main()  # stop the run as Ctrl-C would: journaled, resumable

        threading.Thread(target=watch, name="teacher-server-watch", daemon=True).start()
        try:
            yield f"{root}/v1"
        except KeyboardInterrupt:
            if died.is_set():
                raise TeacherError(f"the launched teacher server exited (code {proc.returncode}) during the run; "
                                   f"completed requests are journaled, rerun to resume. Log {log_path}: "
                                   f"{log_tail(log_path)}") from None
            raise
    finally:
        stopping.set()
        _stop(proc)
        log.close()


def _wait_healthy(proc: subprocess.Popen, url: str, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
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
