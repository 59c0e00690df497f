"""Stalls, oversized answers and huge windows: each ends in a bounded, named outcome."""

from __future__ import annotations

import asyncio
import json
import resource
import time
import tracemalloc

import pytest

from factory.core import constants
from factory.cli import main
from factory.config.pipeline import TeacherConfig
from factory.core.errors import BadResponse, OversizedAnswer, TeacherError
from factory.loopback import EXTRA_FAULT_KINDS, FAULT_KINDS, LoopbackOptions
from factory.teachers import Request, make_teacher
from factory.teachers.request_bounds import answer_byte_cap, capped_window, fd_cap, request_timeout
from factory.loopback.process import loopback_process, server_stats
from tests.helpers.pipelines import write_pipeline

ASK = Request(messages=[{"role": "user", "content": "Write one question about tides."}])


def openai_config(url: str = "http://127.0.0.1:9/v1", **changes) -> TeacherConfig:
    return TeacherConfig(backend="openai", model="loopback", base_url=url, **changes)


async def ask(config: TeacherConfig):
    teacher = make_teacher(config)
    await teacher.start()
    try:
        return await teacher.complete(ASK)
    finally:
        await teacher.close()


@pytest.mark.parametrize("max_tokens, seconds", [
    (16, constants.STALL_BASE_S + 1.6),
    (256, constants.STALL_BASE_S + 25.6),
    (1024, constants.STALL_BASE_S + 102.4),
    (8192, constants.STALL_BASE_S + 819.2),
])
def test_derived_timeout_grows_with_max_tokens(max_tokens, seconds):
    config = openai_config(sampling={"max_tokens": max_tokens})
    assert config.timeout is None
    assert request_timeout(config) == pytest.approx(seconds)
    assert request_timeout(config.model_copy(update={"timeout": 7.5})) == 7.5  # a number set wins


def test_stalled_request_ends_in_teacher_error_after_the_timeout():
    # A real server process (the CLI's --fault), which answers 200 and then says nothing.
    with loopback_process("--fault", "stall=1", "--hang-s", "60") as url:
        started = time.monotonic()
        with pytest.raises(TeacherError, match="timed out after 0.5s"):
            asyncio.run(ask(openai_config(url, timeout=0.5, max_retries=0)))
        assert 0.4 < time.monotonic() - started < 3
        assert server_stats(url)["outcomes"] == {"stall": 1}


def test_a_stall_is_retried_by_the_client(loopback):
    url = loopback(faults={"stall": 1.0}, hang_s=60)
    with pytest.raises(TeacherError):
        asyncio.run(ask(openai_config(url, timeout=0.3, max_retries=1)))
    assert loopback.teacher.outcomes["stall"] == 2  # the openai client's own retry, then the error


@pytest.mark.parametrize("declared", [False, True], ids=["chunked", "content-length"])
def test_oversized_answer_is_rejected_without_reading_it(loopback, declared):
    asyncio.run(ask(openai_config(loopback(), max_retries=0)))  # what a first request imports is no answer
    flood = 64 * 1024 * 1024
    url = loopback(faults={"oversized": 1.0}, oversize_bytes=flood, oversize_declared=declared)
    config = openai_config(url, max_retries=3, sampling={"max_tokens": 256})
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(OversizedAnswer) as caught:
            asyncio.run(ask(config))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 5
    assert caught.value.reason == "oversized" and isinstance(caught.value, BadResponse)
    assert peak < 5 * 1024 * 1024, f"{peak:,} bytes allocated at the peak"
    assert loopback.teacher.outcomes["oversized"] == 1  # not retried: the same server would flood again
    assert loopback.teacher.oversize_sent < flood  # the client hung up early
    if declared:  # refused on the Content-Length header, before any of the body
        assert "Content-Length" in str(caught.value)


def test_answer_far_beyond_max_tokens_by_usage_is_oversized(loopback):
    # Small enough to pass the byte cap; the server's own token count gives it away.
    url = loopback(replies=[(".", "y" * 40_000)])
    assert 40_000 < answer_byte_cap(16)
    with pytest.raises(OversizedAnswer, match="far beyond max_tokens 16"):
        asyncio.run(ask(openai_config(url, max_retries=0, sampling={"max_tokens": 16})))
    # The same answer is fine when max_tokens allows it.
    completion = asyncio.run(ask(openai_config(url, max_retries=0, sampling={"max_tokens": 16_000})))
    assert len(completion.text) == 40_000


def test_bad_response_reasons():
    assert BadResponse.reason == "bad_response" and OversizedAnswer.reason == "oversized"


def test_extra_fault_kinds_only_when_named():
    assert not set(EXTRA_FAULT_KINDS) & set(FAULT_KINDS)
    assert set(LoopbackOptions.spread(0.5).faults) == set(FAULT_KINDS)
    assert LoopbackOptions(faults={"stall": 0.5, "oversized": 0.5}).faults["stall"] == 0.5
    with pytest.raises(ValueError, match="stall, oversized"):
        LoopbackOptions(faults={"flood": 1.0})


def test_window_is_capped_by_the_open_file_limit():
    config = openai_config(max_concurrency=10**9)
    size, note = capped_window(config, config.max_concurrency)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft == hard or hard == resource.RLIM_INFINITY  # raised to the hard limit where allowed
    assert size == fd_cap() < soft and "open-file limit" in note
    assert fd_cap(share=2) == fd_cap() // 2  # endpoints of a pool share the descriptors
    # Small windows and in-process teachers are left as asked.
    assert capped_window(config, 64) == (64, None)
    assert capped_window(TeacherConfig(backend="vllm", model="m", max_concurrency=10**9), 10**9) == (10**9, None)


def test_run_with_a_huge_window_completes_and_says_it_was_capped(tmp_path, loopback):
    url = loopback()
    path = write_pipeline(tmp_path, url, teacher__max_concurrency=10**9, teacher__server_metrics=False)
    assert main(["run", str(path), "--quiet"]) == 0
    window = json.loads((tmp_path / "out" / "run.json").read_text())["engine"]["concurrency"]
    assert window["ceiling"] == fd_cap() and "capped" in window["capped"]
