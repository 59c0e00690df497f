"""The run report: written with every run, rebuilt by `factory report`, checked in a real browser."""

from __future__ import annotations

import json
import pickle
import random
import re

import pytest

from factory.outputs import charts
from factory.outputs.report import SAMPLES, KeptSummary, RejectedSummary, _column_batches, _median, build_report
from tests.helpers.browser import browse
from tests.helpers.datafiles import read_jsonl
from tests.helpers.pipelines import write_pipeline
from tests.helpers.processes import assert_user_error, factory_cli


def run_dialogues(tmp_path, url):
    (tmp_path / "prompts" / "dialogue").mkdir(parents=True, exist_ok=True)
    path = write_pipeline(
        tmp_path, url, generate={"task": "dialogue", "count": 12, "turns": [1, 3], "system_prompt": "You help."},
        seeds={"persona": ["a nurse", "a pilot", "a baker"], "goal": ["reset a password", "export notes"]},
        filters=[{"type": "exact_dedup"}, {"type": "judge", "min_score": 6}], teacher__price={"input": 1, "output": 2})
    result = factory_cli("run", str(path), "--quiet")
    assert result.returncode == 0, result.stderr
    return tmp_path / "out"


def test_every_run_writes_a_report_and_factory_report_rebuilds_it(tmp_path, loopback):
    out = run_dialogues(tmp_path, loopback())
    page = out / "report.html"
    html = page.read_text()
    for title in ("Funnel", "Rejections", "Judge scores", "Lengths", "Turns per dialogue", "Throughput and latency",
                  "Tokens and cost", "Sample records"):
        assert f"<h2>{title}</h2>" in html, title
    assert "low_score" in html  # a top rejection reason, with its example
    assert not re.search(r'(src|href)="', html) and "<link" not in html and "@import" not in html  # offline
    page.unlink()
    result = factory_cli("report", str(out))
    assert result.returncode == 0, result.stderr
    assert page.read_text() == html  # rebuilt from the run's files alone


def test_the_summaries_made_while_writing_are_those_of_the_files(tmp_path, loopback):
    """A run summarises its kept and rejected rows as it writes them: the page is the one
    rebuilt from the files alone, with generation's rejections and a filter's together."""
    url = loopback(faults={"malformed": 0.15, "empty": 0.1}, seed=5, retry_after=0.01)
    path = write_pipeline(tmp_path, url, generate__count=40, generate__pairs_per_request=1,
                          teacher__max_retries=1, generate__max_attempts=1,
                          filters=[{"type": "exact_dedup"}, {"type": "judge", "min_score": 6}])
    result = factory_cli("run", str(path), "--quiet")
    out = tmp_path / "out"
    stages = {r["stage"] for r in read_jsonl(out / "rejected.jsonl")}
    assert {"generate", "judge"} <= stages, (stages, result.stderr)
    html = (out / "report.html").read_text()
    assert build_report(out).read_text() == html, result.stderr


def test_the_report_reads_the_saved_dataset_when_there_is_no_data_jsonl(tmp_path, loopback):
    out = run_dialogues(tmp_path, loopback())
    html = (out / "report.html").read_text()
    (out / "data.jsonl").unlink()
    assert build_report(out).read_text() == html  # the same page from dataset/ alone


@pytest.mark.parametrize("as_text", [True, False])
def test_metadata_may_be_a_json_string_or_an_object(tmp_path, loopback, as_text):
    out = run_dialogues(tmp_path, loopback())
    html = (out / "report.html").read_text()
    rows = read_jsonl(out / "data.jsonl")
    for row in rows:
        meta = row["metadata"]
        meta = json.loads(meta) if isinstance(meta, str) else meta
        row["metadata"] = json.dumps(meta) if as_text else meta
    (out / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert build_report(out).read_text() == html
    assert " · judge " in html  # the samples show the judge score read from metadata


def test_dataset_rows_read_as_streams_are_the_rows_datasets_gives(tmp_path):
    from datasets import Dataset, load_from_disk

    rng = random.Random(2)
    rows = [{k: synthetic_row(rng, i)[k] for k in ("id", "messages", "metadata")} for i in range(2_500)]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "dataset"))
    saved = load_from_disk(str(tmp_path / "dataset"))
    in_memory = Dataset.from_list(rows)  # no files: read through datasets itself
    columns = ["id", "messages", "metadata"]
    for ds in (saved, in_memory):
        got = [dict(zip(columns, values)) for batch in _column_batches(ds, columns, 1000)
               for values in zip(*(batch[c] for c in columns))]
        assert got == rows
    assert saved.cache_files and not in_memory.cache_files


def synthetic_row(rng: random.Random, i: int) -> dict:
    user, answer = "q" * rng.randint(5, 300), "a" * rng.randint(20, 2000)
    turns = rng.randint(1, 4)
    return {"id": f"r{i}", "messages": [{"role": "system", "content": "Be brief."},
                                        *[m for _ in range(turns) for m in ({"role": "user", "content": user},
                                                                            {"role": "assistant", "content": answer})]],
            "metadata": json.dumps({"judge_score": rng.randint(1, 10), "seed": {"topic": "x" * 200}}),
            "stage": "judge", "reason": rng.choice(["low_score", "parse_error", "too_short"]), "detail": "d" * 500}


def test_the_summaries_stay_the_same_size_as_the_rows_grow():
    """The report keeps aggregates and a few samples, never the rows: ten times the rows, the same memory."""
    sizes = {}
    for n in (2_000, 20_000):
        rng = random.Random(0)
        rows = (synthetic_row(rng, i) for i in range(n))  # a generator: read once, never held
        kept = KeptSummary.of(rows)
        rng = random.Random(1)
        rejected = RejectedSummary.of(synthetic_row(rng, i) for i in range(n))
        assert kept.count == n and len(kept.samples) == SAMPLES
        assert sum(kept.turns.values()) == n and sum(rejected.reasons.values()) == n
        sizes[n] = len(pickle.dumps((kept, rejected)))
    assert sizes[20_000] < 1.3 * sizes[2_000], sizes


def test_a_histogram_of_counts_draws_what_the_histogram_of_values_draws():
    rng = random.Random(5)
    values = [rng.randint(0, 5000) for _ in range(3000)] + [7] * 50
    counts: dict[int, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    assert charts.histogram_of_counts(counts, "x", bins=16) == charts.histogram(values, "x", bins=16)


@pytest.mark.parametrize("values", [[4], [1, 2], [3, 1, 2], [5, 5, 1, 9], [2, 8, 8, 8, 1, 0]])
def test_median_of_counts_is_the_sorted_list_s_middle_value(values):
    counts: dict[int, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    assert _median(counts) == sorted(values)[len(values) // 2]


def test_report_of_a_folder_that_is_not_a_run(tmp_path):
    result = factory_cli("report", str(tmp_path))
    assert_user_error(result.returncode, result.stderr, [str(tmp_path), "run.json"])


def test_the_report_loads_in_a_browser_with_every_chart_drawn(tmp_path, loopback):
    out = run_dialogues(tmp_path, loopback())
    screenshot = tmp_path / "report.png"
    dom, log = browse(out / "report.html", screenshot)
    status = re.search(r'id="report-status" data-charts="(\d+)" data-drawn="(\d+)" data-errors="(\d+)"', dom)
    assert status, dom[-2000:]
    charts, drawn, errors = map(int, status.groups())
    assert charts >= 7 and drawn == charts and errors == 0, (charts, drawn, errors)
    assert 'data-drawn="no"' not in dom
    console = [line for line in log.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    assert screenshot.stat().st_size > 20_000
    print(f"report screenshot: {screenshot}")
