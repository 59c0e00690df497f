"""Several endpoints serving one model: data-parallel replicas, or providers side by side.

Each request goes to the live endpoint with the fewest requests outstanding, which
keeps replicas of different speeds equally busy. An endpoint that fails several times
in a row is set aside; after a pause one request probes it, and it comes back when
that succeeds (the pause doubles while it keeps failing). A request that fails on one
endpoint is sent to another, so the run goes on while any endpoint lives.

The journal key does not name the endpoint: a rerun with another set of replicas
still replays everything that completed.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, Callable

from factory.core import constants
from factory.config.pipeline import TeacherConfig
from factory.core.errors import BadResponse, RequestRefused, TeacherError
from factory.core.redaction import Redactor
from factory.core.structured_modes import StructuredModes
from factory.teachers.base import Completion, Request, Teacher
from factory.teachers.openai_teacher import OpenAITeacher, redact_url


class Endpoint:
    def __init__(self, teacher: OpenAITeacher):
        self.teacher = teacher
        self.outstanding = 0
        self.failures = 0  # in a row
        self.resume_at = 0.0  # set aside until then
        self.pause = constants.ENDPOINT_FIRST_PAUSE_S
        self.probing = False
        self.served = 0
        self.aside_since = 0.0

    @property
    def url(self) -> str:
        return redact_url(self.teacher.base_url)

    def usable(self, now: float) -> bool:
        if self.failures < constants.ENDPOINT_FAILURES_TO_SET_ASIDE:
            return True
        return now >= self.resume_at and not self.probing  # one probe at a time

    @property
    def aside(self) -> bool:
        return self.failures >= constants.ENDPOINT_FAILURES_TO_SET_ASIDE

    def succeeded(self) -> None:
        if self.aside:
            _say(f"endpoint {self.url} is back: it answered {time.monotonic() - self.aside_since:.0f} s after it was "
                 "put aside, and takes requests again")
        self.failures, self.pause, self.probing = 0, constants.ENDPOINT_FIRST_PAUSE_S, False
        self.served += 1

    def failed(self, now: float, error: str = "") -> None:
        self.failures += 1
        if self.failures == constants.ENDPOINT_FAILURES_TO_SET_ASIDE:
            self.aside_since = now
            _say(f"endpoint {self.url} set aside after {self.failures} failures in a row ({error[:200]}); "
                 f"its requests go to the other endpoints, and a probe tries it again in {self.pause:g} s")
        if self.aside:
            if self.probing:  # the probe failed too: wait longer next time
                self.pause = min(self.pause * 2, constants.ENDPOINT_MAX_PAUSE_S)
            self.resume_at = now + self.pause
            self.probing = False


def _say(line: str) -> None:
    # On a terminal, rich's live progress line redirects stderr above itself.
    print(f"factory: {line}", file=sys.stderr, flush=True)


class EndpointPool(Teacher):
    backend = "openai"
    default_concurrency = constants.DEFAULT_MAX_CONCURRENCY

    def __init__(self, config: TeacherConfig, on_response: Callable[..., None] | None = None):
        self.config = config
        self.model = config.model
        urls = list(config.base_url)
        # Few transport retries per endpoint: a dead replica should hand its request to a
        # live one quickly, not back off against itself for a minute.
        single = {"max_retries": min(config.max_retries, 1)}
        # Replicas of one model behind one kind of server: one probe speaks for all.
        self.modes = StructuredModes(config.structured_output)
        self.endpoints = [Endpoint(OpenAITeacher(config.model_copy(update={"base_url": url, **single}), on_response,
                                                 share=len(urls), modes=self.modes))
                          for url in urls]
        self.default_concurrency = constants.DEFAULT_MAX_CONCURRENCY * len(urls)
        # Enough tries that every endpoint is tried more than once, and at least as many
        # as a single endpoint would have made.
        self.budget = max(config.max_retries + 1, 3 * len(urls))
        self._changed = asyncio.Event()
        self._redact = Redactor(self.secrets())

    async def start(self) -> None:
        for endpoint in self.endpoints:
            await endpoint.teacher.start()

    def legacy_payloads(self, request: Request) -> list[dict[str, Any]]:
        return self.endpoints[0].teacher.legacy_payloads(request)

    def secrets(self) -> list[str]:
        return self.endpoints[0].teacher.secrets()

    async def _pick(self) -> Endpoint:
        while True:
            now = time.monotonic()
            usable = [e for e in self.endpoints if e.usable(now)]
            if usable:
                chosen = min(usable, key=lambda e: e.outstanding)
                if chosen.failures >= constants.ENDPOINT_FAILURES_TO_SET_ASIDE:
                    chosen.probing = True
                return chosen
            wake = min(e.resume_at for e in self.endpoints if not e.probing) if any(
                not e.probing for e in self.endpoints) else now + 0.05
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=max(0.01, wake - now))
            except asyncio.TimeoutError:
                pass

    completes_text = True

    async def complete(self, request: Request) -> Completion:
        return await self._on_some_endpoint(request, OpenAITeacher.complete)

    async def complete_text(self, request: Request) -> Completion:
        return await self._on_some_endpoint(request, OpenAITeacher.complete_text)

    async def _on_some_endpoint(self, request: Request, method) -> Completion:
        last: TeacherError | None = None
        for _ in range(self.budget):
            endpoint = await self._pick()
            endpoint.outstanding += 1
            try:
                completion = await method(endpoint.teacher, request)
            except BadResponse:
                endpoint.succeeded()  # it answered; the answer is the problem
                raise
            except RequestRefused:
                endpoint.succeeded()  # the endpoint is alive; another replica would say the same
                raise
            except TeacherError as err:
                endpoint.failed(time.monotonic(), self._redact(" ".join(str(err).split())))
                last = err
                continue
            finally:
                endpoint.outstanding -= 1
                self._changed.set()
            endpoint.succeeded()
            return completion
        raise TeacherError(f"every endpoint failed ({len(self.endpoints)} tried, {self.budget} attempts): {last}")

    def describe(self) -> dict[str, Any]:
        first = self.endpoints[0].teacher.describe()
        return {**first, "base_url": [e.url for e in self.endpoints],
                "served": {e.url: e.served for e in self.endpoints}}

    async def close(self) -> None:
        for endpoint in self.endpoints:
            await endpoint.teacher.close()
