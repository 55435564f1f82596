"""Which model names genai-prices may price, known without importing it.

Importing genai-prices and loading its data takes 150-300 ms, a large part of a script's cold
start, and for a model it does not know that is paid only to learn it does not know it. The
index is the match rules of every model in genai-prices' data (``equals``, ``starts_with``,
``contains``, ``regex``, ...), copied to a JSON file the first time it is needed and read from
there afterwards: ``$HOLYNB_HOME/genai_prices_index.json``, keyed by the size and date of
genai-prices' files (``stamp``), so a new release builds a new index.

The index only ever says no: when no model's rule matches a name, genai-prices has no price for
it; when one does, genai-prices itself is asked (and decides the price), so prices stay exactly
genai-prices' own. When genai-prices is already imported (perhaps with prices fetched at run
time), it is asked directly.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import sys
import threading
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

from holynb._config import holynb_home

__all__ = ["PriceIndex", "build", "current", "index_path", "read_stamped", "stamp", "write_json"]

FORMAT = 1
FILE_NAME = "genai_prices_index.json"
Rule = list[Any]  # ["equals", "gpt-4o"], ["or", [rule, ...]], ["and", [rule, ...]], ...
_COMPACT_DATE = re.compile(r"(-)(20\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?=-|:|$)")


class PriceIndex:
    """The match rules of genai-prices' models, and whether any of them matches a name.

    >>> PriceIndex("x", [["equals", "gpt-4o"], ["starts_with", "claude-"]]).may_price("GPT-4o")
    True
    """

    def __init__(self, key: str, rules: list[Rule]) -> None:
        self.key = key
        self.rules = rules
        self._equals: set[str] = set()
        self._others: list[Rule] = []
        for rule in rules:  # most rules are (an "or" of) plain names: one set lookup for those
            names = _plain_names(rule)
            if names is None:
                self._others.append(rule)
            else:
                self._equals.update(names)

    def may_price(self, name: str) -> bool:
        """False when no genai-prices model matches ``name`` (then it has no price for it)."""
        ref = name.lower()
        refs = {ref, _with_dashed_date(ref)}  # genai-prices retries compact dates this way
        return any(
            r in self._equals or any(_matches(rule, r) for rule in self._others) for r in refs
        )

    def to_json(self) -> dict[str, Any]:
        """The index as stored on disk."""
        return {"format": FORMAT, "key": self.key, "rules": self.rules}


@cache
def stamp() -> str | None:
    """Which genai-prices is installed, found without importing it: the size and time of each
    of its source files (its data and the code that matches and prices), so any other release
    or any edit gives another stamp; None when it is not installed."""
    spec = importlib.util.find_spec("genai_prices")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    try:
        files = sorted(
            (entry.name, entry.stat().st_size, entry.stat().st_mtime_ns)
            for entry in os.scandir(folder)
            if entry.name.endswith(".py")
        )
    except OSError:  # no index then; genai-prices is asked directly
        return None
    if not any(name == "data.py" for name, _, _ in files):
        return None
    digest = hashlib.sha256(repr(files).encode()).hexdigest()[:16]
    return f"{len(files)}:{digest}"


def build(key: str) -> PriceIndex:
    """The index of the installed genai-prices' bundled data (imports genai-prices)."""
    from genai_prices.data import providers  # the bundled data, whatever snapshot is in use

    rules = [_rule(model.match) for provider in providers for model in provider.models]
    return PriceIndex(key, rules)


def index_path() -> Path:
    """Where the index is kept: ``$HOLYNB_HOME/genai_prices_index.json``."""
    return holynb_home() / FILE_NAME


_lock = threading.Lock()
_loaded: dict[tuple[Path, str], PriceIndex] = {}


def current(*, create: bool = True, path: Path | None = None) -> PriceIndex | None:
    """The index for the installed genai-prices: read from ``path`` (default
    :func:`index_path`), else built and saved there when ``create``. None when there is none to
    use: genai-prices is not installed, or (without ``create``) the index is not built yet, or
    genai-prices is imported already (it is then asked itself; the index is still saved for the
    next process). A file that cannot be written only means the next process builds it again."""
    key = stamp()
    if key is None:
        return None
    path = index_path() if path is None else path
    with _lock:
        found = _loaded.get((path, key))
        if found is None:
            found = _read(path, key)
            if found is None and create:
                found = build(key)
                write_json(path, found.to_json())
            if found is not None:
                _loaded[(path, key)] = found
    return None if "genai_prices" in sys.modules else found


def _read(path: Path, key: str) -> PriceIndex | None:
    data = read_stamped(path, key, FORMAT)
    rules = data.get("rules") if data is not None else None
    return PriceIndex(key, rules) if isinstance(rules, list) else None


def read_stamped(path: Path, key: str, format: int) -> dict[str, Any] | None:
    """The JSON object in ``path`` when it is of ``format`` and made for genai-prices ``key``
    (``stamp()``), else None (missing, unreadable, or made for another release)."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != format or data.get("key") != key:
        return None
    return data


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` whole or not at all (readers see the old file or the new);
    a file that cannot be written is left as it was."""
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(data, separators=(",", ":")), "utf-8")
        os.replace(temporary, path)
    with contextlib.suppress(OSError):
        temporary.unlink(missing_ok=True)


def _rule(clause: Any) -> Rule:
    """A genai-prices match clause as JSON data."""
    for kind in ("equals", "starts_with", "ends_with", "contains", "regex"):
        if hasattr(clause, kind):
            return [kind, getattr(clause, kind)]
    if hasattr(clause, "or_"):
        return ["or", [_rule(c) for c in clause.or_]]
    if hasattr(clause, "and_"):
        return ["and", [_rule(c) for c in clause.and_]]
    return ["any"]  # a kind of rule this holynb does not know: always ask genai-prices


def _plain_names(rule: Rule) -> list[str] | None:
    if rule[0] == "equals":
        return [rule[1].lower()]
    if rule[0] == "or":
        names: list[str] = []
        for sub in rule[1]:
            found = _plain_names(sub)
            if found is None:
                return None
            names += found
        return names
    return None


def _matches(rule: Rule, ref: str) -> bool:
    # The same tests as genai-prices' Clause*.is_match (``ref`` is lower-case already).
    kind = rule[0]
    if kind == "equals":
        return ref == rule[1].lower()
    if kind == "starts_with":
        return ref.startswith(rule[1].lower())
    if kind == "ends_with":
        return ref.endswith(rule[1].lower())
    if kind == "contains":
        return rule[1].lower() in ref
    if kind == "regex":
        return re.search(rule[1], ref) is not None
    if kind == "or":
        return any(_matches(sub, ref) for sub in rule[1])
    if kind == "and":
        return all(_matches(sub, ref) for sub in rule[1])
    return True


def _with_dashed_date(ref: str) -> str:
    def dashed(m: re.Match[str]) -> str:
        year, month, day = (int(m.group(i)) for i in range(2, 5))
        try:
            date(year, month, day)
        except ValueError:
            return m.group(0)
        return f"{m.group(1)}{year:04d}-{month:02d}-{day:02d}"

    return _COMPACT_DATE.sub(dashed, ref)
