"""The one record type every stage passes along, and the rejection that ends a sample."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from factory.core import jsonlines


def record_id(pipeline: str, task: str, index: int) -> str:
    """Deterministic: the same pipeline, task and sample index give the same id on every run."""
    return hashlib.sha256(f"{pipeline}\x1f{task}\x1f{index}".encode()).hexdigest()[:20]


@dataclass(slots=True)
class Record:
    id: str
    messages: list[dict[str, str]]
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        # metadata stays an object; export.py gives a dataset's rows one schema.
        return {"id": self.id, "messages": self.messages, "metadata": self.metadata}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Record":
        meta = row.get("metadata") or {}
        if isinstance(meta, str):
            meta = json.loads(meta)
        return cls(id=row["id"], messages=list(row["messages"]), metadata=dict(meta))


@dataclass(slots=True)
class Rejection:
    """A sample that did not make it, with the stage that dropped it and why."""

    id: str
    stage: str
    reason: str
    detail: str = ""
    messages: list[dict[str, str]] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return jsonlines.dumps({"id": self.id, "stage": self.stage, "reason": self.reason, "detail": self.detail,
                                "messages": self.messages, "metadata": self.metadata})
