"""The run report: written with every run, rebuilt by `factory report`, checked in a real browser."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.conftest import assert_user_error, factory_cli, write_pipeline

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def browse(page, screenshot) -> tuple[str, str]:
    """Load `page` in headless Chromium: (the DOM after scripts ran, the browser's log)."""
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
             "--window-size=1100,6000"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    shot = subprocess.run([*flags, f"--screenshot={screenshot}", page.as_uri()], capture_output=True, text=True,
                          timeout=120)
    return dom.stdout, dom.stderr + shot.stderr


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


def test_report_of_a_folder_that_is_not_a_run(tmp_path):
    result = factory_cli("report", str(tmp_path))
    assert_user_error(result.returncode, result.stderr, [str(tmp_path), "run.json"])


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (.ci/run installs Debian's chromium)")
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
