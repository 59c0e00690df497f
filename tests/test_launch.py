"""teacher.launch: the project's own loopback teacher as the launched server."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from factory.config.pipeline import LaunchConfig, TeacherConfig
from factory.core.errors import TeacherError
from factory.teachers.launch import command_for, launched
from tests.helpers.checkout import ROOT
from tests.helpers.datafiles import read_jsonl
from tests.helpers.pipelines import write_pipeline
from tests.helpers.processes import factory_cli

LOOPBACK = [sys.executable, "-m", "factory", "loopback", "--port", "{port}"]


def launch_pipeline(folder, command, **changes):
    """A pipeline whose teacher is started by factory: no base_url, a launch command."""
    path = write_pipeline(folder, None, generate__pairs_per_request=1,
                          teacher__launch={"command": command, "startup_timeout": 60}, **changes)
    config = yaml.safe_load(path.read_text())
    del config["teacher"]["base_url"]
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def closes_within(port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not port_open(port):
            return True
        time.sleep(0.1)
    return False


def recording_pid(pid_file, command):
    """The command, run by a shell that writes its pid first and then becomes the command."""
    return ["sh", "-c", f'echo $$ > "{pid_file}" && exec "$0" "$@"', *command]


def loopback_teacher(pid_file) -> TeacherConfig:
    return TeacherConfig(backend="openai", model="loopback",
                         launch={"command": recording_pid(pid_file, LOOPBACK), "startup_timeout": 60})


def kill_quietly(pid_file) -> None:
    try:
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
    except (OSError, ValueError):
        pass


def test_on_exit_hears_of_a_server_killed_from_outside_and_an_error_after_names_the_log(tmp_path):
    pid_file, heard = tmp_path / "server.pid", queue.Queue()
    with pytest.raises(TeacherError, match="teacher-server.log") as raised:
        with launched(loopback_teacher(pid_file), tmp_path, on_exit=heard.put) as url:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
            message = heard.get(timeout=3)
            raise ConnectionError("the run's next request fails")
    assert "exited (code -9) during the run" in message and "teacher-server.log" in message
    assert "listening on" in message and "\n" not in message  # one line, ending with the log's tail
    assert "rerun to resume" in str(raised.value) and isinstance(raised.value.__cause__, ConnectionError)
    assert heard.empty() and not port_open(urlparse(url).port)


def test_on_exit_is_not_called_when_the_block_ends_normally(tmp_path):
    pid_file, heard = tmp_path / "server.pid", queue.Queue()
    with launched(loopback_teacher(pid_file), tmp_path, on_exit=heard.put) as url:
        assert port_open(urlparse(url).port)
    time.sleep(0.5)  # long enough for a watcher that wrongly took the stop for a death
    assert heard.empty() and not port_open(urlparse(url).port)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_server_dies_with_a_factory_killed_by_sigkill(tmp_path):
    pid_file = tmp_path / "server.pid"
    holder = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from factory.config.pipeline import TeacherConfig
        from factory.teachers.launch import launched
        teacher = TeacherConfig(backend="openai", model="loopback",
                                launch={{"command": {recording_pid(pid_file, LOOPBACK)!r}, "startup_timeout": 60}})
        with launched(teacher, Path({str(tmp_path)!r})) as url:
            print(url, flush=True)
            time.sleep(600)
    """)
    factory = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        url = factory.stdout.readline().strip()
        assert url, "the holder exited before the server was ready"
        port = urlparse(url).port
        assert port_open(port)
        factory.kill()  # no finally runs in the holder: only the kernel can stop the server now
        factory.wait()
        assert closes_within(port, 5), "the server outlived the process that launched it"
    finally:
        factory.kill()
        factory.wait()
        factory.stdout.close()
        kill_quietly(pid_file)


def test_the_launched_server_serves_the_run_and_is_stopped_after(tmp_path):
    path = launch_pipeline(tmp_path, LOOPBACK, generate__count=20)
    result = factory_cli("run", str(path), "--quiet")
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl(tmp_path / "out" / "data.jsonl")) == 20
    log = (tmp_path / "out" / "teacher-server.log").read_text()
    assert "listening on" in log
    port = int(log.split("listening on http://127.0.0.1:")[1].split("/")[0])
    assert not port_open(port), "the server was left running"
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    # The command as given, the home folder shown as ~ (no local absolute path in run.json).
    shown = [part.replace(str(Path.home()), "~") for part in LOOPBACK[:3]]
    assert info["config"]["teacher"]["launch"]["command"][:3] == shown


def test_a_server_that_exits_before_it_is_ready_is_one_line_with_its_log(tmp_path):
    command = [sys.executable, "-c", "import sys; print('CUDA error: no GPU found'); sys.exit(3)"]
    result = factory_cli("run", str(launch_pipeline(tmp_path, command)), "--quiet")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "exited with code 3" in lines[0] and "CUDA error: no GPU found" in lines[0], result.stderr


def test_a_program_that_does_not_exist(tmp_path):
    result = factory_cli("run", str(launch_pipeline(tmp_path, ["no-such-server-binary", "--port", "{port}"])), "--quiet")
    assert result.returncode == 1 and "cannot start 'no-such-server-binary'" in result.stderr


def test_a_server_dying_mid_run_stops_the_run_and_a_rerun_resumes(tmp_path):
    pid_file = tmp_path / "server.pid"
    dying = recording_pid(pid_file, [*LOOPBACK, "--slots", "2", "--latency-median", "0.05", "--exit-after", "40"])
    path = launch_pipeline(tmp_path, dying, generate__count=300)
    # SIGINT ignored, as under nohup, cron or a CI runner: the death must still stop the run.
    run = subprocess.Popen([sys.executable, "-m", "factory", "run", str(path), "--quiet"], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline and run.poll() is None
        time.sleep(0.02)
    pid = int(pid_file.read_text())
    while Path(f"/proc/{pid}").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z":
        assert time.monotonic() < deadline, "the server did not exit after 40 requests"
        time.sleep(0.02)
    died = time.monotonic()
    _, err = run.communicate(timeout=60)
    # Requests in flight to a server that no longer exists can never finish: no drain.
    assert run.returncode == 3, err
    assert time.monotonic() - died < 5, time.monotonic() - died
    result = subprocess.CompletedProcess(run.args, run.returncode, "", err)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "exited (code 75) during the run" in lines[0] and "teacher-server.log" in lines[0]
    assert "rerun the same command to finish" in lines[0]
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert info["status"] == "incomplete" and not (tmp_path / "out" / "dataset").exists()
    done = info["usage"]["requests"]
    assert 0 < done < 300

    steady = launch_pipeline(tmp_path, LOOPBACK, generate__count=300)
    result = factory_cli("run", str(steady), "--quiet")
    assert result.returncode == 0, result.stderr
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert info["usage"]["requests"] == 300 and info["invocations"][-1]["usage"]["requests"] == 300 - done


def test_sigterm_stops_the_run_and_its_launched_server(tmp_path):
    path = launch_pipeline(tmp_path, [*LOOPBACK, "--slots", "2", "--latency-median", "0.2"], generate__count=200)
    proc = subprocess.Popen([sys.executable, "-m", "factory", "run", str(path), "--quiet"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "out" / "teacher-server.log"
    deadline = time.monotonic() + 60
    while not (log.exists() and "listening on" in log.read_text()):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    port = int(log.read_text().split("listening on http://127.0.0.1:")[1].split("/")[0])
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("factory: stopped:")
    assert not port_open(port), "the launched server outlived the run"
    assert json.loads((tmp_path / "out" / "run.json").read_text())["status"] == "stopped"


def test_the_vllm_preset_carries_the_teachers_settings():
    teacher = TeacherConfig(backend="openai", model="Qwen/Qwen2.5-7B-Instruct", dtype="bfloat16",
                            vllm={"tensor_parallel_size": 2, "gpu_memory_utilization": 0.85, "max_model_len": 8192},
                            launch={"args": ["--enable-prefix-caching"]})
    assert command_for(teacher, teacher.launch, 8011) == [
        "vllm", "serve", "Qwen/Qwen2.5-7B-Instruct", "--host", "127.0.0.1", "--port", "8011",
        "--tensor-parallel-size", "2", "--gpu-memory-utilization", "0.85", "--max-model-len", "8192",
        "--dtype", "bfloat16", "--enable-prefix-caching"]
    custom = LaunchConfig(command=["my-server", "--model", "{model}", "--listen", ":{port}"])
    assert command_for(teacher, custom, 9) == ["my-server", "--model", "Qwen/Qwen2.5-7B-Instruct", "--listen", ":9"]


def test_the_judge_grades_on_the_launched_server(tmp_path):
    path = launch_pipeline(tmp_path, LOOPBACK, generate__count=6, filters=[{"type": "judge"}])
    assert factory_cli("validate", str(path)).returncode == 0
    result = factory_cli("run", str(path), "--quiet")
    assert result.returncode == 0, result.stderr
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    judge = next(s for s in info["funnel"]["stages"] if s["stage"] == "judge")
    assert judge["usage"]["requests"] == 6
