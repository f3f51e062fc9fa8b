"""The package's house plan holds: each sub-package imports only what its docstring
allows, the layers run one way, and nothing imports itself in a circle, counting every
import (at module level or inside a function, absolute or relative)."""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pipeline

ROOT = Path(pipeline.__file__).parent
# the house's floors, lowest first: a layer may import those below it, never above ("" is
# the package's face, pipeline/__init__.py: its version, importing nothing)
LAYERS = ("", "common", "config", "io", "backends", "plan", "review", "run", "serve", "front")
FRONT = {"api", "cli", "__main__"}  # the front doors: the Python API and the command line
TOP_MODULES = {"", "__main__", "api", "cli"}  # "" is the package's own __init__


def _module(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    return ".".join(p for p in rel.parts if p != "__init__")


def _exists(root: Path, dotted: str) -> bool:
    return (root / (dotted.replace(".", "/") + ".py")).exists() or (
        root / dotted.replace(".", "/")
    ).is_dir()


def _imports(root: Path, path: Path) -> set[str]:
    """Every ``pipeline`` module this file imports, as dotted names under the package: a
    ``from x import name`` that names a module counts as that module, else as ``x``."""
    mod = _module(root, path)
    package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    package = [p for p in package if p]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and (node.module == "pipeline" or node.module.startswith("pipeline.")):
                target = node.module[len("pipeline.") :] if node.module != "pipeline" else ""
            else:
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}" if target else alias.name
                out.add(full if _exists(root, full) else target)
        elif isinstance(node, ast.Import):
            out |= {
                a.name[len("pipeline.") :] for a in node.names if a.name.startswith("pipeline.")
            }
    out.discard(mod)
    return out


def _graph(root: Path) -> dict[str, set[str]]:
    return {_module(root, p): _imports(root, p) for p in root.rglob("*.py")}


def _layer(name: str) -> str:
    head = name.split(".")[0]
    return "front" if head in FRONT else head


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan's algorithm):
    each is a set of modules that import each other round a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
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
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _layer_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for a, deps in graph.items():
        out.setdefault(_layer(a), set()).update(_layer(b) for b in deps if _layer(b) != _layer(a))
    return out


def layering_problems(root: Path) -> list[str]:
    """What breaks the house plan under ``root``: cycles between modules, cycles between
    layers, imports running up the floors, modules at the top that are not front doors."""
    graph = _graph(root)
    problems = [f"import cycle: {' <-> '.join(c)}" for c in _cycles(graph)]
    problems += [f"cycle between layers: {' <-> '.join(c)}" for c in _cycles(_layer_graph(graph))]
    for a, deps in sorted(graph.items()):
        for b in sorted(deps):
            la, lb = _layer(a), _layer(b)
            if la in LAYERS and lb in LAYERS and LAYERS.index(lb) > LAYERS.index(la):
                problems.append(f"upward import: {a or 'pipeline'} ({la}) imports {b} ({lb})")
    loose = sorted(m for m in graph if "." not in m and m not in TOP_MODULES and m not in LAYERS)
    problems += [f"a module at the top that is no front door: {m}" for m in loose]
    return problems


def _allowed(sub: str) -> set[str]:
    """From the sub-package's docstring: the ``names`` between ``May import`` and ``Never``."""
    doc = ast.get_docstring(ast.parse((ROOT / sub / "__init__.py").read_text())) or ""
    m = re.search(r"May import:?(.*?)(?:Never|$)", doc, re.S)
    assert m, f"pipeline/{sub}/__init__.py must say what it may import"
    return set(re.findall(r"``(\w+)``", m.group(1)))


def test_each_subpackage_imports_only_what_it_declares():
    violations = []
    for sub in LAYERS[1:-1]:
        allowed = _allowed(sub)
        for path in sorted((ROOT / sub).rglob("*.py")):
            for imp in _imports(ROOT, path):
                head = imp.split(".")[0]
                if head not in (sub, "") and head not in allowed:
                    violations.append(f"{path.relative_to(ROOT)} imports pipeline.{imp}")
    assert not violations, "imports against the docstrings:\n" + "\n".join(violations)


def test_the_docstrings_declare_only_lower_floors():
    for sub in LAYERS[1:-1]:
        above = {layer for layer in LAYERS[LAYERS.index(sub) + 1 :]} | FRONT
        assert not _allowed(sub) & above, f"pipeline/{sub} declares imports from a floor above"


def test_no_cycles_no_upward_imports_and_at_most_six_top_modules():
    assert layering_problems(ROOT) == []
    top = sorted(p.name for p in ROOT.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "api.py", "cli.py"]


def test_a_cycle_through_a_lazy_import_is_found(tmp_path):
    """The checker would be hollow if it missed an import inside a function: plant one
    in a copy of the package (io importing run, which imports io) and it must say so."""
    copy = tmp_path / "pipeline"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert layering_problems(copy) == []
    target = copy / "io" / "headers.py"
    target.write_text(
        target.read_text() + "\n\ndef _planted():\n    from ..run import runner\n\n"
        "    return runner\n"
    )
    problems = layering_problems(copy)
    assert any(p.startswith("import cycle:") and "io.headers" in p for p in problems), problems
    assert "cycle between layers: io <-> plan <-> run" in problems or any(
        p.startswith("cycle between layers:") and "io" in p and "run" in p for p in problems
    )
    assert "upward import: io.headers (io) imports run.runner (run)" in problems


def test_a_lazy_cycle_between_the_front_door_and_serve_is_found(tmp_path):
    """The cycle this house once had: api -> serve.app (lazily) -> api (lazily)."""
    copy = tmp_path / "pipeline"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    app = copy / "serve" / "app.py"
    app.write_text(app.read_text() + "\n\ndef _planted():\n    from ..api import stages\n")
    problems = layering_problems(copy)
    assert "upward import: serve.app (serve) imports api (front)" in problems
    assert any(p.startswith("cycle between layers:") and "serve" in p for p in problems), problems


def test_the_checker_sees_lazy_and_relative_imports():
    specs = _imports(ROOT, ROOT / "backends" / "__init__.py")
    assert {"backends.flux_weights", "config.families"} <= specs  # inside the grid functions
    stage = _imports(ROOT, ROOT / "plan" / "stage.py")
    assert {"io.headers", "io.manifest", "common.parallel", "plan.rows"} <= stage
    runner = _imports(ROOT, ROOT / "run" / "runner.py")
    assert "review.report" in runner or "review" in runner  # imported inside run()
