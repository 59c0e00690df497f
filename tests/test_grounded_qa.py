"""Q&A grounded in documents: reading every type, chunking, traceability, support checks, bad documents."""

from __future__ import annotations

import json
import re

import pytest

from factory.inputs.chunking import chunk_text
from factory.inputs.documents import html_to_text, read_documents
from factory.tasks.grounded_qa import quote_found
from tests.helpers.datafiles import read_jsonl
from tests.helpers.pipelines import grounded_pipeline
from tests.helpers.processes import assert_user_error, factory_cli

PARAGRAPHS = [
    "Tides rise and fall twice a day on most coasts. The Moon's pull makes a bulge of water on the near side.",
    "Spring tides come at new and full moon, when Sun and Moon pull in line. Neap tides come at the quarter moons.",
    "The Bay of Fundy has the largest tidal range recorded, over sixteen metres between low and high water.",
    "Tide tables give the time and height of each high and low water for a port, a year ahead.",
]


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF with `text` in its text layer, built by hand (no writer library)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def write_documents(folder):
    docs = folder / "docs"
    (docs / "more").mkdir(parents=True, exist_ok=True)
    (docs / "tides.txt").write_text("\n\n".join(PARAGRAPHS) + "\n")
    (docs / "reefs.md").write_text("# Coral reefs\n\nCoral reefs are built by colonies of tiny animals called polyps. "
                                   "Reefs cover under one percent of the ocean floor but shelter a quarter of marine species.\n")
    (docs / "more" / "glaciers.html").write_text(
        "<html><head><title>skip me</title><script>var x = 1;</script></head><body><nav>Home</nav>"
        "<h1>Glaciers</h1><p>A glacier is a body of ice that moves under its own weight.</p>"
        "<p>Glaciers store about sixty-nine percent of the world's fresh water.</p></body></html>")
    (docs / "volcano.pdf").write_bytes(minimal_pdf("Volcanoes form where magma reaches the surface of the Earth crust."))
    (docs / "notes.jsonl").write_text(
        json.dumps({"id": "kelp", "text": "Kelp forests grow in cold, nutrient-rich water and can grow half a metre a day."}) + "\n"
        + json.dumps({"id": "krill", "text": "Krill are small crustaceans that feed on phytoplankton and feed whales in turn."}) + "\n")
    return docs


def test_every_document_type_is_read_and_every_pair_traces_to_its_text(tmp_path, loopback):
    docs = write_documents(tmp_path)
    path = grounded_pipeline(tmp_path, loopback())
    result = factory_cli("run", str(path), "--quiet")
    assert result.returncode == 0, result.stderr
    rows = read_jsonl(tmp_path / "out" / "data.jsonl") + read_jsonl(tmp_path / "out" / "rejected.jsonl")
    texts = {d.id: d.text for d in read_documents(sorted(p for p in docs.rglob("*") if p.is_file()), tmp_path, "text", "id")[0]}
    seen = set()
    for row in rows:
        meta = row["metadata"] if isinstance(row["metadata"], dict) else row["metadata"]
        source = meta["source"]
        assert texts[source["document"]][source["start"]:source["end"]] == meta["context"]
        assert source["chunk_id"] == f"{source['document']}#{source['chunk_index']}"
        seen.add(source["document"])
    assert seen == {"docs/tides.txt", "docs/reefs.md", "docs/more/glaciers.html", "docs/volcano.pdf",
                    "docs/notes.jsonl:kelp", "docs/notes.jsonl:krill"}
    # A plain-text file's offsets are offsets into the file itself.
    tides = (docs / "tides.txt").read_text()
    for row in rows:
        meta = row["metadata"] if isinstance(row["metadata"], dict) else row["metadata"]
        if meta["source"]["document"] == "docs/tides.txt":
            assert tides[meta["source"]["start"]:meta["source"]["end"]] == meta["context"]
    assert "skip me" not in texts["docs/more/glaciers.html"] and "var x" not in texts["docs/more/glaciers.html"]
    assert "Home" not in texts["docs/more/glaciers.html"]
    assert "magma reaches the surface" in texts["docs/volcano.pdf"]
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    chunks = info["task"]["chunks"]
    assert info["funnel"]["requested"] == 2 * chunks and len(rows) == 2 * chunks


def test_chunks_break_at_paragraphs_and_overlap_by_whole_pieces():
    text = "\n\n".join(PARAGRAPHS)
    spans = chunk_text(text, size=240, overlap=120)
    boundaries = {0, len(text)} | {m.start() for m in re.finditer(r"\n\n", text)} | {m.end() for m in re.finditer(r"\n\n", text)}
    for span in spans:
        assert span.end - span.start <= 240
        assert span.start in boundaries and span.end in boundaries  # whole paragraphs: each fits
    covered = set().union(*(range(s.start, s.end) for s in spans))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())
    overlaps = [a.end - b.start for a, b in zip(spans, spans[1:])]
    assert len(spans) == 3 and all(0 < o <= 120 for o in overlaps), overlaps


def test_long_paragraphs_split_at_sentences_then_words_then_characters():
    sentence = "The quick brown fox jumps over the lazy dog. "
    text = sentence * 20 + "x" * 130
    spans = chunk_text(text, size=100, overlap=0)
    assert all(s.end - s.start <= 100 for s in spans)
    assert all(text[s.start:s.end].endswith(".") for s in spans[:-3])  # sentences kept whole while they fit
    assert "".join(text[s.start:s.end] for s in spans).replace(" ", "") == text.replace(" ", "")


def test_chunking_by_tokens_with_a_real_tokenizer(tmp_path, loopback):
    from transformers import AutoTokenizer

    from tests.helpers.tiny_models import build_tiny_chat_model

    folder = build_tiny_chat_model(tmp_path / "tiny")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    count = lambda t: len(tokenizer.encode(t, add_special_tokens=False))  # noqa: E731
    text = "\n\n".join(PARAGRAPHS * 3)
    spans = chunk_text(text, size=60, overlap=10, measure=count)
    assert len(spans) > 3 and all(count(text[s.start:s.end]) <= 60 for s in spans)

    write_documents(tmp_path)
    path = grounded_pipeline(tmp_path, loopback(), {"chunking": {"by": "tokens", "size": 60, "overlap": 10,
                                                                 "tokenizer": str(folder), "min_chars": 20}})
    result = factory_cli("validate", str(path))
    assert result.returncode == 0, result.stderr
    assert re.search(r"pairs from \d+ chunks of 6 documents", result.stdout)


def test_unsupported_answers_and_quotes_not_in_the_chunk_are_rejected(tmp_path, loopback):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "zebra.txt").write_text("Zebra facts. Zebras live in herds on the African savanna. Each zebra has a "
                                    "unique pattern of stripes, like a fingerprint.\n")
    pairs = [
        {"question": "Where do zebras live?", "quote": "Zebras live in herds on the African savanna.",
         "answer": "In herds on the African savanna.", "supported": True},
        {"question": "How fast can a zebra run?", "quote": "Zebras live in herds",
         "answer": "About 65 km/h.", "supported": False},
        {"question": "What do zebras eat?", "quote": "Zebras eat mostly grass.",
         "answer": "Mostly grass.", "supported": True},
        {"question": "Are stripes unique?", "quote": "\u201cEach zebra has a unique pattern ... like a fingerprint\u201d",
         "answer": "Yes, like fingerprints.", "supported": True},
    ]
    url = loopback(replies=[(r"Zebra facts", json.dumps({"pairs": pairs}, ensure_ascii=False))])
    path = grounded_pipeline(tmp_path, url, {"pairs_per_chunk": 4, "chunking": {"size": 500, "overlap": 0, "min_chars": 20}})
    result = factory_cli("run", str(path), "--quiet")
    assert result.returncode == 0, result.stderr
    kept = [r["messages"][0]["content"] for r in read_jsonl(tmp_path / "out" / "data.jsonl")]
    assert kept == ["Where do zebras live?", "Are stripes unique?"]
    meta = read_jsonl(tmp_path / "out" / "data.jsonl")[0]["metadata"]
    assert meta["quote"] == pairs[0]["quote"] and "Zebra facts" in meta["context"]
    rejected = {r["messages"][0]["content"]: (r["reason"], r["stage"]) for r in read_jsonl(tmp_path / "out" / "rejected.jsonl")}
    assert rejected == {"How fast can a zebra run?": ("unsupported", "generate"),
                        "What do zebras eat?": ("quote_not_in_source", "generate")}


@pytest.mark.parametrize("quote, found", [
    ("Zebras live in herds", True),
    ("zebras   LIVE in\nherds", True),
    ("'Each zebra has a unique pattern'", True),
    ("Zebras live ... fingerprint", True),
    ("fingerprint ... Zebras live", False),  # elided parts must come in order
    ("Zebras live in flocks", False),
    ("", False),
])
def test_quote_matching(quote, found):
    source = "Zebras live in herds. Each zebra has a unique pattern of stripes, like a fingerprint."
    assert quote_found(quote, source) is found


def test_more_pairs_than_one_pass_cycles_the_chunks_with_new_seed_values(tmp_path, loopback):
    write_documents(tmp_path)
    url = loopback()
    path = grounded_pipeline(tmp_path, url)
    result = factory_cli("run", str(path), "--quiet", "--set", "generate.count=40")
    assert result.returncode == 0, result.stderr
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert info["funnel"]["requested"] == 40 and info["task"]["chunks"] < 20
    assert sum(loopback.teacher.received.values()) == 20


def test_empty_documents_are_skipped_and_reported(tmp_path, loopback):
    docs = write_documents(tmp_path)
    (docs / "blank.md").write_text("   \n\n")
    (docs / "tiny.txt").write_text("Too short.")
    path = grounded_pipeline(tmp_path, loopback())
    result = factory_cli("run", str(path), "--quiet")
    assert result.returncode == 0, result.stderr
    skipped = json.loads((tmp_path / "out" / "run.json").read_text())["task"]["skipped_documents"]
    assert {s["document"]: s["reason"] for s in skipped} == {"docs/blank.md": "no text",
                                                             "docs/tiny.txt": "shorter than chunking.min_chars (40)"}


@pytest.mark.parametrize("setup, words", [
    (lambda d: (d / "a.txt").write_bytes(b"caf\xe9 au lait"), ["a.txt", "not UTF-8"]),
    (lambda d: (d / "a.jsonl").write_text('{"id": 1, "text": "fine and long enough to keep as a document"}\n{"text": \n'), ["a.jsonl:2", "invalid JSON"]),
    (lambda d: (d / "a.jsonl").write_text('{"id": 1, "body": "no text field here"}\n'), ["a.jsonl:1", "'text'"]),
    (lambda d: (d / "a.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf"), ["a.pdf", "not a readable PDF"]),
    (lambda d: (d / "a.md").write_text(""), ["generate.documents", "no document has text"]),
])
def test_bad_documents_stop_the_run_in_one_line(tmp_path, loopback, setup, words):
    docs = tmp_path / "docs"
    docs.mkdir()
    setup(docs)
    url = loopback()
    result = factory_cli("run", str(grounded_pipeline(tmp_path, url)), "--quiet")
    assert_user_error(result.returncode, result.stderr, words)
    assert sum(loopback.teacher.received.values()) == 0 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("documents, words", [
    ("missing", ["generate.documents", "missing", "no such file or folder"]),
    ("docs/*.nothing", ["no file matches"]),
    ("docs/data.csv", ["unsupported document type .csv"]),
])
def test_documents_that_are_not_there_are_one_line(tmp_path, loopback, documents, words):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "data.csv").write_text("a,b\n")
    result = factory_cli("validate", str(grounded_pipeline(tmp_path, loopback(), {"documents": documents})))
    assert_user_error(result.returncode, result.stderr, words)


def test_html_text_keeps_blocks_apart_and_drops_what_a_reader_does_not_see():
    text = html_to_text("<style>p{}</style><h2>Title</h2><p>One &amp; two<br>three</p><ul><li>a</li><li>b</li></ul>")
    assert text == "Title\n\nOne & two\nthree\n\na\nb"
