"""An OpenAI-compatible teacher on loopback, for tests, benchmarks and `--dry-run`.

It answers chat completions in the requested JSON schema (and raw text completions at
/v1/completions, as vLLM does) with varied deterministic
content, serves a models list and a health check, and behaves like a real server
where it matters for the engine: a fixed number of decode slots (requests beyond
them queue), a lognormal service time, and injected faults (429 with Retry-After,
500, dropped connections, hangs, malformed bodies, truncated or empty content; and,
only when asked for, stalls and oversized answers).
`GET /metrics` publishes vLLM's gauges (running, waiting, KV-cache use), as a vLLM
server does; `GET /stats` tells what it saw, so tests can check what the client sent.

It can also answer as other servers do (`imitate`, `reasoning_api`, `thinking`,
`cache_prefix`): llama-cpp-python's server (a 500 carrying a validation error for
`response_format: json_schema`, a grammar-constrained answer for `json_object` with a
`schema`), OpenAI's reasoning models (400 for `max_tokens` and for a temperature or
top_p other than 1, in OpenAI's own error shapes), a reasoning model's thinking in
each of the ways servers return it, and a prompt cache that bills the system prompt
as cached tokens once it has been seen.
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import os
import random
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from aiohttp import web

from factory.store.run_store import request_key
from factory.loopback.batches import BatchDesk, BatchOptions
from factory.loopback.content import answer, complete_text, thinking

FAULT_KINDS = ("rate_limit", "server_error", "reset", "hang", "malformed", "truncated", "empty")
# Faults injected only when named, never by a spread over all kinds: `stall` sends 200 and
# its headers, then nothing for hang_s (or until the client leaves), then an empty body;
# `oversized` streams an answer of oversize_bytes whatever max_tokens says (a runaway server).
EXTRA_FAULT_KINDS = ("stall", "oversized")


@dataclass
class LoopbackOptions:
    slots: int = 64
    latency_median: float = 0.0
    latency_sigma: float = 0.0
    faults: dict[str, float] = field(default_factory=dict)
    retry_after: float = 0.05
    hang_s: float = 3600.0
    # The `oversized` fault's body, and whether it declares its length (else chunked).
    oversize_bytes: int = 20 * 1024 * 1024
    oversize_declared: bool = False
    seed: int = 0
    refuse_response_format: bool = False
    model: str = "loopback"
    # Scripted answers: (regex, reply). The first pattern found in the last user message
    # decides the answer; the reply may use the match's groups (\\1, \\g<name>). Tests
    # use it to give a judge known scores, or an answer in a chosen malformed shape.
    replies: list[tuple[str, str]] = field(default_factory=list)
    # Keep every request body in memory (`LoopbackTeacher.bodies`), for tests that check
    # what each request carried.
    keep_bodies: bool = False
    # Keep what each request was (its key in /stats' received and completed, its arrival
    # time, its service interval): tests count what was paid twice from them. Off in a dry
    # run, whose server shares the run's process: only the counts, so memory stays flat.
    ledger: bool = True
    # Serve vLLM's Prometheus gauges at /metrics (off: a server without them).
    metrics: bool = True
    # Die (exit code 75, no answer) on the request after this many answered: a server
    # that crashes mid-run, at a point fixed by the work done rather than by a clock.
    exit_after: int | None = None
    # A preference judge's bias for the first candidate shown: points added to its score.
    judge_position_bias: int = 0
    # Serve raw text completion at /v1/completions (off: a chat-only server, which answers 404).
    completions: bool = True
    # Answer as this server does: "openai" (OpenAI, vLLM) or "llama_cpp" (llama-cpp-python).
    imitate: str = "openai"
    # Refuse max_tokens and a temperature or top_p other than 1, as OpenAI's o-series and
    # GPT-5 models do.
    reasoning_api: bool = False
    # How a reasoning model's thinking comes back: None (no thinking), "reasoning" or
    # "reasoning_content" (a field of the message), "tags" (<think>...</think> before the
    # answer in content), "open_tag_in_prompt" (content starts with the thinking and only
    # closes the tag, as when the chat template opened it).
    thinking: str | None = None
    # Bill a system prompt seen before as cached prompt tokens (a provider's prompt cache).
    cache_prefix: bool = False
    # Answer these requests (1-based, in order of arrival) 429 with Retry-After: retry_after.
    rate_limit_at: list[int] = field(default_factory=list)
    # A paid API's limits per minute ({"requests": n, "tokens": n}): buckets of that
    # size refilled evenly, reported in OpenAI's x-ratelimit-* headers on every answer,
    # 429 when a request does not fit (tokens counted as OpenAI does: prompt + max_tokens).
    rate_limits: dict[str, int] = field(default_factory=dict)
    # The batch APIs' behaviour (loopback/batches.py BatchOptions: delay, expire, lose, error).
    batches: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(FAULT_KINDS) - set(EXTRA_FAULT_KINDS)
        if unknown:
            known = ", ".join(FAULT_KINDS + EXTRA_FAULT_KINDS)
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {known}")
        if sum(self.faults.values()) > 1:
            raise ValueError("fault probabilities add up to more than 1")
        if self.slots < 1:
            raise ValueError("slots must be at least 1")
        if set(self.rate_limits) - {"requests", "tokens"} or any(v < 1 for v in self.rate_limits.values()):
            raise ValueError("rate_limits: requests and/or tokens per minute, each at least 1")
        if self.imitate not in ("openai", "llama_cpp"):
            raise ValueError(f"imitate: openai or llama_cpp, not {self.imitate!r}")
        if self.thinking not in THINKING_STYLES:
            raise ValueError(f"thinking: one of {', '.join(str(t) for t in THINKING_STYLES)}, not {self.thinking!r}")
        self.scripted = [(re.compile(pattern), reply) for pattern, reply in self.replies]

    def scripted_reply(self, messages: list[dict]) -> str | None:
        last_user = next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")
        for pattern, reply in self.scripted:
            match = pattern.search(last_user)
            if match:
                return match.expand(reply)
        return None

    @classmethod
    def spread(cls, rate: float, **kwargs) -> "LoopbackOptions":
        """Faults of every kind, `rate` of all requests in total."""
        return cls(faults={k: rate / len(FAULT_KINDS) for k in FAULT_KINDS}, **kwargs)


THINKING_STYLES = (None, "reasoning", "reasoning_content", "tags", "open_tag_in_prompt")

# The identity of a request as sent: the client journals the same hash of what it sent.
body_key = request_key


class LoopbackTeacher:
    def __init__(self, options: LoopbackOptions | None = None):
        self.options = options or LoopbackOptions()
        self.rng = random.Random(self.options.seed)
        self.slots = asyncio.Semaphore(self.options.slots)
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.received: collections.Counter[str] = collections.Counter()
        self.completed: collections.Counter[str] = collections.Counter()
        self.busy = 0
        self.waiting = 0  # received, waiting for a slot
        self.most_waiting = 0
        self.waiting_area = 0.0  # integral of `waiting` over time: its mean, over a run
        self._waiting_since = time.time()
        self.busy_time = 0.0
        self.served = 0
        self.requests = 0  # chat requests that passed the scripted 429s (/stats' requests)
        self.arrived = 0  # chat requests, all of them
        self.authorizations: set[str] = set()
        self.intervals: list[tuple[float, float]] = []  # (start, end) of each slot's service
        self.first_request: float | None = None
        self.last_answer: float | None = None
        self.bodies: list[dict] = []
        self.oversize_sent = 0  # bytes of oversized answers actually written before the client left
        self.arrivals: list[float] = []  # time.time() of each chat request
        self.throttled_at: list[float] = []  # when each scripted 429 went out
        self.cached_prompts: set[str] = set()
        # What it billed, over every answer it gave: the invoice a test checks the cost against.
        self.billed: collections.Counter[str] = collections.Counter()
        self.buckets = {kind: [float(limit), time.monotonic()] for kind, limit in self.options.rate_limits.items()}
        self.desk = BatchDesk(BatchOptions(**self.options.batches), self.reply, self.options.model,
                              self._spend if self.options.rate_limits else None,
                              self.bodies.append if self.options.keep_bodies else None)

    def reply(self, body: dict) -> tuple[str, int, int]:
        """(text, prompt tokens, completion tokens) for an OpenAI-shaped body: what a
        batch row is answered with."""
        messages = body["messages"]
        fmt = body.get("response_format") or {}
        schema = (fmt.get("json_schema") or {}).get("schema") if fmt.get("type") == "json_schema" else None
        text = self.options.scripted_reply(messages)
        if text is None:
            text = answer(messages, body.get("seed"), schema)
        return text, sum(len(str(m.get("content", ""))) for m in messages) // 4 + 1, len(text) // 4 + 1

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat)
        if self.options.completions:
            app.router.add_post("/v1/completions", self.completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.router.add_get("/stats", self.stats)
        if self.options.metrics:
            app.router.add_get("/metrics", self.metrics)
        self.desk.routes(app)
        return app

    def _fault(self) -> str | None:
        roll = self.rng.random()
        for kind, p in self.options.faults.items():
            if roll < p:
                return kind
            roll -= p
        return None

    def _spend(self, messages: list[dict], max_tokens) -> tuple[str | None, dict[str, str]]:
        """Take this request from the rate-limit buckets: (the limit it broke or None, headers)."""
        cost = {"requests": 1.0,
                "tokens": sum(len(str(m.get("content", ""))) for m in messages) / 4 + (max_tokens or 16)}
        now, broken, headers = time.monotonic(), None, {}
        for kind, bucket in self.buckets.items():
            limit = self.options.rate_limits[kind]
            bucket[0] = min(limit, bucket[0] + (now - bucket[1]) * limit / 60)
            bucket[1] = now
            if cost[kind] > bucket[0]:
                broken = broken or kind
        for kind, bucket in self.buckets.items():
            limit = self.options.rate_limits[kind]
            if broken is None:
                bucket[0] -= cost[kind]
            headers[f"x-ratelimit-limit-{kind}"] = str(limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(int(bucket[0]))
            headers[f"x-ratelimit-reset-{kind}"] = f"{(limit - bucket[0]) * 60 / limit * 1000:.0f}ms"
        return broken, headers

    def _queue(self, change: int) -> None:
        now = time.time()
        self.waiting_area += self.waiting * (now - self._waiting_since)
        self.waiting, self._waiting_since = self.waiting + change, now

    def _service_time(self) -> float:
        o = self.options
        if o.latency_median <= 0:
            return 0.0
        return o.latency_median * math.exp(o.latency_sigma * self.rng.gauss(0, 1))

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, raw=False)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        """Raw text completion, as vLLM, SGLang and llama.cpp serve it: no chat template."""
        return await self._answer(request, raw=True)

    async def _answer(self, request: web.Request, raw: bool) -> web.StreamResponse:
        if self.first_request is None:
            self.first_request = time.time()  # wall clock: benchmarks compare it across processes
        try:
            body = await request.json()
            if raw:
                prompt = body["prompt"]
                prompt = prompt[0] if isinstance(prompt, list) and len(prompt) == 1 else prompt
                if not isinstance(prompt, str):
                    raise TypeError("prompt")
                # Scripted replies, token counts and rate limits read it as one user message.
                messages = [{"role": "user", "content": prompt}]
            else:
                messages = body["messages"]
        except (ValueError, KeyError, TypeError):
            return _error(400, "body must be JSON with a prompt string" if raw else
                          "body must be JSON with a messages list")
        self.arrived += 1
        if self.options.ledger:
            self.arrivals.append(time.time())
        if self.arrived in self.options.rate_limit_at:
            self.outcomes["rate_limit_at"] += 1
            self.throttled_at.append(time.time())
            return _error(429, "Rate limit reached (scripted)", headers={"Retry-After": f"{self.options.retry_after:g}"})
        key = body_key(body)
        self.requests += 1
        if self.options.ledger:
            self.received[key] += 1
        if self.options.keep_bodies:
            self.bodies.append(body)
        # In memory only, never in /stats: tests check a key arrived without it being exposed.
        self.authorizations.add(request.headers.get("Authorization", ""))
        fmt = body.get("response_format") or {}
        if fmt and self.options.refuse_response_format:
            self.outcomes["refused_response_format"] += 1
            return _error(400, "response_format json_schema is not supported by this server")
        refusal = self._refusal(body, fmt)
        if refusal is not None:
            return refusal
        schema = self._schema(body, fmt)

        limit = body.get("max_tokens", body.get("max_completion_tokens"))
        limited, limit_headers = self._spend(messages, limit)
        if limited:
            self.outcomes["over_rate_limit"] += 1
            return _error(429, f"Rate limit reached for {limited} per minute", headers=limit_headers)

        fault = self._fault()
        if fault:
            self.outcomes[fault] += 1
        if fault == "rate_limit":
            return _error(429, "rate limited", headers={"Retry-After": f"{self.options.retry_after:g}"})
        if fault == "server_error":
            # Like a careless proxy, echo the credentials: the client must not write them down.
            return _error(500, f"internal error (injected) for {request.headers.get('Authorization', '')}")
        if fault == "reset":
            request.transport.abort()
            raise asyncio.CancelledError  # nothing more to say on a dropped connection
        if fault == "hang":
            await asyncio.sleep(self.options.hang_s)
        if fault == "stall":
            return await self._stall(request)
        if fault == "oversized":
            return await self._flood(request, body)

        self._queue(+1)
        self.most_waiting = max(self.most_waiting, self.waiting)
        try:
            await self.slots.acquire()
        finally:
            self._queue(-1)
        try:
            self.busy += 1
            service = self._service_time()
            began = time.time()
            if service:
                await asyncio.sleep(service)
            if self.options.ledger:
                self.intervals.append((began, time.time()))
            self.busy_time += service
            if self.options.exit_after is not None and self.served >= self.options.exit_after:
                os._exit(75)
            self.served += 1
        finally:
            self.busy -= 1
            self.slots.release()

        if fault == "malformed":
            return web.Response(status=200, text='{"id": "x", "choices": [{"message": ', content_type="application/json")
        text = self.options.scripted_reply(messages)
        if text is None:
            text = (complete_text(prompt, body.get("seed")) if raw
                    else answer(messages, body.get("seed"), schema, self.options.judge_position_bias))
        finish = "stop"
        if fault == "truncated":
            text, finish = text[: len(text) // 2], "length"
        elif fault == "empty":
            text = ""
        if not fault:
            self.outcomes["ok"] += 1
            if self.options.ledger:
                self.completed[key] += 1
        self.last_answer = time.time()
        message, usage = self._message(messages, body, text)
        if raw:  # a text completion: no message, no thinking
            choice = {"index": 0, "text": text, "finish_reason": finish}
        else:
            choice = {"index": 0, "message": message, "finish_reason": finish}
        return web.json_response(
            headers=limit_headers,
            data={
                "id": ("cmpl-" if raw else "chatcmpl-") + key[:24],
                "object": "text_completion" if raw else "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", self.options.model),
                "choices": [choice],
                "usage": usage,
            }
        )

    def _refusal(self, body: dict, fmt: dict) -> web.Response | None:
        """The error a real server of the imitated kind gives this body, if any."""
        if self.options.imitate == "llama_cpp" and fmt.get("type") not in (None, "text", "json_object"):
            # llama-cpp-python validates response_format against {text, json_object} and
            # its route handler wraps the validation error in a 500 (issue 23463 upstream).
            self.outcomes["refused_response_format"] += 1
            detail = ("1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
                      "'msg': \"Input should be 'text' or 'json_object'\", 'input': " + repr(fmt.get("type"))
                      + ", 'ctx': {'expected': \"'text' or 'json_object'\"}}\n\n  File \"llama_cpp/server/app.py\", "
                      "line 376, in create_chat_completion\n    POST /v1/chat/completions")
            return web.json_response({"error": {"message": detail, "type": "internal_server_error", "param": None,
                                                "code": None}}, status=500)
        if self.options.reasoning_api:
            if "max_tokens" in body:
                self.outcomes["refused_max_tokens"] += 1
                return _openai_error("Unsupported parameter: 'max_tokens' is not supported with this model. "
                                     "Use 'max_completion_tokens' instead.", "max_tokens", "unsupported_parameter")
            for name in ("temperature", "top_p"):
                if body.get(name, 1) != 1:
                    self.outcomes[f"refused_{name}"] += 1
                    return _openai_error(f"Unsupported value: '{name}' does not support {body[name]} with this "
                                         "model. Only the default (1) value is supported.", name, "unsupported_value")
        return None

    def _schema(self, body: dict, fmt: dict) -> dict | None:
        """The schema the server would constrain the answer to (None: free text)."""
        if fmt.get("type") == "json_schema":
            return (fmt.get("json_schema") or {}).get("schema")
        if fmt.get("type") == "json_object" and self.options.imitate == "llama_cpp":
            return fmt.get("schema")  # llama-cpp-python builds a grammar from it; vLLM ignores it
        if self.options.imitate == "openai":  # vLLM's own fields (llama-cpp-python drops unknown keys)
            guided = (body.get("structured_outputs") or {}).get("json") or body.get("guided_json")
            if isinstance(guided, dict):
                return guided
        return None

    def _message(self, messages: list[dict], body: dict, text: str) -> tuple[dict, dict]:
        """The assistant message and usage for `text`, with thinking and cache as configured."""
        o = self.options
        message: dict = {"role": "assistant", "content": text}
        thought = thinking(messages, body.get("seed")) if o.thinking else ""
        if o.thinking in ("reasoning", "reasoning_content"):
            message[o.thinking] = thought
        elif o.thinking == "tags":
            message["content"] = f"<think>\n{thought}\n</think>\n\n{text}"
        elif o.thinking == "open_tag_in_prompt":
            message["content"] = f"{thought}\n</think>\n\n{text}"
        prompt_tokens = sum(len(str(m.get("content", ""))) for m in messages) // 4 + 1
        reasoning_tokens = len(thought) // 4 + 1 if thought else 0
        completion_tokens = len(text) // 4 + 1 + reasoning_tokens
        usage: dict = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                       "total_tokens": prompt_tokens + completion_tokens}
        cached = 0
        if o.cache_prefix:
            system = "".join(str(m.get("content", "")) for m in messages if m.get("role") == "system")
            if system and system in self.cached_prompts:
                cached = min(prompt_tokens, len(system) // 4)
            self.cached_prompts.add(system)
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        if thought and o.thinking in ("reasoning", "reasoning_content"):
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
        self.billed.update({"answers": 1, "prompt_tokens": prompt_tokens, "cached_tokens": cached,
                            "completion_tokens": completion_tokens, "reasoning_tokens": reasoning_tokens})
        return message, usage

    async def _stall(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        # Until hang_s is up or the client gives up, so no handler outlives its connection.
        deadline = time.monotonic() + self.options.hang_s
        while time.monotonic() < deadline and request.transport is not None and not request.transport.is_closing():
            await asyncio.sleep(min(0.05, deadline - time.monotonic()))
        if request.transport is not None and not request.transport.is_closing():
            await response.write_eof()
        return response

    async def _flood(self, request: web.Request, body: dict) -> web.StreamResponse:
        """A valid completion whose content alone is oversize_bytes, written as fast as it is read."""
        head = ('{"id": "chatcmpl-flood", "object": "chat.completion", "model": ' + json.dumps(body.get("model"))
                + ', "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "')
        tail = '"}}], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}'
        size = max(self.options.oversize_bytes, len(head) + len(tail))
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        if self.options.oversize_declared:
            response.content_length = size
        else:
            response.enable_chunked_encoding()
        await response.prepare(request)
        block = b"x" * 65536
        left = size - len(head) - len(tail)
        try:
            await self._send(response, head.encode())
            while left > 0:
                await self._send(response, block[:left])
                left -= len(block)
            await self._send(response, tail.encode())
            await response.write_eof()
        except ConnectionError:
            pass  # the client stopped reading: what it was sent is counted
        return response

    async def _send(self, response: web.StreamResponse, data: bytes) -> None:
        await response.write(data)
        self.oversize_sent += len(data)

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": self.options.model, "object": "model", "owned_by": "factory"}]}
        )

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def metrics(self, request: web.Request) -> web.Response:
        labels = f'{{engine="0",model_name="{self.options.model}"}}'
        gauges = {
            "vllm:num_requests_running": self.busy,
            "vllm:num_requests_waiting": self.waiting,
            # As if each running request held an equal share of the cache.
            "vllm:kv_cache_usage_perc": 0.9 * self.busy / self.options.slots,
        }
        lines = []
        for name, value in gauges.items():
            lines += [f"# HELP {name} loopback", f"# TYPE {name} gauge", f"{name}{labels} {float(value)}"]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": self.requests,
                "outcomes": dict(self.outcomes),
                "received": dict(self.received),
                "completed": dict(self.completed),
                "busy_time": self.busy_time,
                "served": self.served,
                "intervals": self.intervals,
                "first_request": self.first_request,
                "last_answer": self.last_answer,
                "slots": self.options.slots,
                "most_waiting": self.most_waiting,
                "waiting_area": self.waiting_area,
                "oversize_sent": self.oversize_sent,
                "batches": self.desk.stats(),
                "arrivals": self.arrivals,
                "throttled_at": self.throttled_at,
                "billed": dict(self.billed),
            }
        )


def _openai_error(message: str, param: str, code: str) -> web.Response:
    """A 400 in the shape OpenAI's API gives it."""
    return web.json_response({"error": {"message": message, "type": "invalid_request_error", "param": param,
                                        "code": code}}, status=400)


def _error(status: int, message: str, headers: dict | None = None) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": "loopback_error", "code": status}}, status=status, headers=headers
    )


async def start(options: LoopbackOptions | None = None, host: str = "127.0.0.1", port: int = 0):
    """Start on the running loop; returns (runner, base_url, teacher)."""
    teacher = LoopbackTeacher(options)
    # Hung handlers (an injected fault) must not hold shutdown for the default minute.
    runner = web.AppRunner(teacher.app(), access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]
    return runner, f"http://{host}:{bound}/v1", teacher


@contextmanager
def serve_in_thread(options: LoopbackOptions | None = None) -> Iterator[tuple[str, LoopbackTeacher]]:
    """Run a loopback teacher on its own thread and event loop; yields (base_url, teacher)."""
    loop = asyncio.new_event_loop()
    ready: dict = {}
    started = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        ready["runner"], ready["url"], ready["teacher"] = loop.run_until_complete(start(options))
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=main, name="loopback-teacher", daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield ready["url"], ready["teacher"]
    finally:
        asyncio.run_coroutine_threadsafe(ready["runner"].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def serve_forever(options: LoopbackOptions, host: str, port: int) -> None:
    """Blocking: print the base URL on one line (tests and scripts read it), serve until killed."""

    async def main() -> None:
        runner, url, _ = await start(options, host, port)
        print(f"loopback teacher listening on {url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
