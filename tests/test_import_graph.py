"""The upper floor's modules import each other in one direction only (no import cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

import faceaudit

PACKAGE = Path(faceaudit.__file__).parent
#: The modules whose cycles this test forbids: the pipeline and its views, and the demo above them.
WATCHED = ("faceaudit.audit", "faceaudit.trend", "faceaudit.compare", "faceaudit.pipeline", "faceaudit.demo",
           "faceaudit.cli", "faceaudit.report.rerender", "faceaudit.backends.selection")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Every import (module level or inside a function) between faceaudit modules; importing a.b.c also
    imports its packages a.b (the root package, which only holds the version, is left out)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for t in targets:
                while t and t not in files:
                    t = t.rpartition(".")[0]
                while t and t != "faceaudit" and not (mod == t or mod.startswith(t + ".")):
                    graph[mod].add(t)  # a module's own packages are already imported: no edge to them
                    t = t.rpartition(".")[0]
    return graph


def _cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """One import path from `start` back to itself, or None."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def test_no_import_cycle_on_the_upper_floor() -> None:
    graph = _import_graph()
    watched = [m for m in graph if any(m == w or m.startswith(w + ".") for w in WATCHED)]
    assert "faceaudit.pipeline" in watched and "faceaudit.audit" in watched
    cycles = {m: c for m in watched if (c := _cycle_through(graph, m))}
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles.values())


def test_graph_sees_function_level_imports() -> None:
    """The test can fail: the CLI imports the views only inside its commands."""
    graph = _import_graph()
    assert {"faceaudit.audit", "faceaudit.trend", "faceaudit.compare"} <= graph["faceaudit.cli"]
