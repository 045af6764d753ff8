"""Render report.html in a real headless browser (Debian's chromium): DOM dump and screenshot.

Used by scripts/screenshot_report.py, tests/test_reports_outputs.py and tests/test_reports_failures_lead.py
to check that the summary table and the plots survive pytest-html's JavaScript rendering.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--virtual-time-budget=5000",
)  # fmt: skip


def find_chromium() -> str | None:
    return next((p for name in CANDIDATES if (p := shutil.which(name))), None)


def _run(binary: str, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="attnlab-chromium-") as profile:
        cmd = [binary, *FLAGS, f"--user-data-dir={profile}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


@dataclass
class Rendered:
    dom: str
    screenshot: Path | None

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.dom))

    @property
    def summary_tables(self) -> int:
        return self.count(r'<div id="attnlab-summary">[\s\S]*?<table')

    @property
    def summary(self) -> str:
        """The attnlab block of the rendered page (empty when it is missing)."""
        start = self.dom.find('id="attnlab-summary"')
        return self.dom[start:] if start >= 0 else ""

    @property
    def failures_lead(self) -> bool:
        """The failed and errored tests come before the first table of the summary."""
        at, table = self.summary.find('id="attnlab-failures"'), self.summary.find("<table")
        return at >= 0 and (table < 0 or at < table)

    @property
    def failed_listed(self) -> int:
        block = re.search(r'id="attnlab-failures"[\s\S]*?</ul>', self.summary)
        return block.group(0).count("<li>") if block else 0

    def verdicts(self, title: str) -> list[str]:
        """The verdict of every line of the summary table titled `title` ("pass", "fail", ...), top down."""
        table = re.search(rf"<h4>{re.escape(title)}</h4>[\s\S]*?</table>", self.summary)
        return re.findall(r'<tr class="attnlab-([\w-]+)">', table.group(0)) if table else []

    @property
    def images(self) -> int:
        """PNG data-URI images in the rendered page (run plots and per-test plots)."""
        return self.count(r'<img[^>]+src="data:image/png;base64,')


def render(report: Path, screenshot: Path | None = None, window: str = "1400,2400", timeout: float = 90) -> Rendered:
    """Load `report` with every result row expanded, dump the DOM and optionally take a screenshot."""
    binary = find_chromium()
    if binary is None:
        tried = ", ".join(CANDIDATES)
        raise FileNotFoundError(f"no chromium found (apt-get install -y chromium); tried {tried}")
    url = Path(report).resolve().as_uri() + "?collapsed="  # pytest-html: expand every row
    dump = _run(binary, ["--dump-dom", url], timeout)
    if dump.returncode != 0 or "<html" not in dump.stdout:
        raise RuntimeError(f"chromium --dump-dom failed ({dump.returncode}): {dump.stderr[-2000:]}")
    shot = None
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        res = _run(binary, [f"--screenshot={screenshot}", f"--window-size={window}", url], timeout)
        if res.returncode != 0 or not screenshot.is_file():
            raise RuntimeError(f"chromium --screenshot failed ({res.returncode}): {res.stderr[-2000:]}")
        shot = screenshot
    return Rendered(dump.stdout, shot)
