"""Anthropic's Message Batches (`backend: anthropic`, `mode: batch`) at half the price:
every request inline in one POST, the batch polled until `ended`, then its results read.
Requests are built as the online teacher builds them (anthropic_teacher.AnthropicAPI)."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Callable

from factory.core import constants
from factory.config.pipeline import TeacherConfig
from factory.core.errors import BadResponse
from factory.teachers.anthropic_teacher import AnthropicAPI, completion_from_message, import_anthropic
from factory.teachers.base import Request
from factory.teachers.batch.provider import BatchLost, BatchProvider, BatchStatus, no_batch_api, provider_errors

# Error types of a batch row that say "not now" rather than "never": the row goes out again.
TRANSIENT_ERRORS = ("api_error", "overloaded_error", "rate_limit_error", "timeout_error")
# Seconds around the moment a batch was recorded within which its creation is looked for.
FIND_SLACK_S = 300.0


class AnthropicBatches(BatchProvider):
    """Message Batches: POST /v1/messages/batches with every request inline, polled
    (GET /v1/messages/batches/{id}) until `ended`, then its results_url read (JSONL,
    result.type succeeded, errored, canceled or expired)."""

    name = "anthropic"

    def __init__(self, config: TeacherConfig):
        self.config = config
        self.api = AnthropicAPI(config)

    def where(self) -> str:
        return self.api.where()

    def secrets(self) -> list[str]:
        return self.api.secrets()

    async def start(self) -> None:
        self.api.connect(constants.BATCH_HTTP_TIMEOUT_S)

    async def close(self) -> None:
        await self.api.close()

    @staticmethod
    def _sdk():
        return import_anthropic()

    def entry(self, key: str, request: Request) -> bytes:
        return json.dumps({"custom_id": key, "params": self.api.payload(request)}, ensure_ascii=False,
                          separators=(",", ":")).encode()

    async def submit(self, entries: list[bytes], record_file: Callable[[str], None]) -> tuple[str, str]:
        body = {"requests": [json.loads(entry) for entry in entries]}
        try:
            async with provider_errors(self._sdk(), self.where()):
                # A raw post: the typed-params walk over 100,000 requests would take seconds.
                batch = await self.api.client.post("/v1/messages/batches", cast_to=object, body=body)
        except BatchLost as err:
            raise no_batch_api(self.where()) from err
        return batch["id"], batch.get("processing_status", "in_progress")

    async def find(self, batch: dict[str, Any], known: set[str]) -> str | None:
        # Message Batches carry nothing of ours but the requests: the batch created in the
        # moment between asking and storing its id is the one of the same size created
        # then that the run store does not know. Should it be another's after all, its
        # rows are not ours, ours count as unanswered and go out again.
        since, until = batch["submitted"] - FIND_SLACK_S, batch["submitted"] + FIND_SLACK_S
        found = []
        async with provider_errors(self._sdk(), self.where()):
            async for candidate in self.api.client.messages.batches.list(limit=100):
                created = candidate.created_at.timestamp()
                if created < since:
                    break  # newest first
                total = sum(candidate.request_counts.model_dump().values())
                if created <= until and total == batch["requests"] and candidate.id not in known:
                    found.append(candidate.id)
        return found[0] if len(found) == 1 else None

    async def status(self, remote: str) -> BatchStatus:
        async with provider_errors(self._sdk(), self.where()):
            batch = await self.api.client.messages.batches.retrieve(remote)
        counts = batch.request_counts.model_dump() if batch.request_counts else {}
        return BatchStatus(batch.processing_status, batch.processing_status == "ended", counts)

    async def outcomes(self, remote: str, status: BatchStatus) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        max_tokens = self.config.sampling.max_tokens
        async with provider_errors(self._sdk(), self.where()):
            async for item in await self.api.client.messages.batches.results(remote):
                row = item.model_dump(mode="json")
                yield row.get("custom_id", ""), result_outcome(row.get("result") or {}, self.config.model, max_tokens)


def result_outcome(result: dict[str, Any], model: str, max_tokens: int) -> dict[str, Any]:
    """One result line's `result`, as the run store keeps it."""
    kind = result.get("type")
    if kind == "succeeded":
        try:
            return {"completion": completion_from_message(result.get("message"), model, max_tokens).to_dict()}
        except BadResponse as err:
            return {"error": str(err), "reason": err.reason}
    if kind == "errored":
        error = ((result.get("error") or {}).get("error")) or {}
        kind_of = error.get("type") or "error"
        if kind_of in TRANSIENT_ERRORS:
            return {"missing": f"{kind_of}: {error.get('message', '')}"}
        return {"refused": f"the provider refused the request in a batch ({kind_of}): {error.get('message', '')}"}
    return {"missing": kind or "no result"}  # canceled, expired
