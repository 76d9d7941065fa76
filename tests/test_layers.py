"""The harness's layers, as ``harness/__init__.py`` describes them: core < checks < report <
pytest glue and command line. Core and checks import no pytest, no module imports a layer above
its own, and no package of this repository has an import cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.runner import ROOT

# Rank of each layer: a module may import its own layer and those below it.
LAYERS = {"core": 0, "api": 0, "checks": 1, "report": 2, "pytest_plugin": 3, "cli": 3, "__main__": 4}
PACKAGES = ("harness", "reference", "targets")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Modules of this repository that ``path`` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found.update(name for name in names if name in known)
    return found


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if parts[0] == "harness" and len(parts) > 1 else None


def test_no_layer_imports_one_above_it():
    known = set(modules())
    upward = []
    for module, path in modules().items():
        own = layer_of(module)
        for imported in imports_of(path, known):
            theirs = layer_of(imported)
            if own is not None and theirs is not None and theirs > own:
                upward.append(f"{module} imports {imported}")
    assert not upward, upward


def test_no_import_cycles():
    known = set(modules())
    graph = {module: imports_of(path, known) - {module} for module, path in modules().items()}
    # A package's __init__ is imported with every module under it, so a cycle through one is real.
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [node, nxt]) if nxt in stack else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert not cycles, cycles


@pytest.mark.parametrize("layer", ["gpt_conformance.harness.core", "gpt_conformance.harness.checks", "gpt_conformance.harness.report", "gpt_conformance.harness.cli"])
def test_library_imports_without_pytest(layer):
    """Every module of the library layers imports with pytest blocked (as in a notebook or
    ``python -m gpt_conformance``), so none of them depends on pytest."""
    names = sorted(m for m in modules() if m == layer or m.startswith(layer + "."))
    script = "import sys\nsys.modules['pytest'] = None\n" + "".join(f"import {name}\n" for name in names)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
