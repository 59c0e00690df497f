"""What a provider's batch API offers batch mode (batch_teacher.py): the BatchProvider
contract, a batch's status, and the SDK errors as factory's. Each provider lives in a
module of its own (openai_batches.py, anthropic_batches.py), named in the backends
table (factory/config/backends.py); batch_teacher.py imports only this module."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from factory.core.errors import TeacherError, TeacherMisconfigured
from factory.teachers.base import Request


class BatchLost(TeacherError):
    """The provider no longer knows a batch (404): its unanswered requests go out again."""


def no_batch_api(where: str) -> TeacherMisconfigured:
    """A 404 when creating a batch: the server has no batch API (a vLLM server, a proxy)."""
    return TeacherMisconfigured(f"{where} has no batch API (404 when creating a batch); "
                                "use teacher.mode: online with this server")


@dataclass
class BatchStatus:
    status: str  # the provider's own word (in_progress, expired, ended ...)
    ended: bool
    counts: dict[str, int] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)  # what the provider needs to fetch results


class BatchProvider:
    """One provider's batch API. Outcomes are dicts, as the run store keeps them:
    {"completion": ...}; {"refused": the provider's message} for a row it refused;
    {"error": message, "reason": ...} for an answer that cannot be used (malformed,
    oversized); {"missing": why} for a row it did not answer."""

    name = ""  # the backend's name (its limits are in factory/config/backends.py)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def where(self) -> str:
        """Where the batches go, for run.json: never a secret."""
        return self.name

    def secrets(self) -> list[str]:
        return []

    def entry(self, key: str, request: Request) -> bytes:
        """The request as the provider takes it in a batch, named by `key` (JSON, one line)."""
        raise NotImplementedError

    async def submit(self, entries: list[bytes], record_file: Callable[[str], None]) -> tuple[str, str]:
        """Create a batch of `entries`; returns (its id, its status). `record_file(id)` is
        called with an uploaded input file's id before the batch is created."""
        raise NotImplementedError

    async def find(self, batch: dict[str, Any], known: set[str]) -> str | None:
        """The id of a batch recorded as submitting (created, then a crash before its id
        was stored), or None when the provider never created it. `known`: the ids the run
        store holds already."""
        return None

    async def status(self, remote: str) -> BatchStatus:
        """Raises BatchLost on a 404."""
        raise NotImplementedError

    def outcomes(self, remote: str, status: BatchStatus) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(key, outcome) of every row the ended batch reports, results and errors both."""
        raise NotImplementedError


class provider_errors:
    """An SDK's errors (after its own retries) as factory's: a 404 a lost batch or file,
    a refused key fatal, anything else a failure to ask again later. `sdk` is the
    `openai` or `anthropic` module: both name their errors alike."""

    def __init__(self, sdk, where: str):
        self.sdk, self.where = sdk, where

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind, err, tb) -> bool:
        sdk = self.sdk
        base = getattr(sdk, "OpenAIError", None) or sdk.AnthropicError
        if err is None or not isinstance(err, base):
            return False
        text = " ".join(str(err).split())[:300]
        if isinstance(err, sdk.NotFoundError):
            raise BatchLost(f"{self.where} answered 404: {text}") from err
        if isinstance(err, (sdk.AuthenticationError, sdk.PermissionDeniedError)):
            raise TeacherMisconfigured(f"{self.where} refused the key: {text}") from err
        raise TeacherError(f"batch API at {self.where}: {text}") from err
