"""The decontaminate stage: planted benchmark items found verbatim, reformatted and embedded
in longer answers; near misses kept; every source form; the index cached in the run folder."""

from __future__ import annotations

import csv
import json
import random

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from factory.cli import main
from factory.core.record import Record
from filters.decontaminate.decontaminate import Decontaminate
from filters.decontaminate.ngram_index import NgramIndex
from tests.helpers.datafiles import read_jsonl, write_input
from tests.helpers.pipelines import write_pipeline
from tests.helpers.processes import assert_user_error, factory_cli

WORDS = ("harbour tide channel pilot vessel anchor current estuary beacon ledger cargo invoice clerk ferry "
         "lantern quarry orchard meadow furnace kettle saddle timber copper wagon thistle harvest").split()


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "?"


def make_items(n: int = 60, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    return [{"id": f"q{i}", "question": sentence(rng, rng.randint(16, 30)), "answer": rng.choice(WORDS)}
            for i in range(n)]


def reformatted(text: str) -> str:
    """The same words with another case, spacing and punctuation."""
    return "  ".join(w.upper() if i % 3 == 0 else w + "," for i, w in enumerate(text.rstrip("?").split())) + " !!"


def rec(rid: str, user: str, answer: str) -> Record:
    return Record(rid, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": user},
                        {"role": "assistant", "content": answer}])


def stage_for(tmp_path, items, columns=None, **options) -> Decontaminate:
    path = tmp_path / "bench.jsonl"
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    stage = Decontaminate(Decontaminate.Config(benchmarks=[{"file": str(path), "columns": columns}], **options))
    stage.load(tmp_path)
    return stage


def test_verbatim_reformatted_and_embedded_items_are_dropped_and_near_misses_kept(tmp_path):
    items = make_items()
    stage = stage_for(tmp_path, items)
    rejected = []
    stage.bind(rejected.append)
    rng = random.Random(5)
    q = [i["question"] for i in items]
    twelve = " ".join(q[5].split()[:12])  # twelve words in a row: below 13
    records = [
        rec("verbatim", q[0], "Let me think."),
        rec("reformatted", reformatted(q[1]), "Sure."),
        rec("embedded", "Tell me a story.", f"{sentence(rng, 40)} As the old quiz asked: {q[2]} {sentence(rng, 30)}"),
        rec("across", " ".join(q[3].split()[:8]), " ".join(q[3].split()[8:])),  # split over two messages
        rec("twelve", twelve, "No more."),
        rec("shuffled", " ".join(reversed(q[4].split())), "Backwards."),
        *(rec(f"clean{j}", sentence(rng, 25), sentence(rng, 40)) for j in range(40)),
    ]
    kept = [r.id for r in stage(records)]
    dropped = {r.id: r for r in rejected}
    assert set(dropped) == {"verbatim", "reformatted", "embedded", "across"}
    assert kept == ["twelve", "shuffled", *(f"clean{j}" for j in range(40))]
    hit = dropped["embedded"]
    assert hit.stage == "decontaminate" and hit.reason == "contaminated"
    assert hit.metadata["benchmark"] == "bench" and hit.metadata["benchmark_item"] == "q2"
    assert hit.detail.startswith("shares 13 words with bench item q2: \"")
    assert hit.metadata["shared_ngram"] in " ".join(q[2].lower().rstrip("?").split())
    assert dropped["reformatted"].metadata["benchmark_item"] == "q1"
    assert stage.funnel()["benchmarks"] == [{"name": "bench", "items": 60, "dropped": 4, "ngram": 13, "items_too_short": 0}]


def test_short_items_use_a_shorter_n_and_match_whole(tmp_path):
    rng = random.Random(2)
    # A benchmark of 9- to 11-word items: n is its 5th percentile length, 9.
    items = [{"id": f"s{i}", "text": sentence(rng, 9 + i % 3)} for i in range(40)] + [{"id": "tiny", "text": "Name a river."}]
    stage = stage_for(tmp_path, items)
    rejected = []
    stage.bind(rejected.append)
    nine = items[0]["text"]  # exactly 9 words
    ten = items[1]["text"]
    records = [rec("nine", f"Quiz time. {nine} Answer below.", "ok"),
               rec("ten-part", " ".join(ten.split()[:9]), "ok"),  # 9 of its 10 words: a 9-gram of it
               rec("eight", " ".join(nine.split()[:8]), "ok"),  # 8 words of a 9-word item: no match
               rec("tiny", "Name a river.", "The Nile.")]  # 3-word items are not checked
    kept = [r.id for r in stage(records)]
    assert kept == ["eight", "tiny"]
    assert {r.id for r in rejected} == {"nine", "ten-part"}
    assert stage.index.ngram_of == [9] and stage.index.too_short == [1]


def test_an_item_shorter_than_n_must_appear_whole(tmp_path):
    rng = random.Random(4)
    long_items = [{"id": f"l{i}", "text": sentence(rng, 20)} for i in range(95)]
    short = [{"id": f"s{i}", "text": sentence(rng, 10)} for i in range(4)]  # fewer than 5%: n stays 13
    stage = stage_for(tmp_path, long_items + short)
    rejected = []
    stage.bind(rejected.append)
    whole = short[0]["text"]
    records = [rec("whole", "Intro words here.", f"Consider this: {whole}"),
               rec("part", " ".join(whole.split()[:9]), "ok")]
    assert [r.id for r in stage(records)] == ["part"]
    assert rejected[0].metadata["benchmark_item"] == "s0"
    assert stage.index.ngram_of == [13]


def test_every_string_of_a_row_is_part_of_the_item_or_only_the_chosen_columns(tmp_path):
    rng = random.Random(8)
    choices = [sentence(rng, 14) for _ in range(3)]
    items = [{"id": "mc1", "question": "Pick one.", "choices": choices, "meta": {"source": sentence(rng, 14)}}]
    for columns, expected in ((None, {"choice", "source"}), (["question", "choices"], {"choice"})):
        stage = stage_for(tmp_path, items, columns)
        rejected = []
        stage.bind(rejected.append)
        list(stage([rec("choice", "Which?", choices[1]), rec("source", "Where from?", items[0]["meta"]["source"])]))
        assert {r.id for r in rejected} == expected, columns


def write_benchmark(folder, form: str, items: list[dict]):
    """`items` as a benchmark of the given form; returns the pipeline's benchmark entry."""
    if form == "jsonl":
        path = folder / "b.jsonl"
        path.write_text("".join(json.dumps(i) + "\n" for i in items))
    elif form == "json":
        path = folder / "b.json"
        path.write_text(json.dumps(items))
    elif form == "csv":
        path = folder / "b.csv"
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(items[0]))
            writer.writeheader()
            writer.writerows(items)
    elif form == "parquet":
        path = folder / "b.parquet"
        pq.write_table(pa.Table.from_pylist(items), path)
    elif form == "repo":
        path = folder / "quiz-repo"
        (path / "data").mkdir(parents=True)
        (path / "data" / "test.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
        (path / "data" / "train.jsonl").write_text(json.dumps({"id": "t0", "question": "unrelated", "answer": "x"}) + "\n")
        return {"dataset": str(path), "split": "test", "name": "b"}
    elif form == "saved":
        path = folder / "saved"
        datasets.DatasetDict({"test": datasets.Dataset.from_list(items)}).save_to_disk(str(path))
        return {"dataset": str(path), "name": "b"}
    return {"file": str(path)}


def cache_hub_dataset(cache, repo: str, items: list[dict]) -> None:
    """Lay `items` out as `datasets` caches a Hub dataset it has loaded once: what an
    offline machine has after `load_dataset(repo)` ran where the Hub was reachable."""
    from datasets.data_files import DataFilesDict
    from datasets.packaged_modules.json.json import Json

    source = cache.parent / "source.jsonl"
    source.write_text("".join(json.dumps(i) + "\n" for i in items))
    name = repo.split("/")[1]
    builder = Json(cache_dir=str(cache / "build"), dataset_name=name, config_name="default",
                   data_files=DataFilesDict.from_patterns({"test": [str(source)]}))
    builder.download_and_prepare()
    built = next((cache / "build" / name).glob("default-*/0.0.0"))
    target = cache / repo.replace("/", "___") / "default" / "0.0.0" / built.parent.name.split("-", 1)[1]
    target.parent.mkdir(parents=True)
    built.rename(target)


@pytest.mark.parametrize("form", ["jsonl", "json", "csv", "parquet", "saved", "repo", "hub"])
def test_factory_filter_drops_contaminated_rows_from_every_benchmark_form(tmp_path, form):
    items = make_items(30, seed=3)
    env = {}
    if form == "hub":
        cache = tmp_path / "hf-datasets"
        cache_hub_dataset(cache, "acme/quiz", items)
        env = {"HF_DATASETS_CACHE": str(cache)}
        entry = {"dataset": "acme/quiz", "split": "test", "columns": ["question", "answer"], "name": "b"}
    else:
        entry = write_benchmark(tmp_path, form, items)
    rows = [{"id": "copy", "prompt": items[7]["question"], "completion": items[7]["answer"]},
            {"id": "inside", "prompt": "Explain.", "completion": f"Well. {reformatted(items[9]['question'])} That is it."},
            {"id": "fine", "prompt": "What is a tide?", "completion": "The rise and fall of the sea."}]
    source = write_input(tmp_path, "jsonl", rows)
    pipeline = write_pipeline(tmp_path, filters=[{"type": "decontaminate", "benchmarks": [entry]}])
    out = tmp_path / "out"
    result = factory_cli("filter", str(pipeline), "--input", str(source), "--out", str(out), "--quiet", env=env)
    assert result.returncode == 0, result.stderr
    assert [r["id"] for r in read_jsonl(out / "data.jsonl")] == ["fine"]
    rejected = {r["id"]: r for r in read_jsonl(out / "rejected.jsonl")}
    assert {k: (r["reason"], r["metadata"]["benchmark"], r["metadata"]["benchmark_item"]) for k, r in rejected.items()} == {
        "copy": ("contaminated", "b", "q7"), "inside": ("contaminated", "b", "q9")}
    card = (out / "README.md").read_text()
    assert "## Decontamination" in card and "| b | 30 | 13 | 0 | 2 |" in card
    assert "<td>b</td><td class=num>30</td><td class=num>13</td><td class=num>2</td>" in (out / "report.html").read_text()


def test_the_index_is_built_once_and_reused_until_the_benchmark_changes(tmp_path):
    items = make_items(20)
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps(i) + "\n" for i in items))
    rows = [{"id": "a", "prompt": items[0]["question"], "completion": "x"}, {"id": "b", "prompt": "Fine?", "completion": "Fine."}]
    pipeline = write_pipeline(tmp_path, filters=[{"type": "decontaminate", "benchmarks": ["bench.jsonl"]}])
    out = tmp_path / "out"

    def run(rows) -> dict:
        source = write_input(tmp_path, "jsonl", rows)
        assert main(["filter", str(pipeline), "--input", str(source), "--out", str(out), "--quiet"]) == 0
        return json.loads((out / "run.json").read_text())["funnel"]["stages"][0]

    first = run(rows)
    assert first["index"] == "built" and first["verdicts"] == "computed"
    assert len(list((out / "decontamination-index").glob("*.npz"))) == 1
    assert run(rows)["verdicts"] == "replayed"  # the same records and benchmark: decisions replayed
    grown = run([*rows, {"id": "c", "prompt": items[3]["question"], "completion": "y"}])
    assert grown["index"] == "cached" and grown["verdicts"] == "computed" and grown["dropped"] == {"contaminated": 2}
    # Another benchmark under the same file name: a new index, and no stale verdict replayed.
    items[0]["question"] = "Something else entirely now."
    bench.write_text("".join(json.dumps(i) + "\n" for i in items))
    changed = run(rows)
    assert changed["index"] == "built" and changed["verdicts"] == "computed" and changed["dropped"] == {}
    assert len(list((out / "decontamination-index").glob("*.npz"))) == 2


def test_a_damaged_cached_index_is_built_again(tmp_path):
    items = make_items(10)
    stage = stage_for(tmp_path, items)
    built = stage.build_index(tmp_path / "cache")
    path = next((tmp_path / "cache").glob("*.npz"))
    path.write_bytes(b"not an index")
    again = stage_for(tmp_path, items)
    index = again.build_index(tmp_path / "cache")
    assert again.index_source == "built"
    assert (NgramIndex.load(path).keys == built.keys).all() and (index.keys == built.keys).all()


def test_decontaminate_runs_in_factory_run(tmp_path, loopback):
    item = make_items(1, seed=9)[0]
    (tmp_path / "bench.jsonl").write_text(json.dumps(item) + "\n")
    pairs = [{"question": "What makes tides?", "answer": f"As an old exam asked: {item['question']} The Moon does."},
             {"question": "How often do tides turn?", "answer": "About twice a day on most coasts."}]
    url = loopback(replies=[(r'"tides"', json.dumps({"pairs": pairs}))])
    pipeline = write_pipeline(tmp_path, url, filters=[{"type": "decontaminate", "benchmarks": ["bench.jsonl"]}])
    assert main(["run", str(pipeline), "--quiet"]) == 0
    rejected = read_jsonl(tmp_path / "out" / "rejected.jsonl")
    kept = read_jsonl(tmp_path / "out" / "data.jsonl")
    assert rejected and {(r["reason"], r["metadata"]["benchmark_item"]) for r in rejected} == {("contaminated", "q0")}
    assert {r["messages"][0]["content"] for r in rejected} == {"What makes tides?"}
    assert "How often do tides turn?" in {r["messages"][0]["content"] for r in kept}
    assert len(kept) + len(rejected) == 12


@pytest.mark.parametrize("entry,words", [
    ({"benchmarks": ["missing.jsonl"]}, ["filters[0].benchmarks[0].file", "missing.jsonl", "not found"]),
    ({"benchmarks": ["bench.txt"]}, ["filters[0].benchmarks[0].file", "unsupported"]),
    ({"benchmarks": [{"file": "bench.jsonl", "columns": ["questoin"]}]}, ["filters[0].benchmarks[0].columns", "'questoin'"]),
    ({"benchmarks": [{"dataset": "acme/not-here"}]}, ["filters[0].benchmarks[0].dataset", "'acme/not-here'", "not on this machine"]),
    ({"benchmarks": [{"dataset": "empty-repo"}]}, ["filters[0].benchmarks[0].dataset", "empty-repo holds no data files"]),
    ({"benchmarks": [{"file": "bench.jsonl", "dataset": "x/y"}]}, ["filters[0].benchmarks[0]", "either file"]),
    ({"benchmarks": []}, ["filters[0].benchmarks"]),
    ({"benchmarks": ["bench.jsonl"], "ngram": 5, "min_ngram": 8}, ["filters[0]", "min_ngram"]),
    ({"benchmarks": ["broken.jsonl"]}, ["filters[0].benchmarks[0].file", "broken.jsonl:2", "invalid JSON"]),
])
def test_a_bad_benchmark_is_one_line_before_anything_is_sent(tmp_path, loopback, entry, words):
    (tmp_path / "bench.jsonl").write_text(json.dumps(make_items(1)[0]) + "\n")
    (tmp_path / "bench.txt").write_text("hello\n")
    (tmp_path / "broken.jsonl").write_text('{"q": "a"}\n{"q": \n')
    (tmp_path / "empty-repo").mkdir()
    url = loopback()
    pipeline = write_pipeline(tmp_path, url, filters=[{"type": "decontaminate", **entry}])
    result = factory_cli("run", str(pipeline), "--quiet", env={"HF_DATASETS_CACHE": str(tmp_path / "empty-cache")})
    assert_user_error(result.returncode, result.stderr, words)
    assert sum(loopback.teacher.received.values()) == 0
    assert not (tmp_path / "out").exists()
