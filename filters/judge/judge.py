"""Judge scoring: a teacher model grades each record against a rubric template.

The rubric (`prompts/judge/qa.j2` for single-turn records, `judge/dialogue.j2` for
conversations, or the pipeline's own) asks for a short rationale and a score; the
answer comes through the JSON schema path when the server supports it, and a tolerant
parser also reads the common `Rating: [[7]]` and `Score: 7/10` forms. Requests go
through the same engine as generation (window, rate limits, journal), so a rerun
pays only for the records not graded yet, and changing `min_score` costs nothing.
"""

from __future__ import annotations

import asyncio
import re
import statistics
from typing import Any, Iterable, Iterator, Literal

from pydantic import Field, model_validator

from factory.core import constants
from factory.config.backends import BATCH_BACKENDS
from factory.config.pipeline import PipelineFile, TeacherConfig, derived_teacher
from factory.engine.engine import Engine, RunStats, run_task
from factory.engine.progress import Progress
from factory.core.record import Record
from factory.engine.open_engine import open_engine
from factory.core.stopping import RunStopping, Stop
from factory.store.run_store import RunStore
from factory.core.structured import JSONNotFound, extract_json, strict_object
from factory.tasks.asking import NoUsableAnswer, Unusable, ask_until_usable
from factory.tasks.base import Asker, Task
from factory.teachers.base import Completion
from factory.inputs.templates import Template, TemplateLibrary
from filters.base import Stage, chunked
from filters.judge.judge_ray import asked_in_shards, sharded

DEFAULT_RUBRICS = {"single_turn": "judge/qa.j2", "multi_turn": "judge/dialogue.j2"}
# What a rubric template may use; a template naming anything else fails at validation.
RUBRIC_VARIABLES = frozenset(
    {"messages", "conversation", "question", "answer", "system", "source", "turns", "metadata", "scale_min", "scale_max"}
)

_BRACKETED = re.compile(r"\[\[\s*(-?\d+(?:\.\d+)?)\s*\]\]")
_LABELLED = re.compile(r"\b(?:score|rating)\b\s*[:=]?\s*\**\s*(-?\d+(?:\.\d+)?)(?:\s*/\s*\d+)?", re.I)


def score_schema(lo: int, hi: int) -> dict[str, Any]:
    # The rationale first: a model that explains before it scores scores more carefully.
    return strict_object({"rationale": {"type": "string"}, "score": {"type": "integer", "minimum": lo, "maximum": hi}})


class Unscorable(ValueError):
    """The judge answered, but no score on the scale can be read from it."""


def parse_score(text: str, lo: float, hi: float) -> tuple[float, str]:
    """(score, rationale) from a judge's answer: JSON first, then `[[7]]`, then `Score: 7`.

    Only the verdict counts: the last bracketed or labelled score, since the judge is
    asked to reason first and score last, and its reasoning may quote the rubric's own
    numbers ("a score of 10 means ...", "score 1 is for ...")."""
    score: Any = None
    rationale = ""
    try:
        value = extract_json(text)
    except JSONNotFound:
        value = None
    if isinstance(value, dict) and "score" in value:
        score, rationale = value["score"], str(value.get("rationale") or "").strip()
    else:
        match = _last(_BRACKETED, text or "") or _last(_LABELLED, text or "")
        if match is None:
            raise Unscorable("no score found in the judge's answer")
        score = match.group(1)
        rationale = (text[: match.start()] + text[match.end():]).strip()
        rationale = re.sub(r"[\s*]*(Rating|Score)[\s*:]*$", "", rationale, flags=re.I).strip(" \n*:-")
    try:
        score = float(score)
    except (TypeError, ValueError):
        raise Unscorable(f"score {score!r} is not a number") from None
    if not lo <= score <= hi:
        raise Unscorable(f"score {score:g} is outside the scale {lo:g}-{hi:g}")
    return score, rationale[:2000]


def _last(pattern: re.Pattern, text: str) -> re.Match | None:
    found = None
    for found in pattern.finditer(text):
        pass
    return found


def rubric_variables(record: Record, lo: int, hi: int) -> dict[str, Any]:
    turns = [m for m in record.messages if m["role"] != "system"]
    system = "\n".join(m["content"] for m in record.messages if m["role"] == "system")
    users = [m["content"] for m in turns if m["role"] == "user"]
    assistants = [m["content"] for m in turns if m["role"] == "assistant"]
    meta = record.metadata
    return {
        "messages": record.messages,
        "conversation": "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in turns),
        "question": users[0] if users else "",
        "answer": assistants[-1] if assistants else "",
        "system": system,
        # Document-grounded records carry the text they were made from.
        "source": meta.get("context") or meta.get("source_text") or "",
        "turns": len(turns),
        "metadata": meta,
        "scale_min": lo,
        "scale_max": hi,
    }


def judge_teacher(pipeline: PipelineFile, overrides: dict[str, Any], where: str) -> TeacherConfig:
    """The pipeline's teacher with the judge's own keys on top; temperature 0 unless set."""
    return derived_teacher(pipeline, overrides, f"{where}.teacher", sampling_defaults={"temperature": 0.0})


class Judge(Stage):
    name = "judge"
    adds_metadata = frozenset({"judge_score", "judge_rationale", "judge_model", "judge_scores", "judge_error"})

    class Config(Stage.Config):
        # A template under prompts/; by default judge/qa.j2 for single-turn records and
        # judge/dialogue.j2 for conversations.
        rubric: str | None = None
        scale: tuple[int, int] = (1, 10)
        min_score: float | None = None
        # Grade each record this many times and aggregate (a steadier score for a noisy judge).
        samples: int = Field(1, ge=1, le=16)
        aggregate: Literal["mean", "median"] = "mean"
        max_attempts: int = Field(3, ge=1, le=10)
        # A record the judge could not grade: drop it (default) or keep it unscored.
        on_error: Literal["drop", "keep"] = "drop"
        # Keys of `teacher:` to change for the judge: model, base_url, api_key_env, sampling ...
        teacher: dict[str, Any] = Field(default_factory=dict)

        @model_validator(mode="after")
        def _scale(self):
            lo, hi = self.scale
            if lo >= hi:
                raise ValueError(f"scale: low end {lo} must be below high end {hi}")
            if self.min_score is not None and not lo <= self.min_score <= hi:
                raise ValueError(f"min_score {self.min_score:g} is outside the scale {lo}-{hi}")
            return self

    def __init__(self, config=None, **options) -> None:
        super().__init__(config, **options)
        self.stats = RunStats()
        self.scores: list[float] = []  # every graded record's score, for the card and report
        self.rubrics: dict[str, Template] = {}

    def prepare(self, pipeline: PipelineFile, where: str) -> None:
        judge_teacher(pipeline, self.config.teacher, where)
        library = TemplateLibrary(pipeline.prompts_dirs())
        names = {kind: self.config.rubric for kind in DEFAULT_RUBRICS} if self.config.rubric else DEFAULT_RUBRICS
        self.rubrics = {kind: library.load(name, RUBRIC_VARIABLES, where=f"{where}.rubric")
                        for kind, name in names.items()}

    def teacher_config(self, pipeline: PipelineFile) -> TeacherConfig:
        """The teacher this judge asks: the pipeline's, with the judge's own keys on top."""
        return judge_teacher(pipeline, self.config.teacher, self.where)

    def templates(self) -> list[Template]:
        return list(self.rubrics.values())

    def rubric_for(self, record: Record) -> Template:
        users = sum(1 for m in record.messages if m["role"] == "user")
        return self.rubrics["multi_turn" if users > 1 else "single_turn"]

    def process(self, records: Iterable[Record]) -> Iterator[Record]:
        # Records are graded a chunk at a time over one engine, so the teacher's window
        # stays full while memory holds one chunk, not the dataset. Each request is named
        # by the record id, so the chunking never changes what is asked.
        context = self.context
        if context is None:
            raise RuntimeError("the judge stage needs a context (bind it before running)")
        teacher = self.teacher_config(context.pipeline)
        stop = context.stop or Stop(0)
        progress = Progress(self.expected or 0, self.stats, label="judge", enabled=context.show_progress)
        # Used on its own (not inside a run): the stage keeps its own store in out_dir.
        store = context.store or RunStore.open(context.out_dir)
        grading = _Grading(open_engine(teacher, store, self.stats, stop, context.budget), store)
        try:
            if sharded(self, context):
                # Every request asked in shards first, into the journal: the pass below replays them.
                records = asked_in_shards(self, records, grading, store, stop)
            for chunk in chunked(records, _chunk_size(teacher)):
                if not progress.started:
                    progress.start()
                outcomes = grading.grade(self.grade_task(chunk), progress.update)
                if stop.requested:  # a signal or an outage: the grades so far are stored, the rest wait
                    raise RunStopping(stop.reason)
                for i, record in enumerate(chunk):
                    yield from self._verdict(record, outcomes[i], teacher.model)
        finally:
            progress.close()
            grading.close()
            if context.store is None:
                store.close()

    def grade_task(self, records: list[Record]) -> _GradeTask:
        """The task grading `records`, one unit each."""
        return _GradeTask(self, records, self.context.pipeline.config.seed)

    def _verdict(self, record: Record, outcome: "_Outcome", model: str) -> Iterator[Record]:
        c = self.config
        if outcome.score is None:
            if c.on_error == "keep":
                record.metadata["judge_error"] = outcome.detail
                yield record
            else:
                self.drop(record, outcome.reason, outcome.detail)
            return
        meta = record.metadata
        self.scores.append(outcome.score)
        meta["judge_score"] = round(outcome.score, 4)
        meta["judge_rationale"] = outcome.rationale
        meta["judge_model"] = model
        if len(outcome.scores) > 1:
            meta["judge_scores"] = outcome.scores
        if c.min_score is not None and outcome.score < c.min_score:
            self.drop(record, "low_score", f"score {outcome.score:g} < min_score {c.min_score:g}: {outcome.rationale}")
        else:
            yield record

    def funnel(self) -> dict[str, Any]:
        s = self.stats
        out = {**super().funnel(), "usage": s.usage()}
        if self.scores:
            lo, hi = self.config.scale
            histogram = {str(b): 0 for b in range(int(lo), int(hi) + 1)}
            for score in self.scores:
                histogram[str(int(round(score)))] += 1
            out["scores"] = {"count": len(self.scores), "mean": round(statistics.fmean(self.scores), 4),
                             "median": statistics.median(self.scores), "scale": [lo, hi], "histogram": histogram}
        return out


def _chunk_size(teacher) -> int:
    """Records graded at a time. In batch mode a chunk is a batch round (up to 24 h), so a
    chunk fills a whole batch: one round per batch, not one per JUDGE_CHUNK records."""
    if teacher.mode != "batch":
        return constants.JUDGE_CHUNK
    return max(constants.JUDGE_CHUNK, teacher.batch.max_requests or BATCH_BACKENDS[teacher.backend].max_requests)


class _Grading:
    """The stage's engine, opened at its first use on an event loop of its own and
    closed with the stage: one teacher for the journal check and every chunk."""

    def __init__(self, opening, store: RunStore):
        self.opening = opening
        self.store = store
        self.runner = asyncio.Runner()
        self.engine: Engine | None = None

    def _opened(self) -> Engine:
        if self.engine is None:
            self.engine = self.runner.run(self.opening.__aenter__())
        return self.engine

    def grade(self, task: _GradeTask, on_progress) -> dict[int, _Outcome]:
        """Each record's outcome, by its unit; stored answers are replayed, the rest asked."""
        outcomes: dict[int, _Outcome] = {}
        try:
            self.runner.run(run_task(task, self._opened(), lambda unit, results: outcomes.update(results),
                                     on_progress))
        finally:
            self.store.commit()
        return outcomes

    def with_engine(self, work):
        """What `await work(engine)` returns, run on the stage's loop with its engine."""
        return self.runner.run(work(self._opened()))

    def close(self) -> None:
        try:
            if self.engine is not None:
                self.runner.run(self.opening.__aexit__(None, None, None))
        finally:
            self.runner.close()


class _Outcome:
    __slots__ = ("score", "scores", "rationale", "reason", "detail")

    def __init__(self, scores: list[float], rationale: str = "", reason: str = "", detail: str = "",
                 aggregate: str = "mean"):
        self.scores = scores
        self.score = (statistics.median(scores) if aggregate == "median" else statistics.fmean(scores)) if scores else None
        self.rationale = rationale
        self.reason = reason
        self.detail = detail


class _GradeTask(Task):
    """Each record is a unit; each of its samples is one request (with retries)."""

    name = "judge"

    def __init__(self, judge: Judge, records: list[Record], pipeline_seed: int):
        self.judge = judge
        self.records = records
        self.pipeline_seed = pipeline_seed
        lo, hi = judge.config.scale
        self.schema = score_schema(lo, hi)

    def units(self) -> int:
        return len(self.records)

    def requested(self) -> int:
        return len(self.records)

    def check(self) -> list[dict[str, Any]]:
        return []

    def unit_failure(self, unit: int, reason: str, detail: str) -> list[tuple[int, _Outcome]]:
        return [(unit, _Outcome([], reason=f"judge_{reason}", detail=detail))]

    async def run_unit(self, unit: int, asker: Asker) -> list[tuple[int, _Outcome]]:
        c = self.judge.config
        record = self.records[unit]
        lo, hi = c.scale
        prompt = self.judge.rubric_for(record).render(rubric_variables(record, lo, hi))
        messages = [{"role": "user", "content": prompt}]
        # Every sample ends before a failure of one is raised: none is left running unseen.
        results = await asyncio.gather(*(self._sample(record, messages, s, asker) for s in range(c.samples)),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        scored = [r for r in results if r[0] is not None]
        if not scored:
            _, reason, detail = results[0]
            return [(unit, _Outcome([], reason=reason, detail=detail))]
        return [(unit, _Outcome([s for s, _, _ in scored], rationale=scored[0][1], aggregate=c.aggregate))]

    async def _sample(self, record: Record, messages: list[dict], sample: int, asker: Asker) -> tuple:
        c = self.judge.config
        lo, hi = c.scale
        # The record id (not its position) names the request, so reordering or filtering
        # upstream never re-grades a record the journal already holds.
        unit_key = f"judge:{record.id}:{sample}"

        def use(completion: Completion, attempt: int) -> tuple[float, str]:
            try:
                return parse_score(completion.text, lo, hi)
            except Unscorable as err:
                raise Unusable("unparseable", f"{err} (attempt {attempt + 1}): {completion.text[:200]!r}") from err

        try:
            answer = await ask_until_usable(asker, messages, use, unit=unit_key, pipeline_seed=self.pipeline_seed,
                                            max_attempts=c.max_attempts, schema=self.schema,
                                            schema_name="judge_score")
        except NoUsableAnswer as err:
            # A judge's reasons say whose answer it was: judge_unparseable, judge_bad_response ...
            return None, f"judge_{err.reason}", err.detail
        score, rationale = answer.value
        return score, rationale, ""
