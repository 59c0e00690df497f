"""The user's documents, read as plain text: .txt, .md, .html, .pdf (pypdf extra), .jsonl.

A document that cannot be read at all (not UTF-8, a broken PDF, a malformed JSONL
line) stops the run before anything is sent, with one line naming the file (and
line); an empty one is skipped and reported, so one blank file does not block a
folder of good ones.
"""

from __future__ import annotations

import glob
import html.parser
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from factory.core import jsonlines
from factory.core.errors import DocumentError

SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".jsonl")


@dataclass(frozen=True)
class Document:
    id: str  # the path as given (relative to the pipeline's folder), plus `:LINE` or the id field for .jsonl
    path: str
    text: str
    line: int | None = None


@dataclass(frozen=True)
class Skipped:
    document: str
    reason: str


def find_documents(patterns: list[str], base: Path) -> list[Path]:
    """Files named by folders (recursive), files or globs, in a stable order."""
    found: list[Path] = []
    for pattern in patterns:
        path = Path(pattern).expanduser()
        path = path if path.is_absolute() else base / path
        if path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES
                             and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not matches:
                raise DocumentError(f"{path}: no documents in this folder (looked for {', '.join(SUFFIXES)})")
        elif any(ch in pattern for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not matches:
                raise DocumentError(f"{path}: no file matches this pattern")
        elif path.is_file():
            matches = [path]
        else:
            raise DocumentError(f"{path}: no such file or folder")
        for match in matches:
            if match.suffix.lower() not in SUFFIXES:
                raise DocumentError(f"{match}: unsupported document type {match.suffix or '(none)'}; "
                                    f"use {', '.join(SUFFIXES)}")
        found += matches
    return list(dict.fromkeys(found))


def read_documents(paths: list[Path], base: Path, text_field: str = "text",
                   id_field: str | None = None) -> tuple[list[Document], list[Skipped]]:
    documents: list[Document] = []
    skipped: list[Skipped] = []
    for path in paths:
        name = _display(path, base)
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            docs = list(_jsonl(path, name, text_field, id_field))
        else:
            text = _pdf(path) if suffix == ".pdf" else _text(path)
            if suffix in (".html", ".htm"):
                text = html_to_text(text)
            docs = [Document(name, name, text)]
        for doc in docs:
            if doc.text.strip():
                documents.append(doc)
            else:
                skipped.append(Skipped(doc.id, "no text" if suffix != ".pdf" else "no text layer (a scanned PDF?)"))
    return documents, skipped


def _display(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DocumentError(f"{path}: not UTF-8 text (byte {err.start})") from err
    except OSError as err:
        raise DocumentError(f"{path}: cannot read ({err.strerror or err})") from err


def _jsonl(path: Path, name: str, text_field: str, id_field: str | None):
    try:
        for number, row in jsonlines.read(path, DocumentError):
            if not isinstance(row, dict) or text_field not in row:
                raise DocumentError(f"{path}:{number}: no {text_field!r} field (set generate.text_field)")
            text = row[text_field]
            if not isinstance(text, str):
                raise DocumentError(f"{path}:{number}: field {text_field!r} is {type(text).__name__}, not text")
            if id_field and id_field not in row:
                raise DocumentError(f"{path}:{number}: no {id_field!r} field (generate.id_field)")
            doc_id = f"{name}:{row[id_field]}" if id_field else f"{name}:{number}"
            yield Document(doc_id, name, text, line=number)
    except OSError as err:
        raise DocumentError(f"{path}: cannot read ({err.strerror or err})") from err


def _pdf(path: Path) -> str:
    try:
        import pypdf
    except ImportError:
        raise DocumentError(f"{path}: reading PDF needs the pdf extra: pip install 'factory[pdf]' (or pypdf)") from None
    # pypdf logs what it repairs; a damaged file is reported once, below, in one line.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = pypdf.PdfReader(str(path))
        if reader.is_encrypted:
            raise DocumentError(f"{path}: the PDF is encrypted; decrypt it first")
        pages = [page.extract_text() or "" for page in reader.pages]
    except DocumentError:
        raise
    except Exception as err:  # pypdf raises many types for a damaged file
        raise DocumentError(f"{path}: not a readable PDF ({err.__class__.__name__}: {err})") from err
    # Pages are paragraphs apart, so chunks prefer to break between them.
    return "\n\n".join(_tidy(p) for p in pages)


def _tidy(text: str) -> str:
    lines = [line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


class _TextExtractor(html.parser.HTMLParser):
    # Blocks end a paragraph; what is inside these tags is not text a reader sees.
    BLOCKS = {"p", "div", "section", "article", "header", "footer", "ul", "ol", "table", "h1", "h2",
              "h3", "h4", "h5", "h6", "blockquote", "pre", "dl", "figure", "figcaption", "main", "aside"}
    LINES = {"li", "tr", "dt", "dd"}  # one per line, inside their block
    HIDDEN = {"script", "style", "head", "noscript", "template", "svg", "nav"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0
        self.pre = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.HIDDEN:
            self.hidden += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")
            self.pre += tag == "pre"
        elif tag == "br" or tag in self.LINES:
            self.parts.append("\n")
        elif tag in ("td", "th"):
            self.parts.append(" ")

    def handle_endtag(self, tag):
        if tag in self.HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")
            self.pre -= tag == "pre" and self.pre > 0

    def handle_data(self, data):
        if not self.hidden:
            self.parts.append(data if self.pre else re.sub(r"\s+", " ", data))


def html_to_text(source: str) -> str:
    parser = _TextExtractor()
    parser.feed(source)
    parser.close()
    text = "".join(parser.parts)
    text = re.sub(r"[ \t]*\n[ \t]*", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
