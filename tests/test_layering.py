"""The package's layering, read from its source: no import cycle between gridtune modules (imports
inside functions included), no private name imported from another module, no torch under report/."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "gridtune"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING" or (
        isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every import node, at any depth, except those only for type checkers."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _edges(mods: dict[str, Path]) -> dict[str, set[tuple[str, str | None]]]:
    """module -> {(imported module, name taken from it or None)}; parents of a module count too."""
    out: dict[str, set] = {}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        here = mod if is_pkg else mod.rpartition(".")[0]
        edges = out.setdefault(mod, set())
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [(a.name, None) for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [(f"{base}.{a.name}", None) if f"{base}.{a.name}" in mods else (base, a.name)
                           for a in node.names]
            for target, name in targets:
                while target and target not in mods:      # `import gridtune.x.y` as far as it is ours
                    target = target.rpartition(".")[0]
                if not target:
                    continue
                edges.add((target, name))
                parent = target.rpartition(".")[0]
                while parent:                              # importing a.b.c runs a/__init__, a/b/__init__
                    edges.add((parent, None))
                    parent = parent.rpartition(".")[0]
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                found.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_between_gridtune_modules():
    mods = _modules()
    edges = _edges(mods)
    graph = {m: {t for t, _ in e if t != m and t not in _ancestors(m)} for m, e in edges.items()}
    assert "gridtune.engine" in graph and "gridtune.runtime" in graph["gridtune.engine"]
    assert "gridtune.trial" not in graph["gridtune.engine"]
    assert _cycles(graph) == []


def _ancestors(mod: str) -> set[str]:
    parts = mod.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_private_name_is_imported_from_another_module():
    mods = _modules()
    private = sorted(f"{m} imports {name} from {t}" for m, e in _edges(mods).items() for t, name in e
                     if name and name.startswith("_") and not name.startswith("__") and t != m)
    assert private == []


def test_report_package_imports_no_torch():
    names = sorted(m for m in _modules() if m.startswith("gridtune.report"))
    assert "gridtune.report.plots.figure" in names and "gridtune.report.plots.lr_find" in names
    code = ("import importlib, sys\n"
            f"for name in {names + ['gridtune.reduce', 'gridtune.status', 'gridtune.sweepdir', 'gridtune.knobs']!r}:\n"
            "    importlib.import_module(name)\n"
            "print(sorted(m for m in ('torch', 'matplotlib', 'omegaconf', 'hydra') if m in sys.modules))\n")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
