"""The package's imports flow one way (issue 28; docs/ARCHITECTURE.md, "Layers"): no module imports itself back
through others, function-level imports included (`if TYPE_CHECKING:` blocks are not imports at run time), and the
pytest side (the core plugin, each area's plugin and options modules, the option layer and the session) sits on top: no
library module imports one of them, so the library runs without pytest's hooks. Each check also runs on a graph
with one circle planted, where it must fail."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "pytest_attnlab"
#: the pytest side: hooks, options, fixtures and the run's state
PLUGIN_SIDE = ("pytest_attnlab.plugin", "pytest_attnlab.options", "pytest_attnlab.session", "pytest_attnlab.case")


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def lazy_exports(modules: dict[str, Path]) -> dict[str, str]:
    """ "package.name" -> the module a package's lazy export (`lazy.exports(__name__, {".module": "names"})`)
    comes from: importing it imports that module, on first use."""
    out = {}
    for package, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "exports":
                for module, names in zip(node.args[1].keys, node.args[1].values, strict=True):
                    for name in names.value.split():
                        out[f"{package}.{name}"] = package + module.value if module.value[0] == "." else module.value
    return out


def imports() -> dict[str, set[str]]:
    """module -> the package's own modules it imports at run time, at any depth of its code (a lazy export
    counts as the module it comes from)."""
    modules = {_name(p): p for p in ROOT.rglob("*.py")}
    lazy = lazy_exports(modules)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text())
        typing_only = {
            id(sub)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING"
            for sub in ast.walk(node)
        }
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = [f"{node.module}.{a.name}" for a in node.names]
                targets = [lazy.get(t, t) for t in subs if t in modules or t in lazy] or [node.module]
            else:
                continue
            for target in targets:
                while target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in modules and target != module and target.startswith("pytest_attnlab"):
                    graph[module].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while (w := stack.pop()) != v:
                comp.append(w)
            if comp:
                out.append(sorted([v, *comp]))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def on_plugin_side(module: str) -> bool:
    return module in PLUGIN_SIDE or module.endswith((".plugin", ".options"))  # an area's hooks, its OptionSpecs


def upward(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(library module, plugin-side module it imports)."""
    return sorted((m, t) for m, ts in graph.items() for t in ts if not on_plugin_side(m) and on_plugin_side(t))


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return imports()


def test_no_module_imports_itself_back(graph) -> None:
    assert circles(graph) == []
    assert "pytest_attnlab.quant.methods" in graph["pytest_attnlab.quant.plugin"]  # a lazy export's own module
    planted = {**graph, "pytest_attnlab.registry": graph["pytest_attnlab.registry"] | {"pytest_attnlab.models.loader"}}
    assert any("pytest_attnlab.registry" in c for c in circles(planted))


def test_library_modules_never_import_the_plugin_side(graph) -> None:
    assert upward(graph) == []
    planted = {**graph, "pytest_attnlab.probe": graph["pytest_attnlab.probe"] | {"pytest_attnlab.session"}}
    assert upward(planted) == [("pytest_attnlab.probe", "pytest_attnlab.session")]


def test_every_registry_is_reachable_through_the_registration_hook() -> None:
    """Each module-level `NAME = Registry(...)` in the package is in registry.REGISTRIES, which
    `pytest_attnlab_register(registries, config)` hands to a conftest.py."""
    import importlib

    from pytest_attnlab.registry import REGISTRIES, load

    found = {
        (_name(path), node.targets[0].id if isinstance(node, ast.Assign) else node.target.id)  # type: ignore[union-attr]
        for path in ROOT.rglob("*.py")
        for node in ast.parse(path.read_text()).body
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        and getattr(getattr(node.value, "func", None), "id", "") == "Registry"
    }
    reachable = {id(load(where)) for where in REGISTRIES.values()}
    missing = [f"{m}:{n}" for m, n in found if id(getattr(importlib.import_module(m), n)) not in reachable]
    assert len(found) >= 19 and missing == []
