"""A pytest run of written test files in a subprocess, as a user runs it (the plugin from its entry point), and
the Markdown tables of its summary.md: shared by the report tests that plant a bug into a real run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

Run = tuple[Path, subprocess.CompletedProcess[str]]


def run_files(root: Path, files: dict[str, str], *args: str) -> Run:
    """Write `files` (name -> text) under `root`, run pytest there (reports to root/out) with `args`."""
    for name, text in files.items():
        (root / name).write_text(text)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--attnlab-report-dir", "out",
           "--attnlab-model", "smollm2-135m-instruct", *args]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300, check=False, env=env)
    return root / "out", proc


def md_table(md: str, heading: str) -> list[list[str]]:
    """The body cells of the first Markdown table under the `## heading...` line."""
    after = md[md.index(f"## {heading}") :].splitlines()
    start = next(i for i, ln in enumerate(after) if ln.startswith("|"))
    end = next((i for i, ln in enumerate(after[start:], start) if not ln.startswith("|")), len(after))
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in after[start + 2 : end]]
