"""The shape of holynb/server/: imports go one way and modules talk through public names.

Every import counts (module level, inside functions, under TYPE_CHECKING); ``from
holynb.server import faults`` is an import of ``holynb.server.faults``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import holynb.server

SERVER = Path(holynb.server.__file__).parent
PACKAGE = "holynb.server"


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(SERVER.glob("*.py")):
        name = PACKAGE if path.stem == "__init__" else f"{PACKAGE}.{path.stem}"
        out[name] = ast.parse(path.read_text(encoding="utf-8"))
    return out


def _imports(tree: ast.Module, known: set[str]) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module in known:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names}
            if submodules <= known:
                found.update(submodules)  # from holynb.server import faults, messages
            else:
                found.add(node.module)
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph``, or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for target in sorted(graph[node]):
            found = visit(target, [*path, node])
            if found:
                return found
        done.add(node)
        return None

    for start in sorted(graph):
        found = visit(start, [])
        if found:
            return found
    return None


def test_server_imports_have_no_circle():
    modules = _modules()
    graph = {name: _imports(tree, set(modules)) - {name} for name, tree in modules.items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_registry_knows_no_model_and_model_modules_no_catalog():
    modules = _modules()
    known = set(modules)
    model_modules = {f"{PACKAGE}.{m}" for m in ("models", "json_model", "python_model", "vision")}
    assert (
        _imports(modules[f"{PACKAGE}.registry"], known) & (model_modules | {f"{PACKAGE}.catalog"})
        == set()
    )
    for name in model_modules:
        assert f"{PACKAGE}.catalog" not in _imports(modules[name], known), name


def _defined(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
    return names


def _private(name: str) -> bool:
    dunder = name.startswith("__") and name.endswith("__")
    protocol = name.startswith("_repr_") and name.endswith("_")
    return name.startswith("_") and not dunder and not protocol


def test_server_modules_use_no_private_name_of_another_module():
    reaches = []
    for module, tree in _modules().items():
        own = _defined(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                reaches += [
                    f"{module}: from {node.module} import {a.name}"
                    for a in node.names
                    if _private(a.name)
                ]
            elif isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in own:
                reaches.append(f"{module}:{node.lineno}: .{node.attr}")
    assert reaches == []


def test_one_streaming_loop_for_both_wire_formats():
    loops = [
        name
        for name, tree in _modules().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.AsyncFunctionDef)
        and any(
            isinstance(sub, ast.Call) and ast.unparse(sub.func).endswith("response.prepare")
            for sub in ast.walk(node)
        )
        and any(isinstance(sub, ast.For) for sub in ast.walk(node))
    ]
    assert sorted(set(loops)) == [f"{PACKAGE}.stream"]
