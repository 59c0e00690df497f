"""The stage contract shared by every filter.

A stage takes records and yields the ones it keeps; each drop goes through `drop`,
which counts it under its reason and hands it, with the stage name, to the run's
rejection writer. Per-record filters implement `keep`; global stages (dedup,
diversity) implement `process` over the whole stream.
"""

from __future__ import annotations

import abc
import collections
import json
from typing import Any, Callable, Iterable, Iterator

from pydantic import Field

from factory.config.pipeline import PipelineFile, Strict
from factory.core.errors import ConfigError
from factory.core.record import Record, Rejection
from factory.inputs.records import is_dataset
from filters.context import StageContext  # noqa: F401 (stages and callers take it from here)
from filters.on_dataset import run_on_dataset

Verdict = bool | tuple[bool, str] | tuple[bool, str, str]


class Stage(abc.ABC):
    name: str = ""
    adds_metadata: frozenset[str] = frozenset()  # metadata keys this stage writes on the records it keeps

    class Config(Strict):
        """A stage's options; subclasses add theirs. Unknown keys are refused."""

        def reads(self) -> list[tuple[str, str, str]]:
            """What these options name in the records: (key, "role" or "field", name) for
            each role and metadata field, checked against what reaches the stage before
            anything is sent (a misspelt one would silently match nothing)."""
            return []

    def __init__(self, config: Strict | None = None, **options: Any) -> None:
        """`config`, or the same options as keywords (`MinHashDedup(threshold=0.9)`), as the
        pipeline file's entry gives them; raises ConfigError naming the bad key."""
        if options:
            if config is not None:
                raise TypeError("give the stage's options as a Config or as keywords, not both")
            config = _validated(self, options)
        self.config = config if config is not None else self.Config()
        self.seen = 0
        self.kept = 0
        self.dropped: collections.Counter[str] = collections.Counter()
        self._reject: Callable[[Rejection], None] = lambda rejection: None
        self.context: StageContext | None = None
        self.where = ""  # the stage's place in the pipeline file, for messages; set by build_stages
        self.position: int | None = None  # its index in the pipeline's `filters:`; set by build_stages
        # The funnel as the run store's verdicts tell it (filters/verdicts.py), once the stage ran or replayed.
        self.summary: dict[str, Any] | None = None
        self.expected: int | None = None  # how many records will come, when known (for progress)

    def prepare(self, pipeline: PipelineFile, where: str) -> None:
        """Check what can be checked before the run (templates, teacher settings);
        raise a UserError naming `where` and the key. Sends nothing."""

    def data_digest(self) -> str:
        """What decides this stage's verdicts besides its options and its input (the
        content of a file its options name, say): part of its verdict key, so a rerun
        replays its decisions only while this is unchanged."""
        return ""

    def check_models(self) -> None:
        """Raise ConfigError, saying how to get it, when a model the stage will load (an
        embedding model, a tokenizer) is not to be had here: checked at validate and
        before the first request, not after generation was paid for."""

    def templates(self) -> list:
        """The templates the stage renders (a judge's rubrics): copied into the run
        folder beside the pipeline, so the run can be reproduced from it."""
        return []

    def bind(self, reject: Callable[[Rejection], None], context: StageContext | None = None) -> None:
        self._reject = reject
        self.context = context

    def drop(self, record: Record, reason: str, detail: str = "", **extra: Any) -> None:
        self.dropped[reason] += 1
        self._reject(
            Rejection(record.id, self.name, reason, detail, record.messages, {**record.metadata, **extra})
        )

    @abc.abstractmethod
    def process(self, records: Iterable[Record]) -> Iterator[Record]:
        """Yield the kept records; call `drop` for each one not kept."""

    def __call__(self, records: Iterable[Record] | Any, **options: Any) -> Iterator[Record] | Any:
        """Records in, the kept ones out (a generator). A `datasets.Dataset` in: the stage runs
        on its rows alone and returns a Dataset of the kept rows (see filters/on_dataset.py;
        `options` go there)."""
        if is_dataset(records):
            return run_on_dataset(self, records, **options)
        return self._kept(records)

    def _kept(self, records: Iterable[Record]) -> Iterator[Record]:
        for record in self.process(self._count(records)):
            self.kept += 1
            yield record

    def _count(self, records: Iterable[Record]) -> Iterator[Record]:
        for record in records:
            self.seen += 1
            yield record

    def funnel(self) -> dict[str, Any]:
        return {"stage": self.name, "seen": self.seen, "kept": self.kept, "dropped": dict(self.dropped)}

    def outcome(self) -> dict[str, Any]:
        """What the run reports for this stage: the replayed summary when there is one."""
        return self.summary if self.summary is not None else self.funnel()


def _validated(stage: Stage, options: dict[str, Any]) -> Strict:
    from pydantic import ValidationError

    from factory.config.pipeline import describe_validation_error

    try:
        return stage.Config.model_validate(options)
    except ValidationError as err:
        raise ConfigError(f"{type(stage).__name__}: {describe_validation_error(err)}") from err


class RecordFilter(Stage):
    """A stage that judges each record on its own, streaming."""

    @abc.abstractmethod
    def keep(self, record: Record) -> Verdict:
        """True to keep; (False, reason) or (False, reason, detail) to drop."""

    def process(self, records: Iterable[Record]) -> Iterator[Record]:
        for record in records:
            verdict = self.keep(record)
            if not isinstance(verdict, tuple):
                verdict = (bool(verdict), "dropped")
            if verdict[0]:
                yield record
            else:
                self.drop(record, *verdict[1:])


class TextConfig(Stage.Config):
    """Which text a comparing stage reads (dedup, diversity).

    `roles`: the contents of these roles, in order; by default every role but `system`
    (one system prompt is shared by a whole dataset on purpose, and counting it would
    make every pair of records look alike). `fields`: metadata values by dotted path
    (`quote`, `source.document`, `input_columns.title`), after the roles' text. With
    only `fields` set, only they are compared.
    """

    roles: list[str] | None = None
    fields: list[str] | None = Field(None, min_length=1)

    def reads(self) -> list[tuple[str, str, str]]:
        return ([("roles", "role", role) for role in self.roles or ()]
                + [("fields", "field", path) for path in self.fields or ()])

    def text(self, record: Record) -> str:
        roles = self.roles if self.roles is not None or self.fields is None else []
        parts = [m["content"] for m in record.messages
                 if (m["role"] in roles if roles is not None else m["role"] != "system")]
        for path in self.fields or ():
            value = field_value(record.metadata, path)
            if value is not None:
                parts.append(value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False))
        return "\n".join(parts)

    def check_fields(self, records: list[Record], where: str, supplied: frozenset[str] = frozenset()) -> None:
        """A field no record has is a typo, not data: say so rather than compare empty
        text. Fields an earlier stage adds (`supplied`, by first name) are not checked."""
        for path in self.fields or ():
            if path.split(".")[0] in supplied:
                continue
            if records and all(field_value(r.metadata, path) is None for r in records):
                raise ConfigError(f"{where}.fields: no record has a metadata field {path!r}")


def field_value(metadata: dict[str, Any], path: str) -> Any:
    value: Any = metadata
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def chunked(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    chunk: list[Record] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
