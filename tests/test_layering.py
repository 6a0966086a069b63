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
    assert "gridtune.train.engine" in graph and "gridtune.train.runtime" in graph["gridtune.train.engine"]
    assert "gridtune.train.trial" not in graph["gridtune.train.engine"]
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
            f"for name in {names + ['gridtune.reduce', 'gridtune.status', 'gridtune.sweepdir.ledger', 'gridtune.config.knobs']!r}:\n"
            "    importlib.import_module(name)\n"
            "print(sorted(m for m in ('torch', 'matplotlib', 'omegaconf', 'hydra') if m in sys.modules))\n")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# The wings, lowest first: a module imports only modules of its own wing or of wings below it. The
# commands (gridtune/<name>.py, what users run with `python -m`) sit on top and import any wing, but
# no other command.
WINGS = ("config", "sweepdir", "halving", "slurm", "data", "train", "checks", "launch", "use", "report")


def _wing(mod: str) -> int:
    parts = mod.split(".")
    if len(parts) == 1:
        return len(WINGS) + 1                       # the package itself
    if parts[1] in WINGS:
        return WINGS.index(parts[1])
    return len(WINGS)                               # a command


def _upward_imports(edges: dict[str, set[tuple[str, str | None]]]) -> list[str]:
    bad = []
    for mod, targets in edges.items():
        for target, _ in targets:
            if target == mod or target in _ancestors(mod) or target == "gridtune":
                continue
            here, there = _wing(mod), _wing(target)
            if there > here or (there == here == len(WINGS) and mod != target):
                bad.append(f"{mod} imports {target}")
    return sorted(bad)


def test_every_module_lives_in_a_declared_wing_or_is_a_command():
    commands = sorted(m for m in _modules() if _wing(m) == len(WINGS))
    assert commands == sorted(f"gridtune.{c}" for c in (
        "sweep", "plan", "status", "reduce", "final", "lr_find", "predict", "export", "doctor"))


def test_a_wing_imports_only_wings_below_it():
    assert _upward_imports(_edges(_modules())) == []


def test_the_wing_check_sees_an_upward_import():
    edges = {"gridtune.config.knobs": {("gridtune.train.model", None)},
             "gridtune.sweep": {("gridtune.doctor", None), ("gridtune.train.trial", None)},
             "gridtune.train.trial": {("gridtune.train", None), ("gridtune.data.feed", "prepare")}}
    assert _upward_imports(edges) == ["gridtune.config.knobs imports gridtune.train.model",
                                      "gridtune.sweep imports gridtune.doctor"]
