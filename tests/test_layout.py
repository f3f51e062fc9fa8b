"""The package's house plan holds: each sub-package imports only what its docstring
allows (lazy imports inside functions included), and no module imports itself in a circle."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pipeline

ROOT = Path(pipeline.__file__).parent
SUBPACKAGES = ("io", "backends", "plan", "review", "run", "serve")
# what every layer shares (the entry points cli/__main__ may import anything)
SHARED = {"backdrop", "box", "config", "codes", "parallel", "retries", "secrets", "storage"}


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every ``pipeline`` module this file imports, as dotted names under the package."""
    mod = _module(path)
    package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
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
            names = [a.name for a in node.names]
            for (
                name
            ) in names:  # ``from . import storage`` names a module; ``from .x import f`` does not
                full = f"{target}.{name}" if target else name
                out.add(
                    full
                    if (ROOT / (full.replace(".", "/") + ".py")).exists()
                    or (ROOT / full.replace(".", "/")).is_dir()
                    else target
                )
        elif isinstance(node, ast.Import):
            out |= {
                a.name[len("pipeline.") :] for a in node.names if a.name.startswith("pipeline.")
            }
    return {o for o in out if o}


def _allowed(sub: str) -> set[str] | None:
    """From the sub-package's docstring: ``May import: ...`` (None = anything)."""
    doc = ast.get_docstring(ast.parse((ROOT / sub / "__init__.py").read_text())) or ""
    m = re.search(r"[Mm]ay import:?(.*?)(?:Never|$)", doc, re.S)
    assert m, f"pipeline/{sub}/__init__.py must say what it may import"
    text = m.group(1)
    if "every other sub-package" in text:
        return None
    allowed = set(re.findall(r"``(\w+)``", text))
    if "top-level shared modules" in text:
        allowed |= SHARED
    return allowed


def _layer(name: str) -> str:
    head = name.split(".")[0]
    return head if head in SUBPACKAGES else "top"


def test_each_subpackage_imports_only_what_it_declares():
    violations = []
    for sub in SUBPACKAGES:
        allowed = _allowed(sub)
        if allowed is None:
            continue
        for path in sorted((ROOT / sub).rglob("*.py")):
            for imp in _imports(path):
                head = imp.split(".")[0]
                if head != sub and head not in allowed:
                    violations.append(f"{path.relative_to(ROOT)} imports pipeline.{imp}")
    assert not violations, "imports against the layering:\n" + "\n".join(violations)


def test_shared_modules_import_only_each_other():
    for name in SHARED:  # a module, or a package (config) whose every file counts
        files = (
            [ROOT / f"{name}.py"]
            if (ROOT / f"{name}.py").exists()
            else list((ROOT / name).rglob("*.py"))
        )
        assert files, f"shared module pipeline/{name} not found"
        for path in files:
            bad = {i for i in _imports(path) if i.split(".")[0] not in SHARED}
            assert not bad, (
                f"{path.relative_to(ROOT)} is shared by every layer but imports {sorted(bad)}"
            )


def test_the_layering_has_no_cycles_and_every_module_is_placed():
    graph = {_module(p): _imports(p) for p in ROOT.rglob("*.py")}
    loose = sorted(
        m
        for m in graph
        if "." not in m
        and m not in SHARED | {"cli", "__main__", "api", "configdoc", ""}
        and m not in SUBPACKAGES
    )
    assert not loose, f"modules at the top that are neither shared nor an entry point: {loose}"
    layers = {
        (_layer(a), _layer(b)) for a, deps in graph.items() for b in deps if _layer(a) != _layer(b)
    }
    order = ["top", "io", "backends", "plan", "review", "run", "serve"]
    upward = sorted(
        (a, b)
        for a, b in layers
        if a in order and b in order and order.index(b) > order.index(a) and a != "top"
    )
    assert not upward, f"imports running upward: {upward}"


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """The rule above would be hollow if the parser missed function-level imports."""
    stage = _imports(ROOT / "plan" / "stage.py")
    assert "backends.flux_weights" in stage  # imported inside plan_grid()
    assert {"io.headers", "io.manifest", "parallel", "plan.rows"} <= stage
    runner = _imports(ROOT / "run" / "runner.py")
    assert "review.report" in runner or "review" in runner  # imported inside run()
