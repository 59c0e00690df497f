"""Providers' limits: Retry-After holds every request, Anthropic's rate-limit headers."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from factory.teachers.limits import RateLimiter, retry_after
from factory.loopback.process import server_stats
from tests.helpers.datafiles import read_jsonl
from tests.helpers.pipelines import write_pipeline
from tests.helpers.processes import factory_cli


def test_retry_after_holds_every_request_for_the_whole_window(tmp_path, loopback):
    url = loopback(rate_limit_at=[6], retry_after=1.0, latency_median=0.02)
    path = write_pipeline(tmp_path, url, generate__count=24, teacher__max_concurrency=4)
    result = factory_cli("run", str(path), "--quiet")
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl(tmp_path / "out" / "data.jsonl")) == 24
    stats = server_stats(url)
    [throttled] = stats["throttled_at"]
    later = [t - throttled for t in stats["arrivals"] if t > throttled]
    # Within the Retry-After window only requests already on the wire when the 429 came may
    # land (how late they land depends on the machine's load): at most the other 3 of the
    # window of 4. Everything sent after it, the refused request included, waits it out.
    held = [dt for dt in later if dt < 0.95]
    assert later and len(held) <= 4 - 1, sorted(later)
    # The refused request and every one not yet sent came after the window: 13 arrivals
    # in all (12 requests, one of them twice), the 429 the 6th.
    assert len(stats["arrivals"]) == 13 and sum(dt >= 0.95 for dt in later) >= 13 - 6 - 3


@pytest.mark.parametrize("headers, seconds", [
    ({"retry-after": "2"}, 2.0),
    ({"retry-after": "0.5"}, 0.5),
    ({"retry-after-ms": "150", "retry-after": "9"}, 0.15),
    ({"retry-after": "soon"}, None),
    ({}, None),
])
def test_retry_after_forms(headers, seconds):
    assert retry_after(headers) == seconds


def test_retry_after_as_an_http_date():
    when = datetime.now(timezone.utc) + timedelta(seconds=30)
    # Whole seconds, counted down from when it is read: a loaded machine may read it late.
    assert 20 <= retry_after({"retry-after": format_datetime(when, usegmt=True)}) <= 30


def test_anthropic_rate_limit_headers_tune_the_buckets():
    reset = (datetime.now(timezone.utc) + timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    limiter = RateLimiter(None, None)
    limiter.observe({"anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-requests-remaining": "40",
                     "anthropic-ratelimit-requests-reset": reset,
                     "anthropic-ratelimit-tokens-limit": "80000", "anthropic-ratelimit-tokens-remaining": "80000",
                     "anthropic-ratelimit-tokens-reset": reset})
    learned = limiter.describe()["from_headers"]
    # 10 requests spent, full again in 30 s: 20 a minute, less the safety margin; more when a
    # loaded machine reads the reset late (10 s late: 30 a minute, less the margin).
    assert learned["requests"]["limit"] == 50 and 17 <= learned["requests"]["per_minute"] <= 30
    assert "tokens" not in learned  # full: no rate to learn yet
    assert limiter.counts_tokens is False


def test_a_429_without_retry_after_holds_nothing():
    limiter = RateLimiter(None, None)
    limiter.observe({}, 429)
    limiter.observe({"retry-after": "5"}, 200)  # only a 429 asks to wait
    assert limiter.hold_until == 0.0
