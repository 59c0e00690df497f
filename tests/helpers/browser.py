"""Pages checked in a real headless Chromium (the report and compare's page).

Without Chromium a browser check is skipped, saying so, on a workstation; in CI (the `CI`
variable that CI services set) it fails: .ci/run installs Chromium, so a CI run that
cannot reach one has lost the check, and must not pass as if it had made it."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
NO_CHROMIUM = "no chromium here (.ci/run installs Debian's chromium; apt-get install chromium)"


def chromium() -> str:
    """The browser's path; else the check fails in CI and is skipped elsewhere."""
    if CHROMIUM is None:
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"CI must run the browser check, but there is {NO_CHROMIUM}")
        pytest.skip(NO_CHROMIUM)
    return CHROMIUM


def browse(page, screenshot) -> tuple[str, str]:
    """Load `page` in headless Chromium: (the DOM after scripts ran, the browser's log)."""
    flags = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
             "--window-size=1100,6000"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0 and dom.stdout, f"chromium could not load {page}: {dom.stderr[-2000:]}"
    shot = subprocess.run([*flags, f"--screenshot={screenshot}", page.as_uri()], capture_output=True, text=True,
                          timeout=120)
    assert shot.returncode == 0, f"chromium could not screenshot {page}: {shot.stderr[-2000:]}"
    return dom.stdout, dom.stderr + shot.stderr
