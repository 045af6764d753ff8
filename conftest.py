"""Repository-level pytest configuration.

The plugin itself is activated by its `pytest11` entry point (pip install -e .), not from here.
This file only keeps non-test folders out of collection when pytest is run from the repo root.
"""

collect_ignore_glob = ["scripts/*", "reports/*", ".venv/*", "experiments/*"]
