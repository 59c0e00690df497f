"""The house stays as built: imports run one way, from the entry points down to core/.

Read from the code's own imports (ast, every import statement, those inside functions
too), so a lazy import that runs up a layer or closes a circle fails here, not in a
review months later.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Lower layers first; a module may import its own layer and any layer below it.
LAYERS = [("core",), ("config", "inputs", "store"), ("teachers",), ("tasks",), ("engine",), ("executors",),
          ("outputs", "filters"), ("compare",), ("run",)]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _modules() -> dict[str, Path]:
    found = {}
    for top in ("factory", "filters"):
        for path in (ROOT / top).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The project modules `name` imports (an imported name resolved to its module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            wanted = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            wanted = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in wanted:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            # A package's own __init__ re-exporting its children is not a dependency upward.
            if target and target != name and not name.startswith(target + "."):
                targets.add(target)
    return targets


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "filters":
        return "filters"
    return parts[1] if len(parts) > 2 and parts[1] in RANK else None


def _circles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in GRAPH:
        if start in index:
            continue
        work = [(start, iter(sorted(GRAPH[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(GRAPH[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_no_import_circles():
    assert _circles() == []


def test_no_import_runs_up_a_layer():
    upward = sorted(f"{a} imports {b}" for a, targets in GRAPH.items() for b in targets
                    if _layer(a) and _layer(b) and RANK[_layer(a)] < RANK[_layer(b)])
    assert upward == []


def test_the_package_root_holds_only_entry_points():
    root = sorted(p.name for p in (ROOT / "factory").glob("*.py"))
    assert len(root) <= 5, root
    folders = {p.name for p in (ROOT / "factory").iterdir() if (p / "__init__.py").exists()}
    assert set(RANK) - {"filters"} <= folders, "a layer's folder is missing"


def test_each_filter_family_is_a_folder():
    families = {p.name for p in (ROOT / "filters").iterdir() if (p / "__init__.py").exists()}
    assert {"dedup", "judge", "diversity", "pii", "decontaminate"} <= families


def test_no_test_file_imports_another():
    """Shared code lives in tests/helpers/, so a test file is never a library."""
    offenders = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            offenders += [f"{path.name} imports {name}" for name in names if name.rpartition(".")[2].startswith("test_")]
    assert offenders == []
