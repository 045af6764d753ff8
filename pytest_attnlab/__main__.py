"""`python -m pytest_attnlab COMMAND ...`: the plugin's command-line tools, each with its own --help."""

from __future__ import annotations

import argparse
import importlib
import sys

#: command -> (module with `main(argv) -> int`, one line of help). A command's module owns its parser.
COMMANDS = {
    "compare": ("pytest_attnlab.compare.cli", "the regression gate: compare two runs (metrics.csv or benchmark JSON)"),
    "noise": ("pytest_attnlab.compare.noise", "measure each metric's noise floor from identical runs, for compare"),
    "noise-tally": (
        "pytest_attnlab.compare.tally",
        "the compare gate per cell over .ci/gpu's noise stage: false alarms, detections",
    ),
    "history": ("pytest_attnlab.history.cli", "every gated metric over many runs, GPUs and decode paths, in one page"),
    "table": ("pytest_attnlab.reports.table", "metrics.csv as a markdown table: a line per group, a column per metric"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python -m pytest_attnlab",
        description="pytest-attnlab command-line tools. `python -m pytest_attnlab COMMAND --help` shows a command's "
        "options; the tests themselves run through pytest (`pytest suites/correctness`).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_module, help_) in COMMANDS.items():  # add_help=False: the command's own parser answers --help
        commands.add_parser(name, help=help_, description=help_, add_help=False)
    args, rest = parser.parse_known_args(argv[:1])
    return importlib.import_module(COMMANDS[args.command][0]).main(argv[1:] + rest)


if __name__ == "__main__":
    sys.exit(main())
