"""The OpenAI Batch API: requests as lines of an uploaded file (POST /v1/files, purpose
batch), a batch over it (POST /v1/batches, 24 h window), polled (GET /v1/batches/{id}),
then its output and error files read (GET /v1/files/{id}/content).

Each line's body is exactly what the online teacher would send (OpenAITeacher.body),
so a request's answer does not depend on the mode it was asked in.
"""

from __future__ import annotations

import json
import os
from typing import Any, AsyncIterator, Callable

from factory.core import constants
from factory.config.pipeline import TeacherConfig
from factory.core.errors import BadResponse, TeacherError
from factory.teachers.base import Request
from factory.teachers.batch.provider import BatchLost, BatchProvider, BatchStatus, no_batch_api, provider_errors
from factory.teachers.openai_teacher import OpenAITeacher, _short, redact_url
from factory.teachers.openai_wire import read_completion

ENDED = ("completed", "expired", "cancelled", "failed")
# A batch that failed with this code never ran: the organisation's enqueued tokens were
# at their limit, and it fits once a batch in progress ends.
QUEUE_FULL = "token_limit_exceeded"
# A row answered with one of these, or a 5xx, was not refused: it goes out again.
TRANSIENT_STATUS = (408, 409, 429)
# How far back (seconds) the batch list is searched for one created just before a crash.
FIND_WINDOW_S = 3600.0


class OpenAIBatches(BatchProvider):
    name = "openai"

    def __init__(self, config: TeacherConfig):
        self.config = config
        self.online = OpenAITeacher(config)  # builds each line's body as the online teacher does
        self._api_key = os.environ.get(config.api_key_env) if config.api_key_env else None
        self._client = None

    def where(self) -> str:
        return redact_url(self.config.base_url) if self.config.base_url else "api.openai.com"

    def secrets(self) -> list[str]:
        return [self._api_key] if self._api_key else []

    async def start(self) -> None:
        import httpx2
        import openai

        # Result files run to hundreds of megabytes: no answer cap here, a long read timeout.
        timeout = httpx2.Timeout(constants.BATCH_HTTP_TIMEOUT_S, connect=constants.CONNECT_TIMEOUT_S)
        self._client = openai.AsyncOpenAI(api_key=self._api_key or "not-needed", base_url=self.config.base_url,
                                          max_retries=self.config.max_retries, timeout=timeout)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    @staticmethod
    def _sdk():
        import openai

        return openai

    def entry(self, key: str, request: Request) -> bytes:
        line = {"custom_id": key, "method": "POST", "url": "/v1/chat/completions",
                "body": self.online.body(request)}
        return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode()

    async def submit(self, entries: list[bytes], record_file: Callable[[str], None]) -> tuple[str, str]:
        data = b"\n".join(entries) + b"\n"
        try:
            async with provider_errors(self._sdk(), self.where()):
                file = await self._client.files.create(file=("factory-batch.jsonl", data, "application/jsonl"),
                                                       purpose="batch")
                record_file(file.id)
                batch = await self._client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions",
                                                          completion_window="24h")
        except BatchLost as err:
            raise no_batch_api(self.where()) from err
        return batch.id, batch.status

    async def find(self, batch: dict[str, Any], known: set[str]) -> str | None:
        if not batch.get("file"):
            return None  # the file never came back: no batch can read it
        async with provider_errors(self._sdk(), self.where()):
            async for found in self._client.batches.list(limit=100):
                if found.input_file_id == batch["file"]:
                    return found.id
                if found.created_at < batch["submitted"] - FIND_WINDOW_S:
                    break  # newest first: older ones cannot be it
        return None

    async def status(self, remote: str) -> BatchStatus:
        async with provider_errors(self._sdk(), self.where()):
            batch = await self._client.batches.retrieve(remote)
        counts = batch.request_counts.model_dump() if batch.request_counts else {}
        errors = list(batch.errors.data or []) if batch.errors else []
        return BatchStatus(batch.status, batch.status in ENDED, counts,
                           {"output": batch.output_file_id, "error": batch.error_file_id,
                            "errors": [e.message for e in errors],
                            "queue_full": any(e.code == QUEUE_FULL for e in errors)})

    async def outcomes(self, remote: str, status: BatchStatus) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        import openai

        max_tokens = self.config.sampling.max_tokens
        for file_id in (status.detail.get("output"), status.detail.get("error")):
            if not file_id:
                continue
            try:
                async with provider_errors(self._sdk(), self.where()):
                    async with self._client.files.with_streaming_response.content(file_id) as response:
                        async for line in response.iter_lines():
                            if line.strip():
                                row = json.loads(line)
                                yield row.get("custom_id", ""), row_outcome(row, self.config.model, max_tokens)
            except BatchLost:
                continue  # the file is gone: its rows count as unanswered and go out again
            except (json.JSONDecodeError, openai.APIResponseValidationError) as err:
                raise TeacherError(f"unreadable batch file {file_id}: {_short(err)}") from err


def row_outcome(row: dict[str, Any], model: str, max_tokens: int) -> dict[str, Any]:
    """One line of an output or error file, as the run store keeps it."""
    response = row.get("response") or {}
    code = response.get("status_code")
    if row.get("error") or code is None:  # never executed: the batch expired or was cancelled
        error = row.get("error") or {}
        return {"missing": error.get("code") or error.get("message") or "not executed"}
    body = response.get("body")
    if code == 200:
        try:
            return {"completion": read_completion(body, model, max_tokens).to_dict()}
        except BadResponse as err:
            return {"error": str(err), "reason": err.reason}
    error = (body or {}).get("error") if isinstance(body, dict) else None
    message = (error or {}).get("message") or str(body)[:300]
    if code in TRANSIENT_STATUS or code >= 500:
        return {"missing": f"HTTP {code}: {message}"}
    return {"refused": f"the provider refused the request in a batch (HTTP {code}): {message}"}
