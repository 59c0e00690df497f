"""The run report: one self-contained HTML page that opens offline.

Built from the run's own files (run.json, the dataset, rejected.jsonl), so
`factory report OUTPUT_DIR` rebuilds it at any time. Charts are inline SVG
(factory/outputs/charts.py); a few lines of script only check, once the page has loaded,
that every chart drew, and say so on the page (tests read it in a real browser).
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from factory.outputs import charts
from factory.outputs.compare_page import comparison_section
from factory.outputs.html_page import CHECK, PAGE

from factory.core import jsonlines
from factory.core.errors import InputDataError
from factory.core.files import atomic_write_text
from factory.core.redaction import Redactor

REPORT_FILE = "report.html"
COMPARE_FILE = "compare.json"  # written by a run with output.reference (factory/compare/)
SAMPLES = 12
_chart = charts.figure


def build_report(out_dir: Path, seen: "Summaries | None" = None) -> Path:
    """Write OUTPUT_DIR/report.html from the run's files; returns its path. `seen`: the
    summaries of the kept and rejected records made while they were written, so that
    they need not be read back (the same summaries, one pass less over the outputs)."""
    info_path = out_dir / "run.json"
    if not info_path.is_file():
        raise InputDataError(f"{out_dir}: no run.json here; give the folder a finished `factory run` wrote")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise InputDataError(f"{info_path}: not valid JSON ({err})") from err
    # One streaming pass over each file, keeping aggregates and a few samples: the report of
    # a million-row run takes the memory of a thousand-row one.
    kept = seen.kept if seen else KeptSummary.of(_kept_rows(out_dir))
    rejected = seen.rejected if seen else RejectedSummary.of(_jsonl(out_dir / "rejected.jsonl"))
    html = render(info, kept, rejected, _comparison(out_dir / COMPARE_FILE))
    path = out_dir / REPORT_FILE
    # The page quotes the data; keys never belong in data, but redact as everywhere else.
    atomic_write_text(path, Redactor.for_config(info.get("config", {}))(html))
    return path


class _Summary:
    """A summary built in one pass over rows, holding aggregates, never the rows."""

    @classmethod
    def of(cls, rows: Iterable[dict]):
        summary = cls()
        for row in rows:
            summary.add(row)
        return summary


@dataclass
class KeptSummary(_Summary):
    """What the page shows of the kept records: counts and histograms, and the first few."""

    count: int = 0
    # role -> {characters: messages}: exact, and bounded by the longest message, not the row count.
    lengths: dict[str, collections.Counter] = field(default_factory=dict)
    turns: collections.Counter = field(default_factory=collections.Counter)  # user turns -> records
    samples: list[dict] = field(default_factory=list)  # the first SAMPLES records

    def add(self, row: dict) -> None:
        self.count += 1
        # A preference row shows its prompt and chosen answer (the rejected one is in metadata).
        messages = row.get("messages") or [*(row.get("prompt") or []), *(row.get("chosen") or [])]
        self.turns[sum(m.get("role") == "user" for m in messages)] += 1
        for m in messages:
            if m.get("role") in ("user", "assistant"):
                self.lengths.setdefault(m["role"], collections.Counter())[len(m.get("content") or "")] += 1
        if len(self.samples) < SAMPLES:
            self.samples.append({"id": row.get("id", ""), "messages": messages,
                                 "metadata": _metadata(row.get("metadata"))})


@dataclass
class RejectedSummary(_Summary):
    """What the page shows of rejected.jsonl: records per (stage, reason), each with its first
    record, clipped to what the table prints."""

    reasons: collections.Counter = field(default_factory=collections.Counter)
    examples: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)  # -> (detail, user text)

    def add(self, row: dict) -> None:
        key = (row.get("stage", "?"), row.get("reason", "?"))
        self.reasons[key] += 1
        if key not in self.examples:
            text = next((m["content"] for m in (row.get("messages") or []) if m.get("role") == "user"), "")
            self.examples[key] = (_clip(row.get("detail", ""), 160), _clip(text, 200))

    def note(self, stage: str, reason: str, line: str) -> None:
        """A row as written (`line`, its JSON), read only when it is its key's first."""
        key = (stage, reason)
        if key in self.examples:
            self.reasons[key] += 1
        else:
            self.add(jsonlines.loads(line))

    def then(self, later: "RejectedSummary") -> "RejectedSummary":
        """This summary followed by `later`'s rows, as one pass over both would make it."""
        for key, count in later.reasons.items():
            self.reasons[key] += count
            self.examples.setdefault(key, later.examples[key])
        return self


@dataclass
class Summaries:
    """The report's summaries, made while a run writes its outputs (see build_report)."""

    kept: KeptSummary = field(default_factory=KeptSummary)
    rejected: RejectedSummary = field(default_factory=RejectedSummary)


def _metadata(value: Any) -> dict:
    """A row's metadata as a dict: writers store it as an object or as a JSON string."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def _kept_rows(out_dir: Path) -> Iterator[dict]:
    if (out_dir / "data.jsonl").is_file():
        yield from _jsonl(out_dir / "data.jsonl")
    elif (out_dir / "dataset").is_dir():
        yield from _dataset_rows(out_dir / "dataset")


def _dataset_rows(path: Path, batch_size: int = 1000) -> Iterator[dict]:
    """The saved dataset's rows, a batch at a time, reading only the columns the page shows."""
    from datasets import DatasetDict, load_from_disk

    loaded = load_from_disk(str(path))
    for ds in (loaded.values() if isinstance(loaded, DatasetDict) else [loaded]):
        columns = [c for c in ("id", "messages", "prompt", "chosen", "metadata") if c in ds.column_names]
        for batch in _column_batches(ds, columns, batch_size):
            for values in zip(*(batch[c] for c in columns)):
                yield dict(zip(columns, values))


def _column_batches(ds, columns: list[str], batch_size: int) -> Iterator[dict[str, list]]:
    """{column: values} a batch at a time. load_from_disk memory-maps the Arrow files, and every
    page read through the map counts as resident while the map lives, so one pass over it
    costs the dataset's size in RSS; the same files read as streams cost one batch."""
    import pyarrow as pa

    if ds.cache_files and getattr(ds, "_indices", None) is None:  # save_to_disk writes its rows in order
        for file in ds.cache_files:
            with pa.OSFile(file["filename"]) as source:
                for batch in pa.ipc.open_stream(source):
                    yield batch.select(columns).to_pydict()
    else:  # held in memory, or a view with an indices mapping: let datasets resolve it
        yield from ds.select_columns(columns).iter(batch_size=batch_size)


def _jsonl(path: Path) -> Iterator[dict]:
    if path.is_file():
        yield from (row for _, row in jsonlines.read(path, InputDataError))


def _comparison(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise InputDataError(f"{path}: not valid JSON ({err})") from err


def render(info: dict[str, Any], kept: KeptSummary, rejected: RejectedSummary,
           comparison: dict | None = None) -> str:
    sections = [_summary(info)]
    funnel = info["funnel"]
    names = ["requested"] + [s["stage"] for s in funnel["stages"]]
    values = [funnel["requested"]] + [s["kept"] for s in funnel["stages"]]
    sections.append(_section("Funnel", "Samples requested, then kept after each stage.",
                             _chart("funnel", charts.bars(names, values, "funnel"))))
    sections.append(_rejections(rejected))
    judge = next((s for s in funnel["stages"] if s.get("scores")), None)
    if judge:
        sc = judge["scores"]
        hist = sc["histogram"]
        sections.append(_section("Judge scores", f"Mean {sc['mean']:.2f}, median {sc['median']:g} of "
                                 f"{sc['count']} graded (scale {sc['scale'][0]}-{sc['scale'][1]}).",
                                 _chart("judge-scores", charts.bars(list(hist), list(hist.values()), "judge scores",
                                                                    charts.COLORS[2]))))
    sections.append(_quota(info))
    sections.append(_privacy_and_contamination(info))
    sections.append(_diversity_selection(info))
    sections.append(_lengths(kept.lengths))
    counts = kept.turns
    if counts and max(counts) > 1:
        xs = list(range(min(counts), max(counts) + 1))
        sections.append(_section("Turns per dialogue", "User turns in each kept conversation.",
                                 _chart("turns", charts.bars([str(x) for x in xs], [counts[x] for x in xs], "turns",
                                                             charts.COLORS[3]))))
    sections.append(_throughput(info))
    sections.append(_tokens(info))
    projection = next((s["projection"] for s in funnel["stages"] if s.get("projection")), None)
    if projection:
        sections.append(_section("Embedding map", "Records embedded for diversity sampling, projected to 2-D "
                                 "(PCA): kept versus dropped.",
                                 _chart("embedding-map", charts.scatter(_map_groups(projection), "embedding map"))))
    if comparison:

        sections.append(comparison_section(comparison))
    sections.append(_samples(kept))
    return PAGE.format(title=escape(info.get("name", "run")) + ": factory run report", body="\n".join(s for s in sections if s), check=CHECK)


def _map_groups(projection: dict) -> dict[str, list[list[float]]]:
    """The diversity stage's projection (x, y, kept flags) as kept and dropped points."""
    groups: dict[str, list[list[float]]] = {"kept": [], "dropped": []}
    for x, y, kept in zip(projection.get("x", []), projection.get("y", []), projection.get("kept", [])):
        groups["kept" if kept else "dropped"].append([x, y])
    return groups


def _summary(info: dict) -> str:
    funnel = info["funnel"]
    teacher = info.get("teacher") or {}
    facts = [("kept", f"{funnel['kept']:,} of {funnel['requested']:,}"), ("rejected", f"{funnel['rejected']:,}")]
    if teacher:
        facts.append(("teacher", f"{teacher.get('model')} ({teacher.get('backend')})"))
    if "input" in info:
        facts.append(("input", f"{info['input']['path']} ({info['input']['rows']:,} rows)"))
    usage = info.get("usage")
    if usage:
        runs = len(info.get("invocations") or [])
        facts.append(("requests", f"{usage['requests']:,} paid" + (f" over {runs} invocations" if runs > 1 else "")))
    cost = info.get("cost")
    if cost:
        facts.append(("cost", f"{cost['total']:,.4f} {cost['currency']}"))
    timings = info.get("timings", {})
    total = sum(v for v in timings.values() if isinstance(v, (int, float)) and v)
    facts.append(("time", f"{total:,.1f} s"))
    facts.append(("finished", str(info.get("finished_at", ""))))
    items = "".join(f"<div class=fact><b>{escape(k)}</b><span>{escape(v)}</span></div>" for k, v in facts)
    return f"<header><h1>{escape(info.get('name', 'run'))}</h1><div class=facts>{items}</div></header>"


def _rejections(rejected: RejectedSummary) -> str:
    if not rejected.reasons:
        return _section("Rejections", "Nothing was rejected.", "")
    rows, top = [], rejected.reasons.most_common(12)
    for (stage, reason), n in top:
        detail, text = rejected.examples[(stage, reason)]
        rows.append(f"<tr><td>{escape(stage)}</td><td>{escape(reason)}</td><td class=num>{n:,}</td>"
                    f"<td>{escape(detail)}<div class=quote>{escape(text)}</div></td></tr>")
    chart = _chart("rejections", charts.bars([f"{s}: {r}" for (s, r), _ in top], [n for _, n in top], "rejections",
                                             charts.COLORS[1]))
    table = ("<table><tr><th>stage</th><th>reason</th><th>count</th><th>an example</th></tr>"
             + "".join(rows) + "</table>")
    return _section("Rejections", "Top reasons, with one rejected record each (all are in rejected.jsonl).",
                    chart + table)


def _quota(info: dict[str, Any]) -> str:
    quota = info.get("quota")
    if not quota:
        return ""
    rows = "".join(f"<tr><td>{escape(c['cell'])}</td><td class=num>{c['quota']:,}</td>"
                   f"<td class=num>{c['requested']:,}</td><td class=num>{c['kept']:,}</td></tr>" for c in quota["cells"])
    chart = _chart("quota", charts.bars([c["cell"] for c in quota["cells"]], [c["requested"] for c in quota["cells"]],
                                        "requested per cell", charts.COLORS[3]))
    return _section("Size and balance", f"generate.keep {quota['keep']:,} in {quota['rounds']} round(s): "
                    "requested and kept per cell.", chart + "<table><tr><th>cell</th><th>quota</th><th>requested</th>"
                    "<th>kept</th></tr>" + rows + "</table>")


def _privacy_and_contamination(info: dict[str, Any]) -> str:
    """The pii stage's findings per kind and the decontaminate stage's benchmarks, as tables."""
    parts = []
    for stage in info["funnel"]["stages"]:
        if stage.get("stage") == "pii" and "found" in stage:
            rows = "".join(f"<tr><td>{escape(kind)}</td><td class=num>{n:,}</td>"
                           f"<td class=num>{stage['records_with'].get(kind, 0):,}</td></tr>"
                           for kind, n in stage["found"].items()) or "<tr><td colspan=3>none found</td></tr>"
            parts.append(_section("Personal data", f"Values found per kind ({stage['action']}).",
                                  "<table><tr><th>kind</th><th>found</th><th>records</th></tr>" + rows + "</table>"))
        if stage.get("stage") == "decontaminate" and "benchmarks" in stage:
            rows = "".join(f"<tr><td>{escape(b['name'])}</td><td class=num>{b['items']:,}</td>"
                           f"<td class=num>{b.get('ngram', '')}</td><td class=num>{b['dropped']:,}</td></tr>"
                           for b in stage["benchmarks"])
            parts.append(_section("Decontamination", "Records dropped for sharing a run of n words with a benchmark item.",
                                  "<table><tr><th>benchmark</th><th>items</th><th>n</th><th>dropped</th></tr>" + rows
                                  + "</table>"))
    return "".join(parts)


def _diversity_selection(info: dict[str, Any]) -> str:
    """A clustered diversity selection and its agreement with the exact one (see the card)."""
    stage = next((s for s in info["funnel"]["stages"] if s.get("stage") == "diversity"
                  and s.get("selection") == "clustered"), None)
    if stage is None:
        return ""
    a = stage.get("agreement") or {}
    rate = "not measured" if a.get("rate") is None else f"{a['rate']:.2%} of {a['sample']:,} sampled records"
    rows = [("method", stage.get("method", "")), ("clusters", f"{stage['clusters']:,}"),
            ("probes (nearest other clusters checked)", str(stage["probes"])),
            ("agreement with the exact selection", rate)]
    if a.get("rate") is not None:
        rows += [("kept that the exact rule drops", f"{a['wrongly_kept']:,}"),
                 ("dropped that the exact rule keeps", f"{a['wrongly_dropped']:,}")]
    body = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in rows)
    return _section("Diversity selection", "Selected within k-means clusters of the embeddings.",
                    f"<table>{body}</table>")


def _lengths(by_role: dict[str, collections.Counter]) -> str:
    if not by_role:
        return ""
    parts = []
    for k, role in enumerate(sorted(by_role, reverse=True)):
        lengths = by_role[role]
        parts.append(f"<h3>{escape(role)} <small>median {_median(lengths):,} characters</small></h3>")
        parts.append(_chart(f"length-{role}", charts.histogram_of_counts(lengths, f"{role} lengths", bins=16,
                                                                         color=charts.COLORS[k % 2])))
    return _section("Lengths", "Characters per message of the kept records, per role.", "".join(parts))


def _median(counts: Mapping[int, int]) -> int:
    """The upper median of the values `counts` counts (the value at index n // 2 once sorted)."""
    middle, seen = sum(counts.values()) // 2, 0
    for value in sorted(counts):
        seen += counts[value]
        if seen > middle:
            return value
    raise ValueError("no values")


def _throughput(info: dict) -> str:
    timeline = (info.get("engine") or {}).get("timeline") or []
    if not timeline:
        return ""
    rate = [(t, r) for t, r, _ in timeline]
    latency = [(t, lat) for t, _, lat in timeline]
    engine = info["engine"]
    mode = (engine.get("concurrency") or {}).get("mode", "")
    note = f"Generation requests completed per second, and their mean latency. Window: {mode}." if mode else ""
    return _section("Throughput and latency", note,
                    _chart("throughput", charts.lines({"requests/s": rate}, "throughput", "seconds into the run"))
                    + _chart("latency", charts.lines({"mean latency (s)": latency}, "latency", "seconds into the run")))


def _tokens(info: dict) -> str:
    usage = info.get("usage")
    if not usage:
        return ""
    names, values = ["all: prompt", "all: completion"], [usage["prompt_tokens"], usage["completion_tokens"]]
    for stage in info["funnel"]["stages"]:
        if stage.get("usage"):
            names += [f"{stage['stage']}: prompt", f"{stage['stage']}: completion"]
            values += [stage["usage"]["prompt_tokens"], stage["usage"]["completion_tokens"]]
    cost = info.get("cost")
    note = "Tokens of the whole run (every invocation, every teacher), and of each filter stage in the last invocation."
    if cost:
        note += (f" Cost {cost['total']:,.4f} {cost['currency']} ({cost['paid_now']:,.4f} paid by the last "
                 f"invocation, {cost['replayed_from_journal']:,.4f} by earlier ones)"
                 + (f", cap {cost['max_cost']:g}" if cost.get("max_cost") else "") + ".")
    return _section("Tokens and cost", note, _chart("tokens", charts.bars(names, values, "tokens", charts.COLORS[4])))


def _samples(kept: KeptSummary) -> str:
    if not kept.samples:
        return ""
    items = []
    for r in kept.samples:
        meta = r["metadata"]
        score = f" · judge {meta['judge_score']:g}" if isinstance(meta.get("judge_score"), (int, float)) else ""
        turns = "".join(f"<div class='msg {escape(m.get('role', ''))}'><b>{escape(m.get('role', ''))}</b>"
                        f"<p>{escape(m.get('content', ''))}</p></div>" for m in r["messages"])
        first = next((m["content"] for m in r["messages"] if m.get("role") == "user"), r["id"])
        items.append(f"<details><summary>{escape(_clip(first, 120))}<small>{escape(str(r['id']))}{score}"
                     f"</small></summary>{turns}</details>")
    return _section("Sample records", f"The first {len(kept.samples)} kept records.", "".join(items))


def _section(title: str, note: str, body: str) -> str:
    return f"<section><h2>{escape(title)}</h2>" + (f"<p class=note>{escape(note)}</p>" if note else "") + body + \
        "</section>"


def _clip(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "\u2026"
