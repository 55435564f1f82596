"""The public API is one table (``holynb._EXPORTS``): ``__all__``, the lazy attributes and the
TYPE_CHECKING imports that type checkers read must all agree with it (as httpx's
test_exported_members.py). On drift the failure prints the corrected table to paste back."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import holynb

INIT = Path(holynb.__file__)


def _type_checking_imports() -> dict[str, str]:
    """name -> module, as imported under ``if TYPE_CHECKING:`` in holynb/__init__.py."""
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom), ast.unparse(stmt)
                for alias in stmt.names:
                    # `X as X` is how a typed package marks a re-export (mypy, pyright)
                    assert alias.asname == alias.name, f"write `{alias.name} as {alias.name}`"
                    found[alias.name] = str(stmt.module)
    return found


def _home(name: str) -> str:
    """Where the object behind a public name is defined (a package that re-exports it counts)."""
    obj = getattr(holynb, name)
    return getattr(obj, "__module__", None) or inspect.getmodule(obj).__name__


def _corrected_table(names: set[str]) -> str:
    rows = sorted(names, key=lambda n: (_where(n), n.lower(), n))
    lines = ["_EXPORTS: dict[str, str] = {"]
    lines += [f'    "{n}": "{_where(n)}",' for n in rows]
    return "\n".join([*lines, "}"])


def _where(name: str) -> str:
    """The module a public name should be imported from: the table's or the TYPE_CHECKING
    block's when the object lives there, else the module that defines it."""
    for module in (holynb._EXPORTS.get(name), _type_checking_imports().get(name)):
        if not module:
            continue
        try:
            obj = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        home = getattr(obj, "__module__", None) or module
        return module if home == module or home.startswith(module + ".") else home
    return "?"


def _lives_in(name: str, module: str, home: str) -> bool:
    if home != module and not home.startswith(module + "."):
        return False
    return getattr(importlib.import_module(module), name, None) is getattr(holynb, name)


def test_all_is_the_table():
    assert holynb.__all__ == ["__version__", *holynb._EXPORTS]
    assert len(set(holynb.__all__)) == len(holynb.__all__)


def test_every_name_resolves_and_lives_where_the_table_says():
    wrong = {}
    for name, module in holynb._EXPORTS.items():
        try:
            home = _home(name)
        except (AttributeError, ImportError) as exc:
            wrong[name] = repr(exc)
            continue
        if not _lives_in(name, module, home):
            wrong[name] = f"table says {module}, defined in {home}"
    assert not wrong, f"{wrong}\n\nCorrected table:\n{_corrected_table(set(holynb._EXPORTS))}"


def test_type_checking_imports_agree_with_the_table():
    static = _type_checking_imports()
    if static != holynb._EXPORTS:
        missing = sorted(set(holynb._EXPORTS) - set(static))
        extra = sorted(set(static) - set(holynb._EXPORTS))
        moved = sorted(
            n for n in set(static) & set(holynb._EXPORTS) if static[n] != holynb._EXPORTS[n]
        )
        raise AssertionError(
            f"TYPE_CHECKING block drifted: missing {missing}, extra {extra}, other module {moved}"
            f"\n\nCorrected table:\n{_corrected_table(set(static) | set(holynb._EXPORTS))}"
        )


def test_version_comes_from_the_package_metadata():
    from importlib.metadata import version

    assert holynb.__version__ == version("holynb")
    assert '__version__ = "' not in INIT.read_text(encoding="utf-8")


def test_unknown_names_raise_attribute_error():
    try:
        holynb.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("holynb.NoSuchThing should not exist")
