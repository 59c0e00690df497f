"""Server-aware concurrency: the window follows the server's /metrics when it has one."""

from __future__ import annotations

import json

from factory.teachers.server_load import ServerLoad, metrics_url, next_window, parse_metrics, queue_target
from tests.helpers.datafiles import read_jsonl
from tests.helpers.pipelines import write_pipeline
from tests.helpers.processes import factory_cli

VLLM_V1 = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="Qwen/Qwen3 0.6B"} 30.0
vllm:num_requests_running{engine="1",model_name="Qwen/Qwen3 0.6B"} 20.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="Qwen/Qwen3 0.6B"} 4.0
vllm:num_requests_waiting{engine="1",model_name="Qwen/Qwen3 0.6B"} 1.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="Qwen/Qwen3 0.6B"} 0.42
vllm:kv_cache_usage_perc{engine="1",model_name="Qwen/Qwen3 0.6B"} 0.61
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{engine="0",le="0.3",model_name="Qwen/Qwen3 0.6B"} 12.0
vllm:e2e_request_latency_seconds_count{engine="0",model_name="Qwen/Qwen3 0.6B"} 12.0
"""


def test_reads_vllm_and_sglang_pages():
    assert parse_metrics(VLLM_V1) == ServerLoad("vllm", 50.0, 5.0, 0.61)  # engines summed, the fuller cache
    old = 'vllm:num_requests_running{model_name="m"} 3\nvllm:num_requests_waiting{model_name="m"} 0\n' \
          'vllm:gpu_cache_usage_perc{model_name="m"} 0.1\n'
    assert parse_metrics(old) == ServerLoad("vllm", 3.0, 0.0, 0.1)
    sglang = 'sglang:num_running_reqs{model_name="m"} 7.0\nsglang:num_queue_reqs{model_name="m"} 2.0\n'
    assert parse_metrics(sglang) == ServerLoad("sglang", 7.0, 2.0, None)


def test_pages_without_our_gauges_are_not_a_load():
    assert parse_metrics("") is None
    assert parse_metrics("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.5\n") is None
    assert parse_metrics("<html><body>Not Found</body></html>") is None
    assert parse_metrics('vllm:num_requests_running{model_name="m"} 3\n') is None  # waiting missing
    assert parse_metrics('vllm:num_requests_running{model_name="m"} three\nvllm:num_requests_waiting 1\n') is None


def test_metrics_url_sits_beside_v1():
    assert metrics_url("http://gpu-3:8000/v1") == "http://gpu-3:8000/metrics"
    assert metrics_url("http://gpu-3:8000/v1/") == "http://gpu-3:8000/metrics"
    assert metrics_url("https://host/serving/llama/v1") == "https://host/serving/llama/metrics"


def test_window_settles_at_capacity_plus_the_queue_target():
    target = queue_target(64)
    # 500 in flight, the server runs 64 and queues the rest: cut to 64 running + the target.
    assert next_window(512, 500, ServerLoad("vllm", 64, 436), 1, 4096) == 64 + target
    # A short queue grows the window by the shortfall only.
    assert next_window(70, 70, ServerLoad("vllm", 64, 6), 1, 4096) == 64 + target
    # Nothing waiting, the server runs all we send, the window is full: double.
    assert next_window(64, 64, ServerLoad("vllm", 63, 0), 1, 4096) == 128
    # ... but not with the cache nearly full (vLLM would preempt), nor past the ceiling.
    assert next_window(64, 64, ServerLoad("vllm", 63, 0, cache=0.97), 1, 4096) == 64
    assert next_window(3000, 3000, ServerLoad("vllm", 2990, 0), 1, 4096) == 4096
    # Not growing while the window is not what holds us back (the run is winding down).
    assert next_window(200, 40, ServerLoad("vllm", 40, 0), 1, 4096) == 200
    # Requests still on the wire are not yet running: no doubling on a stale reading.
    assert next_window(64, 64, ServerLoad("vllm", 10, 0), 1, 4096) == 64
    # Other clients' queue: our share shrinks, never below the floor.
    assert next_window(50, 50, ServerLoad("vllm", 64, 900), 1, 4096) == 1


def run(tmp_path, url, **changes):
    path = write_pipeline(tmp_path, url, generate__count=400, generate__pairs_per_request=1, **changes)
    result = factory_cli("run", str(path), "--quiet")
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl(tmp_path / "out" / "data.jsonl")) == 400
    return json.loads((tmp_path / "out" / "run.json").read_text())["engine"]["concurrency"]


def mean_waiting(teacher) -> float:
    return teacher.waiting_area / (teacher.last_answer - teacher.first_request)


def test_a_vllm_like_server_gets_a_small_queue_not_a_pile(tmp_path, loopback):
    concurrency = run(tmp_path / "a", loopback(slots=8, latency_median=0.02))
    assert concurrency["mode"] == "server metrics (vllm)" and concurrency["polls"] > 0
    steered = loopback.teacher
    # The same run at a server without /metrics: the fixed default window piles up there.
    concurrency = run(tmp_path / "b", loopback(slots=8, latency_median=0.02, metrics=False))
    assert concurrency["mode"].startswith("adaptive")
    fixed = loopback.teacher
    assert fixed.most_waiting > 300 and mean_waiting(fixed) > 100, (fixed.most_waiting, mean_waiting(fixed))
    # At most the slow start's first window (64) less what runs, and about the target on average.
    assert steered.most_waiting <= 64 - 8, steered.most_waiting
    assert mean_waiting(steered) <= 2 * queue_target(8), mean_waiting(steered)


def test_server_metrics_can_be_turned_off(tmp_path, loopback):
    url = loopback(slots=8, latency_median=0.01)
    concurrency = run(tmp_path, url, teacher__server_metrics=False)
    assert concurrency["mode"].startswith("adaptive")
    assert loopback.teacher.most_waiting > 300
