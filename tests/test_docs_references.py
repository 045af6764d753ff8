"""The files and modules that the docs, the README and the scripts' usage comments name exist.

A path is a repo-relative name under pytest_attnlab/, suites/, scripts/, experiments/, tests/, .ci/ or docs/
(a placeholder such as NAME or a glob passes when some file matches it); a module is a dotted
`pytest_attnlab.x.y` name, whose last parts may be names defined in the deepest module found. The
failure lists every missing one with where it is named, so a move is fixed in one pass.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROOTS = ("pytest_attnlab", "suites", "scripts", "experiments", "tests", "docs", ".ci")
#: a path under one of ROOTS, not inside another one (../shared/scripts/x names no file of this repo)
PATH = re.compile(rf"(?<![\w./-])(?:{'|'.join(re.escape(r) for r in ROOTS)})/[\w./*{{}}-]*")
MODULE = re.compile(r"(?<![\w./-])pytest_attnlab(?:\.\w+)+")
PLACEHOLDER = re.compile(r"[A-Z][A-Z_]+|\{[^}]*\}")  # NAME, REPORT_DIR, {a,b}: what the reader fills in
#: paths the docs name that a run or a build makes, not the repo (fnmatch patterns) -> who makes them
GENERATED = {
    "experiments/*.json": "the report dir's per-experiment JSON (summary.md's sibling)",
    ".ci/vllm/.venv": ".ci/vllm/run builds it",
    ".ci/work/*": ".ci/run makes a folder a stage and removes it when the stage ends",
}


def sources() -> list[Path]:
    """docs/*.md, README.md and every script's comments (its usage lines)."""
    scripts = [p for p in (ROOT / "scripts").rglob("*") if p.is_file() and p.suffix in (".sh", ".py", ".md")]
    return [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md", *sorted(scripts)]


def text_of(path: Path) -> str:
    """A markdown file whole; of a script, its comments and docstring (its code runs, it names nothing)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".md":
        return text
    if path.suffix == ".py":
        doc = re.match(r'\s*(?:#.*\n\s*)*(?:"""([\s\S]*?)""")?', text)
        return (doc.group(1) or "") if doc else ""
    return "\n".join(line.split("#", 1)[1] for line in text.splitlines() if "#" in line)


def path_exists(name: str) -> bool:
    pattern = PLACEHOLDER.sub("*", name.rstrip(".,:;")).rstrip("/")
    if any(fnmatch.fnmatch(pattern, g) for g in GENERATED):
        return True
    return any(ROOT.glob(pattern)) if "*" in pattern else (ROOT / pattern).exists()


def module_exists(name: str) -> bool:
    """The longest prefix that is a module or package, then at most two names defined in it."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:n])
        source = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        if source.is_file():
            rest = parts[n:]
            text = source.read_text(encoding="utf-8")
            return len(rest) <= 2 and (not rest or re.search(rf"\b{rest[0]}\b", text) is not None)
    return False


def missing_references() -> list[str]:
    missing = []
    for src in sources():
        text = text_of(src)
        where = src.relative_to(ROOT)
        for name in dict.fromkeys(PATH.findall(text)):
            if not path_exists(name):
                missing.append(f"{where}: {name}")
        for name in dict.fromkeys(MODULE.findall(text)):
            if not module_exists(name):
                missing.append(f"{where}: {name}")
    return missing


def test_named_files_and_modules_exist() -> None:
    missing = missing_references()
    assert not missing, f"{len(missing)} names in the docs/scripts point nowhere:\n" + "\n".join(missing)


def test_the_check_catches_a_dangling_reference(tmp_path: Path, monkeypatch) -> None:
    """The bug this check is for: a doc names a file that is gone (docs/gpu.md in issue 14)."""
    doc = ROOT / "docs" / "ARCHITECTURE.md"
    planted = doc.read_text(encoding="utf-8") + "\nSee docs/gpu.md and pytest_attnlab.perf.no_such_module.\n"
    real = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: planted if self == doc else real(self, *a, **k))
    missing = missing_references()
    assert "docs/ARCHITECTURE.md: docs/gpu.md" in missing
    assert "docs/ARCHITECTURE.md: pytest_attnlab.perf.no_such_module" in missing


def test_placeholders_globs_and_outside_paths() -> None:
    assert path_exists("experiments/NAME.json")  # a run writes it (GENERATED)
    assert path_exists("experiments/NAME.yaml") and not path_exists("experiments/NAME.toml")
    assert path_exists("suites/perf/")
    assert not PATH.findall("../shared/scripts/split-embedded-model.sh")
    assert module_exists("pytest_attnlab.quant.QUANTIZERS")
    assert not module_exists("pytest_attnlab.quant.no_such_name")
