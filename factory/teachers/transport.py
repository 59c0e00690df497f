"""The openai client's HTTP transport (aiohttp), with a deadline and a size cap per answer.

aiohttp's read timeout is per read: a server that sends its headers and then a byte
a minute never times out, and a server that ignores max_tokens can stream any number
of bytes into memory. `BoundedTransport` wraps whatever transport the client builds
(direct or through a proxy) and bounds both while the body is read:

- the whole attempt, headers and body, must end within the request's read timeout
  (`bounds.request_timeout`); past it, `httpx2.ReadTimeout`, which the openai client
  retries like any timeout;
- a body declared (Content-Length) or read beyond `answer_cap` bytes ends the read and
  raises `OversizedAnswer`: not an httpx error, so the client passes it through without
  a retry (the same server would send the same flood) and the connection is dropped.

A gzip body is capped on the wire, not decoded; the decoded text is checked again once
parsed (openai_wire.read_completion).
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

import httpx2
import openai

from factory.core.errors import OversizedAnswer


class BoundedClient(openai.DefaultAioHttpClient):
    """openai's aiohttp client, each of its transports wrapped in a BoundedTransport."""

    def __init__(self, *, answer_cap: int, **kwargs):
        self._answer_cap = answer_cap  # set first: the parent builds its transports in __init__
        super().__init__(**kwargs)

    def _init_transport(self, *args, **kwargs):
        return BoundedTransport(super()._init_transport(*args, **kwargs), self._answer_cap)

    def _init_proxy_transport(self, *args, **kwargs):
        return BoundedTransport(super()._init_proxy_transport(*args, **kwargs), self._answer_cap)


class BoundedTransport(httpx2.AsyncBaseTransport):
    def __init__(self, inner: httpx2.AsyncBaseTransport, answer_cap: int):
        self.inner = inner
        self.answer_cap = answer_cap

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        budget = (request.extensions.get("timeout") or {}).get("read")
        deadline = None if budget is None else asyncio.get_running_loop().time() + budget
        scope = asyncio.timeout_at(deadline)
        try:
            async with scope:
                response = await self.inner.handle_async_request(request)
        except TimeoutError:
            if scope.expired():
                raise httpx2.ReadTimeout(f"no answer within {budget:g}s", request=request) from None
            raise
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.answer_cap:
            await response.aclose()
            raise OversizedAnswer(f"answer of {int(declared):,} bytes (Content-Length), over the "
                                  f"{self.answer_cap:,}-byte cap for this max_tokens")
        response.stream = _BoundedStream(response.stream, self.answer_cap, deadline, budget, request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


class _BoundedStream(httpx2.AsyncByteStream):
    def __init__(self, inner, cap: int, deadline: float | None, budget: float | None, request: httpx2.Request):
        self.inner, self.cap, self.deadline, self.budget, self.request = inner, cap, deadline, budget, request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = self.inner.__aiter__()
        read = 0
        try:
            while True:
                scope = asyncio.timeout_at(self.deadline)
                try:
                    async with scope:
                        chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    if scope.expired():
                        raise httpx2.ReadTimeout(f"answer not complete within {self.budget:g}s",
                                                 request=self.request) from None
                    raise
                read += len(chunk)
                if read > self.cap:
                    raise OversizedAnswer(f"answer over the {self.cap:,}-byte cap for this max_tokens "
                                          "(the server ignores max_tokens?); reading stopped there")
                yield chunk
        finally:
            if hasattr(chunks, "aclose"):
                await chunks.aclose()

    async def aclose(self) -> None:
        await self.inner.aclose()
