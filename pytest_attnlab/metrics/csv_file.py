"""metrics.csv: one row per test x metric, flushed and fsynced as it is written; read back as MetricRows."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from pytest_attnlab.metrics.row import COLUMNS, MetricRow


class CsvWriter:
    """Appends rows to a CSV file; every row reaches the disk before `write` returns.

    A crash, Ctrl-C or killed process later in the run therefore never loses a row already written.
    """

    def __init__(self, path: Path, *, truncate: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = truncate or not self.path.exists() or self.path.stat().st_size == 0
        self._fh: TextIO | None = open(self.path, "w" if truncate else "a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._fh, fieldnames=COLUMNS)
        if fresh:
            self._writer.writeheader()
            self._sync()

    def write(self, row: MetricRow) -> None:
        if self._fh is None:
            raise RuntimeError(f"{self.path} is closed")
        self._writer.writerow(row.as_csv())
        self._sync()

    def _sync(self) -> None:
        assert self._fh is not None
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def load_rows(paths: Iterable[Path]) -> list[MetricRow]:
    """The rows of metrics.csv files (a run's file plus its unmerged worker parts), in file order."""
    return [MetricRow.from_csv(d) for p in paths for d in read_rows(p)]


def merge(parts: list[Path], dest: Path) -> int:
    """Append per-worker CSV files to the rows already in `dest` (header once); returns the row count.

    Written to a temporary file and renamed over `dest`, so a controller killed mid-merge leaves the
    old `dest` and every part intact; rows the controller itself wrote to `dest` are kept.
    """
    dest = Path(dest)
    existing = read_rows(dest) if dest.is_file() else []
    tmp = dest.with_name(f".{dest.name}.merge-{os.getpid()}")
    n = 0
    with open(tmp, "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=COLUMNS)
        writer.writeheader()
        for row in [*existing, *(r for part in parts for r in read_rows(part))]:
            writer.writerow({k: row.get(k, "") for k in COLUMNS})
            n += 1
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, dest)
    return n
