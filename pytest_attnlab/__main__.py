"""`python -m pytest_attnlab COMMAND ...`; commands: compare (the regression gate)."""

from __future__ import annotations

import sys

COMMANDS = {"compare": "pytest_attnlab.compare.cli"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m pytest_attnlab {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        print(
            f"unknown command {argv[0]!r}; choose from: {', '.join(COMMANDS)}" if argv else "",
            file=sys.stderr,
        )
        return 2
    import importlib

    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
