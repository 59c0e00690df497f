"""The documentation: `docs/` builds as a site with `mkdocs build --strict` (a page left out
of nav, a link to a missing page or a missing heading fails it), and every link the
README makes into the repository names a file (and heading) that exists."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*$", re.M)
ID = re.compile(r'\sid="([^"]+)"')


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return out


def test_strict_build_builds_every_page(site):
    nav = _nav_files(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    pages = sorted(p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md"))
    assert sorted(nav) == pages, "every page in docs/ is in mkdocs.yml's nav, and nothing else"
    for page in pages:
        assert _built(site, page).is_file(), page


def test_config_makes_broken_links_fail():
    """--strict fails on warnings only: these checks must stay warnings, not be turned off."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    validation = config["validation"]
    assert validation["nav"]["omitted_files"] == validation["nav"]["not_found"] == "warn"
    assert validation["links"]["not_found"] == validation["links"]["anchors"] == "warn"
    assert validation["links"]["unrecognized_links"] == "warn"
    assert config["theme"]["font"] is False, "no web fonts: the build needs no network"
    plugins = [p if isinstance(p, str) else next(iter(p)) for p in config.get("plugins", [])]
    assert "social" not in plugins


def test_readme_links_exist(site):
    """mkdocs checks links inside docs/; the README is outside it, so its links are checked here."""
    readme = (ROOT / "README.md").read_text()
    text = FENCE.sub("", readme)
    targets = LINK.findall(text)
    assert any(t.startswith("docs/") for t in targets), "the README links into docs/"
    own = {_github_slug(h) for h in HEADING.findall(text)}
    for target in targets:
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        path, _, anchor = target.partition("#")
        if not path:
            assert anchor in own, f"README links to #{anchor}, which is not one of its headings"
            continue
        assert (ROOT / path).exists(), f"README links to {path}, which does not exist"
        if anchor:
            assert path.startswith("docs/") and path.endswith(".md"), target
            page = _built(site, path.removeprefix("docs/"))
            assert anchor in ID.findall(page.read_text()), f"README links to {target}: no such heading"


def test_readme_stays_short():
    assert len((ROOT / "README.md").read_text().splitlines()) < 300


def _nav_files(nav) -> list[str]:
    out = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        out += _nav_files(value) if isinstance(value, list) else [value]
    return out


def _built(site: Path, page: str) -> Path:
    """Where mkdocs writes a page (directory URLs: tasks.md -> tasks/index.html)."""
    stem = page.removesuffix(".md")
    if stem == "index" or stem.endswith("/index"):
        return site / (stem + ".html")
    return site / stem / "index.html"


def _github_slug(heading: str) -> str:
    text = re.sub(r"`|\*\*?|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text))
