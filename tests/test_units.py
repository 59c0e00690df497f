"""The small pure parts: JSON extraction, seed spaces, the window, the journal key, overrides."""

from __future__ import annotations

import asyncio
import time

import pytest

from factory.core import constants
from factory.config.pipeline import apply_overrides, parse_overrides
from factory.store.run_store import request_key
from factory.teachers.limits import AdaptiveWindow
from factory.inputs.seeds import SeedSpace, read_seed_file
from factory.core.structured import JSONNotFound, extract_json, with_schema_instructions
from factory.tasks.qa import Unusable, parse_pairs


@pytest.mark.parametrize("text,expected", [
    ('{"a": 1}', {"a": 1}),
    ('  [1, 2]  ', [1, 2]),
    ('Sure! ```json\n{"a": 1}\n``` Hope that helps.', {"a": 1}),
    ('```\n{"a": [1, 2,],}\n```', {"a": [1, 2]}),
    ('Here you go: {"a": {"b": "}"}} and more words', {"a": {"b": "}"}}),
    ('{"a": 1,}', {"a": 1}),
])
def test_extract_json_reads_common_wrappings(text, expected):
    assert extract_json(text) == expected


@pytest.mark.parametrize("text,reason", [("", "empty"), ("   ", "empty"), ("no json here", "no JSON"),
                                         ('{"a": [1, 2', "cut off")])
def test_extract_json_says_why_it_failed(text, reason):
    with pytest.raises(JSONNotFound, match=reason):
        extract_json(text)


@pytest.mark.parametrize("text,pairs", [
    ('{"pairs": [{"question": "Q1?", "answer": "A1."}]}', [("Q1?", "A1.")]),
    ('[{"question": "Q?", "answer": "A."}, {"question": "", "answer": "x"}]', [("Q?", "A.")]),
])
def test_parse_pairs_keeps_only_complete_pairs(text, pairs):
    assert parse_pairs(text) == pairs


@pytest.mark.parametrize("text", ['{"pairs": []}', '{"items": [1]}', '{"pairs": [{"question": "Q?"}]}', "42"])
def test_parse_pairs_rejects_unusable_answers(text):
    with pytest.raises(Unusable):
        parse_pairs(text)


def test_schema_instructions_go_into_the_last_user_message():
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    out = with_schema_instructions(msgs, {"type": "object"})
    assert out[0] == msgs[0] and out[1]["content"].startswith("u\n\n") and '"type": "object"' in out[1]["content"]
    assert msgs[1]["content"] == "u"  # the caller's list is left alone


def test_product_space_visits_every_combination_in_order_then_cycles():
    space = SeedSpace({"a": [1, 2], "b": ["x", "y", "z"]}, "product", seed=0)
    seen = [tuple(space.values(i).values()) for i in range(7)]
    assert seen[:6] == [(1, "x"), (1, "y"), (1, "z"), (2, "x"), (2, "y"), (2, "z")] and seen[6] == (1, "x")


def test_sample_space_is_a_function_of_seed_and_index():
    a = SeedSpace({"t": list(range(100)), "p": list("abcdef")}, "sample", seed=1)
    b = SeedSpace({"t": list(range(100)), "p": list("abcdef")}, "sample", seed=1)
    c = SeedSpace({"t": list(range(100)), "p": list("abcdef")}, "sample", seed=2)
    assert [a.values(i) for i in range(50)] == [b.values(i) for i in reversed(range(50))][::-1]
    assert [a.values(i) for i in range(50)] != [c.values(i) for i in range(50)]
    assert len({a.values(i)["t"] for i in range(50)}) > 20


@pytest.mark.parametrize("name,content,field,expected", [
    ("s.txt", "alpha\n\n beta \n", None, ["alpha", "beta"]),
    ("s.jsonl", '{"name": "Ann", "age": 3}\n\n{"name": "Bo", "age": 4}\n', "*",
     [{"name": "Ann", "age": 3}, {"name": "Bo", "age": 4}]),
    ("s.jsonl", '{"name": "Ann"}\n{"name": "Bo"}\n', "name", ["Ann", "Bo"]),
    ("s.csv", "name,role\nAnn,pilot\nBo,cook\n", "role", ["pilot", "cook"]),
    # A UTF-8 byte-order mark (Windows editors write one) is not part of the first value.
    ("s.txt", "\ufeffalpha\nbeta\n", None, ["alpha", "beta"]),
    ("s.csv", "\ufeffname,role\nAnn,pilot\n", "name", ["Ann"]),
    ("s.jsonl", '\ufeff{"name": "Ann"}\n', "name", ["Ann"]),
])
def test_seed_files_of_each_kind(tmp_path, name, content, field, expected):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert read_seed_file(path, field) == expected


def test_window_halves_on_throttle_and_grows_back():
    async def scenario():
        window = AdaptiveWindow(64)
        window.on_throttle()
        window.on_throttle()  # same burst: counted once
        assert window.size == 32
        for _ in range(2000):  # about one window of successes per step up
            window.on_success()
        assert window.size == 64
        return window

    asyncio.run(scenario())


def test_window_never_lets_more_than_its_size_in_flight():
    async def scenario():
        window = AdaptiveWindow(3)
        peak = 0

        async def worker():
            nonlocal peak
            await window.acquire()
            peak = max(peak, window.in_flight)
            await asyncio.sleep(0.001)
            window.release()

        await asyncio.gather(*(worker() for _ in range(30)))
        return peak, window.in_flight

    assert asyncio.run(scenario()) == (3, 0)


def test_request_key_ignores_key_order_but_not_content():
    assert request_key({"a": 1, "b": [1, 2]}) == request_key({"b": [1, 2], "a": 1})
    assert request_key({"a": 1}) != request_key({"a": 2})


def test_overrides_build_nested_keys_and_parse_yaml():
    raw = {"teacher": {"model": "a"}}
    apply_overrides(raw, parse_overrides(["teacher.model=b", "generate.count=5", "filters=[]", "x.y.z=[1, 2]"]))
    assert raw == {"teacher": {"model": "b"}, "generate": {"count": 5}, "filters": [], "x": {"y": {"z": [1, 2]}}}


def test_rate_limit_headers_set_the_provider_bucket():
    from factory.teachers.limits import RateLimiter, parse_duration

    assert [parse_duration(t) for t in ("1s", "6m0s", "20ms", "1h2m3.5s", "0.5")] == [1, 360, 0.02, 3723.5, 0.5]
    assert parse_duration("soon") is None and parse_duration(None) is None
    limiter = RateLimiter(None, None)
    limiter.observe({})  # no headers: nothing learned
    assert not limiter.active
    # OpenAI: per minute. 60 a minute, 59 left, full again in 1 s: one a second.
    limiter.observe({"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "59",
                     "x-ratelimit-reset-requests": "1s", "x-ratelimit-limit-tokens": "150000",
                     "x-ratelimit-remaining-tokens": "149000", "x-ratelimit-reset-tokens": "400ms"})
    described = limiter.describe()["from_headers"]
    margin = constants.PROVIDER_RATE_MARGIN  # a little under what the provider says
    assert described["requests"] == {"limit": 60, "per_minute": round(60 * margin, 1)}
    assert described["tokens"] == {"limit": 150000, "per_minute": round(150000 * margin, 1)}
    assert limiter.counts_tokens
    # Groq: requests per day. 14,400 a day, one used, full again in 6 s: ten a minute.
    groq = RateLimiter(None, None)
    groq.observe({"x-ratelimit-limit-requests": "14400", "x-ratelimit-remaining-requests": "14399",
                  "x-ratelimit-reset-requests": "6s"})
    assert groq.describe()["from_headers"]["requests"]["per_minute"] == round(10 * margin, 1)
    # Nothing left: the next request waits for the refill.
    empty = RateLimiter(None, None)
    empty.observe({"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "0",
                   "x-ratelimit-reset-requests": "60s"})

    async def timed() -> float:
        began = time.monotonic()
        await empty.acquire(0)
        return time.monotonic() - began

    # About 10 a second: one request's worth in 0.1 s, never less; the upper bound leaves a
    # loaded machine seconds to spare, yet fails a limiter that waits out the whole 60 s reset.
    assert 0.08 <= asyncio.run(timed()) <= 5
    # Several providers side by side: no mirroring (each has its own bucket).
    pool = RateLimiter(None, None, learn=False)
    pool.observe({"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "0",
                  "x-ratelimit-reset-requests": "1s"})
    assert not pool.active
