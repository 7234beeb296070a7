"""The layer rules of docs/DESIGN.md, read off the source with `ast`: every import reaches down (or
across one layer), no command module imports another, no import circle (among ipce.serve's modules
neither), no `print(` below commands/, no function longer than MAX_FUNCTION_LINES."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ipce"

# higher reaches lower; modules of one layer may import each other (engine -> serve -> demo share one)
LAYERS = {"cli": 7, "__main__": 7, "commands": 6, "engine": 5, "serve": 5, "demo": 5, "api": 4, "config": 3,
          "datasets": 3, "models": 2, "utils": 1, "errors": 0, "presets": 0,
          "ray": 4}  # ipce.ray: a Ray Data callable over the API
# simple small functions: from the `def` line to the last one, docstring included, decorators not
MAX_FUNCTION_LINES = 60


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """Every ipce module `path` imports, anywhere in the file (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name.startswith("ipce.") or name == "ipce":
                found.add(name)
    return found


def layer(module: str) -> int:
    """The package itself (`ipce.load_scorer`, a lazy front over api.py) sits on top, beside cli."""
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else LAYERS["cli"]


GRAPH = {name: imports(path, set(modules())) - {name, "ipce"} for name, path in modules().items()}


def test_every_import_reaches_down():
    upward = [(m, i) for m, found in GRAPH.items() for i in found if layer(i) > layer(m)]
    assert upward == []


def test_a_command_module_imports_no_other_command_module():
    shared = {"ipce.commands", "ipce.commands.flags"}
    crossing = [(m, i) for m, found in GRAPH.items() if m.startswith("ipce.commands.")
                for i in found if i.startswith("ipce.commands.") and i not in shared]
    assert crossing == []


def test_utils_import_nothing_of_ipce_but_errors():
    assert [(m, i) for m, found in GRAPH.items() if m.startswith("ipce.utils")
            for i in found if not (i.startswith("ipce.utils") or i == "ipce.errors")] == []


def test_no_import_circle():
    def circle_from(start):
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in GRAPH.get(node, ()):
                if nxt == start:
                    return path + [start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    circles = [c for c in map(circle_from, GRAPH) if c]
    assert circles == []
    assert {m for m in GRAPH if m.startswith("ipce.serve.")} >= {"ipce.serve.app", "ipce.serve.batch"}


def test_nothing_below_commands_prints():
    printing = []
    for name, path in modules().items():
        if layer(name) >= LAYERS["commands"]:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                printing.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert printing == []


def test_no_function_is_longer_than_the_limit():
    long = []
    for path in modules().values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}: {lines} lines")
    assert long == []
