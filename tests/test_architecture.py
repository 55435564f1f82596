"""The shape of holynb/ as ../shared/DESIGN.md draws it, checked from the code itself.

- The import graph (module-level, function-level and TYPE_CHECKING imports alike) has no circle,
  and every import goes down (or sideways within a floor) the layer table ``FLOORS``; the local
  server is an island over the leaves.
- No module reads or writes another module's private names (``obj._name`` where ``_name`` is
  defined in another holynb module and ``obj`` is not ``self``/``cls``), nor imports one.
- Only the core (``holynb/calls/``) reserves and settles budgets, appends to the ledger and the
  log, looks up and saves the response cache, and sends through the client.

Each checker is also run on a planted violation, so a checker that stopped seeing is caught too.
When the code moves, fix the code or the table here (it is kept by hand, like ``_EXPORTS``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "holynb"

# Bottom to top: a module may import its own floor and the floors below, never one above.
FLOORS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "leaves",
        (
            "holynb._version",
            "holynb._config",
            "holynb.errors",
            "holynb.results",
            "holynb.units",
            "holynb.tokens",
            "holynb.price_index",
            "holynb.price_cards",
            "holynb.prices",
            "holynb.image_tokens",
            "holynb.images",
            "holynb.prompts",
            "holynb.parameters",
            "holynb.prompt_cache",
            "holynb.render",
            "holynb.highlight",
            "holynb.formatting",
            "holynb.progress",
            "holynb.jsonx",
            "holynb.schema_check",
            "holynb.ledger",
            "holynb.frames",
            "holynb._loop",
            "holynb._prefetch",
        ),
    ),
    (
        "http",
        (
            "holynb._transport",
            "holynb._aiohttp_pool",
            "holynb._sse",
            "holynb._retry",
            "holynb._pacing",
            "holynb._wire",
            "holynb._wire.*",
            "holynb._client",
        ),
    ),
    (
        "stores",
        (
            "holynb._sqlite",
            "holynb.store",
            "holynb.keystore",
            "holynb.cache",
            "holynb.budget",
            "holynb.worst_case",
            "holynb.jobstore",
            "holynb.team",
            "holynb.team.*",
        ),
    ),
    (
        "core",
        (
            "holynb.calls",
            "holynb.calls.*",
            "holynb.chat_stream",
            "holynb.structured",
            "holynb.answers",
        ),
    ),
    (
        "features",
        (
            "holynb.bulk",
            "holynb.compare",
            "holynb.batch",
            "holynb.batch.*",
            "holynb.interpreter",
            "holynb.interpreter.*",
            "holynb.report",
            "holynb.dry_run",
        ),
    ),
    ("facade", ("holynb.session",)),
    (
        "notebook and commands",
        (
            "holynb.offline",
            "holynb.notebook",
            "holynb.notebook.*",
            "holynb.demo",
            "holynb.cli",
            "holynb.__main__",
            "holynb",
        ),
    ),
)

# The local server is an island: it imports itself and the leaves, and the interpreter's wire
# protocol and sandbox, of which its ``local/python`` model is the other side.
ISLAND = "holynb.server"
ISLAND_MAY_IMPORT = ("holynb.interpreter.protocol", "holynb.interpreter.sandbox")

# What spends or records, by owner: (what the receiver is called, the methods). Only calls/ (and
# the owner's own module) may call them.
SPENDING: tuple[tuple[str, str, frozenset[str]], ...] = (
    ("budget", r"budget", frozenset({"reserve", "reserve_all", "settle", "adopt", "count_spent"})),
    ("ledger", r"ledger", frozenset({"append", "extend"})),
    ("ledger log", r"store|log", frozenset({"append", "extend", "hold", "hold_all"})),
    ("response cache", r"cache", frozenset({"lookup", "save"})),
    ("client", r"client", frozenset({"complete", "stream", "send", "get_json"})),
)
SPENDING_OWNERS = {
    "holynb.budget",
    "holynb.ledger",
    "holynb.store",
    "holynb.cache",
    "holynb._client",
}


# -- reading the package ---------------------------------------------------------------------


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(package: Path = PACKAGE) -> dict[str, tuple[ast.Module, bool]]:
    """Every module of the package: its syntax tree and whether it is a package (__init__)."""
    root = package.parent
    return {
        module_name(p, root): (
            ast.parse(p.read_text(encoding="utf-8"), str(p)),
            p.stem == "__init__",
        )
        for p in sorted(package.rglob("*.py"))
        if "labextension" not in p.parts
    }


def imports_of(name: str, tree: ast.Module, is_package: bool, known: Iterable[str]) -> set[str]:
    """Every module of ``known`` that module ``name`` imports, wherever the statement is."""
    known = set(known)
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] or [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(modules: Mapping[str, tuple[ast.Module, bool]]) -> dict[str, set[str]]:
    return {n: imports_of(n, tree, pkg, modules) for n, (tree, pkg) in modules.items()}


def circles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The import circles (strongly connected components of more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm; the package is far below the recursion limit
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def floor_of(module: str) -> int | None:
    for level, (_, patterns) in enumerate(FLOORS):
        if any(fnmatchcase(module, p) for p in patterns):
            return level
    return None


def in_island(module: str) -> bool:
    return module == ISLAND or module.startswith(ISLAND + ".")


def layer_violations(graph: Mapping[str, set[str]]) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if in_island(module):
                if not (in_island(target) or floor_of(target) == 0 or target in ISLAND_MAY_IMPORT):
                    problems.append(f"{module} (the server island) imports {target}")
                continue
            here, there = floor_of(module), floor_of(target)
            if in_island(target):
                if module not in ("holynb", "holynb.offline", "holynb.cli"):
                    problems.append(f"{module} imports the server island ({target})")
            elif here is not None and there is not None and there > here:
                problems.append(
                    f"{module} ({FLOORS[here][0]}) imports {target}, a floor above "
                    f"({FLOORS[there][0]})"
                )
    return problems


def defined_names(tree: ast.Module) -> set[str]:
    """Every name a module defines, assigns, binds or imports (attributes of self included)."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            out.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            out.add(node.id)
        elif isinstance(node, ast.arg):
            out.add(node.arg)
        elif isinstance(node, ast.alias):
            out.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.keyword) and node.arg:
            out.add(node.arg)
    return out


def private_reaches(modules: Mapping[str, tuple[ast.Module, bool]]) -> list[str]:
    """``obj._name`` where ``_name`` is another module's (``obj`` not self/cls/super()), and
    ``from holynb.x import _name``."""
    defined = {name: defined_names(tree) for name, (tree, _) in modules.items()}
    owners: dict[str, set[str]] = {}
    for module, names in defined.items():
        for n in names:
            owners.setdefault(n, set()).add(module)
    problems = []
    for module, (tree, _) in sorted(modules.items()):
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and is_private(node.attr):
                receiver = node.value
                if isinstance(receiver, ast.Name) and receiver.id in ("self", "cls"):
                    continue
                if isinstance(receiver, ast.Call) and ast.unparse(receiver.func) == "super":
                    continue
                if node.attr not in defined[module] and owners.get(node.attr, set()) - {module}:
                    problems.append(f"{module}:{node.lineno} reads {ast.unparse(node)}")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("holynb"):
                for alias in node.names:
                    if is_private(alias.name):
                        problems.append(
                            f"{module}:{node.lineno} imports {alias.name} from {node.module}"
                        )
    return problems


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def spending_outside_the_core(modules: Mapping[str, tuple[ast.Module, bool]]) -> list[str]:
    problems = []
    for module, (tree, _) in sorted(modules.items()):
        if module.startswith("holynb.calls") or in_island(module) or module in SPENDING_OWNERS:
            continue
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            receiver = node.func.value
            last = receiver.attr if isinstance(receiver, ast.Attribute) else ast.unparse(receiver)
            for what, named, methods in SPENDING:
                if node.func.attr in methods and re.search(named, last, re.IGNORECASE):
                    problems.append(
                        f"{module}:{node.lineno} calls {ast.unparse(node.func)} (the {what}): "
                        "only holynb/calls/ may"
                    )
    return problems


# -- the package as it is ----------------------------------------------------------------------

MODULES = package_modules()
GRAPH = import_graph(MODULES)


def test_holynb_has_no_import_circle():
    found = circles(GRAPH)
    assert not found, "import circles: " + "; ".join(" -> ".join(c) for c in found)


def test_no_module_imports_the_package_above_everything():
    """``from holynb import x`` inside holynb ties a low module to the top (``__init__``)."""
    up = sorted(m for m, targets in GRAPH.items() if "holynb" in targets and m != "holynb.__main__")
    assert not up, f"these import the holynb package itself: {up}"


def test_every_module_has_a_floor():
    missing = [m for m in MODULES if floor_of(m) is None and not in_island(m)]
    assert not missing, f"add these to FLOORS in {Path(__file__).name}: {missing}"


def test_every_import_goes_down_the_floors():
    problems = layer_violations(GRAPH)
    assert not problems, "\n".join(problems)


def test_no_module_reaches_into_another_modules_private_names():
    problems = private_reaches(MODULES)
    assert not problems, "\n".join(problems)


def test_only_the_core_reserves_records_caches_and_sends():
    problems = spending_outside_the_core(MODULES)
    assert not problems, "\n".join(problems)


def test_session_stays_a_facade():
    lines = (PACKAGE / "session.py").read_text(encoding="utf-8").count("\n")
    assert lines <= 700, f"session.py has {lines} lines; move logic into calls/ or a feature"


# -- each checker sees a planted violation -----------------------------------------------------


def plant(tmp_path: Path, files: Mapping[str, str]) -> dict[str, tuple[ast.Module, bool]]:
    for relative, text in files.items():
        path = tmp_path / "holynb" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return package_modules(tmp_path / "holynb")


def test_the_checkers_see_planted_violations(tmp_path):
    modules = plant(
        tmp_path,
        {
            "__init__.py": "",
            "errors.py": "def f():\n    from holynb.session import Session\n",  # up, circle
            "session.py": (
                "from holynb import errors\n\ndef _hidden(): ...\n\n"
                "class Session:\n    def __init__(self):\n        self._secret = 1\n"
            ),
            "bulk.py": (
                "from holynb.session import _hidden\n"
                "def run(session):\n"
                "    session.meter.budget.reserve(1.0)\n"
                "    session.caller.client.send('GET', '/x')\n"
                "    return session._secret\n"
            ),
            "server/__init__.py": "from holynb.session import Session\n",
        },
    )
    graph = import_graph(modules)
    assert circles(graph) == [["holynb.errors", "holynb.session"]]
    layers = layer_violations(graph)
    assert any("holynb.errors (leaves) imports holynb.session" in p for p in layers)
    assert any("server island) imports holynb.session" in p for p in layers)
    reaches = private_reaches(modules)
    assert any("imports _hidden" in p for p in reaches)
    assert any("reads session._secret" in p for p in reaches)
    spends = spending_outside_the_core(modules)
    assert any("budget.reserve (the budget)" in p for p in spends)
    assert any("client.send (the client)" in p for p in spends)


def calls_named(tree: ast.Module, name: str) -> list[int]:
    return [
        n.lineno
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and ast.unparse(n.func).split(".")[-1] == name
    ]


def test_one_body_builder():
    """A chat body (a dict with "model" and "messages") is written in calls/body.py alone."""
    found = []
    for module, (tree, _) in MODULES.items():
        if in_island(module):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
                if {"model", "messages"} <= keys:
                    found.append(f"{module}:{node.lineno}")
    assert [place.split(":")[0] for place in found] == ["holynb.calls.body"], found


def test_one_prompt_parser_and_one_frame_builder():
    """map, compare, batch and batch_jsonl read prompts with read_prompts; map, compare, batch
    results and the side-by-side view build frames with frames.result_frame, never their own."""
    definitions = [
        m
        for m, (tree, _) in MODULES.items()
        for n in ast.walk(tree)
        if isinstance(n, ast.FunctionDef) and n.name in ("read_prompts", "result_frame")
    ]
    assert sorted(definitions) == ["holynb.frames", "holynb.prompts"]
    for module in ("holynb.bulk", "holynb.compare", "holynb.batch.jobs", "holynb.batch.files"):
        assert calls_named(MODULES[module][0], "read_prompts"), f"{module} parses prompts itself"
    for module in ("holynb.bulk", "holynb.batch.results", "holynb.notebook.side_by_side"):
        tree = MODULES[module][0]
        assert calls_named(tree, "result_frame"), module
        assert not calls_named(tree, "DataFrame"), f"{module} builds a frame of its own"
