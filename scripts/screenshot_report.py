"""Render a pytest-attnlab report.html in headless chromium, save a screenshot, check tables and plots.

    python scripts/screenshot_report.py reports/report.html reports/report.png

Exits 1 when the summary table or the plots are missing from the rendered page, or when a table line
fails but the failed tests do not open the summary.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pytest_attnlab.reports.browser import render


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("screenshot", type=Path, nargs="?", help="PNG path (default: next to the report)")
    ap.add_argument("--window-size", default="1400,2400", help="WIDTH,HEIGHT. Default: %(default)s")
    ap.add_argument("--min-images", type=int, default=1, help="Default: %(default)s")
    args = ap.parse_args(argv)
    shot = args.screenshot or args.report.with_suffix(".png")
    page = render(args.report, shot, window=args.window_size)
    found = f"{page.summary_tables} summary table(s), {page.images} PNG plot(s)"
    print(f"{args.report}: {found}; screenshot {shot}")
    verdicts = page.verdicts("model x quant x attention")
    print(f"failed tests listed first: {page.failed_listed if page.failures_lead else 'no'}; lines: {verdicts}")
    leads = page.failures_lead or "fail" not in verdicts
    ok = page.summary_tables >= 1 and page.images >= args.min_images and leads
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
