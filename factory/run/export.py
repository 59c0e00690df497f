"""The kept records through the filter stages and into the dataset, and rejected.jsonl:
what `factory run` and `factory filter` both write into a run's staging folder."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable, Iterator

from factory.core import jsonlines
from factory.core.record import Record, Rejection
from factory.core.redaction import Redactor
from factory.outputs.report import RejectedSummary, Summaries
from filters.base import Stage, StageContext


def apply_stages(stages: list[Stage], records: Iterator[Record], context: StageContext, staging: Path,
                 redact: Redactor, pairs: bool = False, held: bool = False,
                 seen: Summaries | None = None) -> tuple[int, list[dict], Path]:
    """Run `records` through the filter stages and write the kept ones as the dataset in `staging`
    (as preference rows when `pairs`; `held`: the caller holds all of `records` in memory;
    `seen`: the report's summaries, fed as rows are written).

    Returns the kept count, a few example records for the card, and the file the
    stages' rejections went to.
    """
    from factory.outputs.dataset import write_dataset
    from filters.verdicts import through_stages

    work = staging / ".work"
    work.mkdir(parents=True, exist_ok=True)
    filter_rejects = work / "rejected.filters.jsonl"
    with open(filter_rejects, "w", encoding="utf-8") as rej:
        def rejected(r: Rejection) -> None:
            line = redact(r.to_json())
            rej.write(line + "\n")
            if seen is not None:
                seen.rejected.note(r.stage, r.reason, line)

        for stage in stages:
            stage.bind(rejected, context)
        records = through_stages(stages, records, context.store, work, held)
        examples: list[dict] = []
        output = context.pipeline.config.output
        kept = write_dataset(_sample(records, examples), staging, work, output.formats, pairs=pairs,
                             reasoning_in_messages=output.reasoning == "messages", held=held,
                             each_row=seen.kept.add if seen is not None else None)
    return kept, examples, filter_rejects


def _sample(records: Iterator[Record], examples: list[dict]) -> Iterator[Record]:
    for record in records:
        if len(examples) < 3:
            examples.append({"messages": record.messages})
        yield record


def write_rejected(path: Path, earlier: list[Iterable[dict]], filtered: Path, redact: Redactor,
                   seen: Summaries | None = None) -> None:
    """rejected.jsonl: the `earlier` rejections (generation's), then the filter stages' from
    `filtered`, which is moved in whole when there are no earlier ones. `seen.rejected`
    (the filter stages' rows) becomes the summary of the whole file."""
    if not earlier:
        filtered.replace(path)
    else:
        tmp = path.with_name(f".{path.name}.tmp")
        first = RejectedSummary()
        with open(tmp, "w", encoding="utf-8") as out:
            for rows in earlier:
                for row in rows:
                    line = redact(jsonlines.dumps(row))
                    out.write(line + "\n")
                    first.note(row.get("stage", "?"), row.get("reason", "?"), line)
        if seen is not None:
            seen.rejected = first.then(seen.rejected)
        with open(tmp, "ab") as out, open(filtered, "rb") as f:
            shutil.copyfileobj(f, out)
        tmp.replace(path)
    shutil.rmtree(filtered.parent, ignore_errors=True)
