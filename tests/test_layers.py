"""The layers of docs/CONTRACTS.md: ``serving → gancore ← export → training`` (gancore, torch-free,
at the bottom: training uses its CLI helpers and seed rule too), and no import cycle between the
project's modules, counting the imports made inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("gancore", "serving", "export", "training")
# What each package may import of the others.
ALLOWED = {
    "gancore": set(),
    "serving": {"gancore"},
    "export": {"gancore", "training"},
    "training": {"gancore"},
}


def _module(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in modules and t != name}
        graph[name] = deps
    return graph


def test_each_package_imports_only_the_layers_below_it():
    wrong = sorted(
        (name, dep)
        for name, deps in _graph().items()
        for dep in deps
        if dep.split(".")[0] != name.split(".")[0]
        and dep.split(".")[0] not in ALLOWED[name.split(".")[0]]
    )
    assert wrong == []


def test_no_import_cycles():
    graph = _graph()
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []
