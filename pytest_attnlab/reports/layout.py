"""Where a run's files live under the report dir: every writer and reader of them asks this object."""

from __future__ import annotations

import re
from pathlib import Path

METRICS_CSV = "metrics.csv"


def slug(name: str) -> str:
    """An experiment or plot name as a file stem: every character outside [A-Za-z0-9_.-] becomes '_'."""
    return re.sub(r"[^\w.-]", "_", name) or "default"


def monitor_stem(nodeid: str) -> str:
    """A test's monitor timeline file stem: path separators and brackets made file-safe, 200 characters."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", nodeid).strip("_")[:200]


class ReportLayout:
    """The report dir's files: metrics.csv (with xdist workers' parts under workers/ until merged),
    report.html, summary.md, experiments/NAME.json, plots/TITLE.png and monitor/TEST.json."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.metrics_csv = self.root / METRICS_CSV
        self.report_html = self.root / "report.html"
        self.summary_md = self.root / "summary.md"
        self.experiments_dir = self.root / "experiments"
        self.monitor_dir = self.root / "monitor"

    def worker_csv(self, run_id: str, worker: str) -> Path:
        return self.root / "workers" / f"metrics.{run_id}.{worker}.csv"

    def worker_csvs(self, run_id: str) -> list[Path]:
        return sorted((self.root / "workers").glob(f"metrics.{run_id}.*.csv"))

    def run_csvs(self, run_id: str) -> list[Path]:
        """metrics.csv and this run's worker parts still on disk: pytest-html writes its report in a `trylast`
        sessionfinish that can run before the session merges the parts, so every writer sees every row once."""
        return [f for f in [self.metrics_csv, *self.worker_csvs(run_id)] if f.is_file()]

    def experiment_json(self, name: str) -> Path:
        return self.experiments_dir / f"{slug(name)}.json"

    def plot_png(self, title: str) -> Path:
        return self.root / "plots" / f"{slug(title.replace(' ', '_'))}.png"

    def monitor_timeline(self, nodeid: str) -> Path:
        return self.monitor_dir / f"{monitor_stem(nodeid)}.json"
