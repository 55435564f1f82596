"""The README's Layout names every module of the package, and nothing that is gone."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "holynb"


def _layout() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Layout", 1)[1]
    return section.split("```", 2)[1]


def _modules() -> set[str]:
    """Top-level modules (``x.py``) and subpackages (``x/``) of holynb."""
    names = {p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    names |= {p.name + "/" for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    return names


def test_layout_lists_every_module():
    named = set(re.findall(r"(?<![\w/.])(\w+\.py|\w+/)", _layout()))
    missing = sorted(_modules() - named)
    assert not missing, f"README.md Layout does not mention {missing}"


def test_layout_names_only_modules_that_exist():
    named = set(re.findall(r"(?<![\w/.])(\w+\.py)", _layout()))
    gone = sorted(n for n in named if not list(ROOT.glob(f"holynb/**/{n}")))
    assert not gone, f"README.md Layout names {gone}, which holynb no longer has"
