"""The tutorial notebooks and binder/: nbval really checks the stored outputs, every public
feature appears in a notebook, and binder/ installs what the notebooks need.

The notebooks themselves run under nbval as part of ``python -m pytest`` (``--nbval`` and the
sanitizers in notebooks/nbval_sanitize.cfg are in pyproject.toml's addopts).
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

import holynb
from holynb.notebook.magics import LLMMagics

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
SANITIZE = NOTEBOOKS / "nbval_sanitize.cfg"
BINDER = REPO / "binder"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())

# Public names no notebook needs to use, each with the reason. Error classes are checked
# apart: they count when a notebook names them anywhere, e.g. in the printed error tree.
NOT_IN_NOTEBOOKS: dict[str, str] = {
    "ChatStream": "what Session.stream() returns; 01-quickstart iterates one and reads .result",
    "AsyncChatStream": "what Session.astream() returns; 01-quickstart iterates one",
}
# %%llm options that need no code cell, with the reason; they must still be named in a notebook.
OPTIONS_NOT_RUN = {
    "--bg": "its answer arrives after the cell has finished, so no output can be stored",
}
# What the notebooks use beyond holynb's runtime dependencies, and where.
NOTEBOOK_NEEDS = {
    "matplotlib": "Session.plot() in 02-cost-and-budgets",
    "pillow": "images in 05-images-and-claude",
    "pydantic": "schema= with a pydantic model in 04-bulk-work",
}


def notebooks() -> list[nbformat.NotebookNode]:
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))
    assert len(paths) >= 3, paths
    return [nbformat.read(path, as_version=4) for path in paths]


def code_sources() -> str:
    return "\n".join(
        cell.source for nb in notebooks() for cell in nb.cells if cell.cell_type == "code"
    )


def all_text() -> str:
    """Every cell's source and every text output of every notebook."""
    parts = []
    for nb in notebooks():
        for cell in nb.cells:
            parts.append(cell.source)
            for out in cell.get("outputs", []):
                parts.append(out.get("text", ""))
                parts.extend(v for v in out.get("data", {}).values() if isinstance(v, str))
    return "\n".join(parts)


def clean_env() -> dict[str, str]:
    """The environment without API keys or holynb settings: notebooks use the local server."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("HOLYNB_", "HOLYSHEEP_"))}


# -- nbval really compares ---------------------------------------------------------------------


def test_nbval_fails_when_a_stored_output_is_wrong(tmp_path: Path) -> None:
    """Two copies of the start of 01-quickstart (up to its first %%llm cell) run under nbval:
    the untouched one passes; in the other, one stored token count is off by one, and nbval
    fails on that cell and that cell only."""
    nb = nbformat.read(NOTEBOOKS / "01-quickstart.ipynb", as_version=4)
    first_llm = next(
        i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.startswith("%%llm")
    )
    nb.cells = nb.cells[: first_llm + 1]
    nbformat.write(nb, tmp_path / "good.ipynb")

    shown = next(o for o in nb.cells[first_llm].outputs if "text/plain" in o.get("data", {}))
    plain = shown.data["text/plain"]
    figures = re.search(r"(\d+) completion tokens", plain)
    assert figures, plain
    wrong = f"{int(figures.group(1)) + 1} completion tokens"
    shown.data["text/plain"] = plain.replace(figures.group(0), wrong)
    assert wrong in shown.data["text/plain"]
    nbformat.write(nb, tmp_path / "bad.ipynb")

    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not the repository's addopts
    result = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-c", str(tmp_path / "pytest.ini"),
            "--rootdir", str(tmp_path), "-p", "no:cacheprovider", "-q", "-rf",
            "--nbval", "--nbval-current-env", "--nbval-sanitize-with", str(SANITIZE),
            "good.ipynb", "bad.ipynb",
        ],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    report = result.stdout + result.stderr
    assert result.returncode == 1, report
    failed = re.findall(r"^FAILED (\S+ \d+)", report, re.MULTILINE)
    code_cells = sum(1 for c in nb.cells if c.cell_type == "code")
    assert failed == [f"bad.ipynb::Cell {code_cells - 1}"], report
    assert "Cell outputs differ" in report and "mismatch 'text/plain'" in report, report
    assert f"1 failed, {2 * code_cells - 1} passed" in report, report


# -- every public feature appears in a notebook ------------------------------------------------


def is_error_class(name: str) -> bool:
    value = getattr(holynb, name)
    return isinstance(value, type) and issubclass(value, BaseException)


def test_every_public_name_is_used_in_a_notebook() -> None:
    source = code_sources()
    missing = [
        name
        for name in holynb.__all__
        if not is_error_class(name)
        and name not in NOT_IN_NOTEBOOKS
        and not re.search(rf"\b{re.escape(name)}\b", source)
    ]
    assert not missing, (
        f"not used in any notebook's code (or listed in NOT_IN_NOTEBOOKS): {missing}"
    )
    stale = [name for name in NOT_IN_NOTEBOOKS if name not in holynb.__all__]
    assert not stale, f"NOT_IN_NOTEBOOKS names what holynb no longer exports: {stale}"


def test_every_error_class_is_named_in_a_notebook() -> None:
    text = all_text()
    errors = [name for name in holynb.__all__ if is_error_class(name)]
    assert len(errors) > 10, errors
    missing = [name for name in errors if not re.search(rf"\b{name}\b", text)]
    assert not missing, f"error classes no notebook names: {missing}"


def test_every_magic_option_and_subcommand_appears_in_a_notebook() -> None:
    source, text = code_sources(), all_text()
    for magic, prefix in ((LLMMagics.llm, "%%?llm"), (LLMMagics.interpret, "%%interpret")):
        for action in magic.parser._actions:
            if not action.option_strings:
                continue
            used = any(
                re.search(rf"^{prefix}\b.*\s{re.escape(opt)}(\s|$)", source, re.MULTILINE)
                for opt in action.option_strings
            )
            named = any(f"`{opt}`" in text or f"{opt} " in text for opt in action.option_strings)
            long = action.option_strings[-1]
            if long in OPTIONS_NOT_RUN:
                assert named, f"{long} is never mentioned in a notebook"
            else:
                assert used, f"no notebook runs {prefix.replace('?', '')} with {long}"
    for command in ("config", "models", "cost", "history"):
        assert re.search(rf"^%llm {command}\b", source, re.MULTILINE), f"%llm {command}"
    prompts = [
        cell.source.partition("%llm")[2]
        for nb in notebooks()
        for cell in nb.cells
        if cell.cell_type == "code" and re.search(r"^%%?llm", cell.source, re.MULTILINE)
    ]
    assert any(re.search(r"\n.*\{[A-Za-z_]\w*\}", p) for p in prompts), "no {name} in a prompt"
    assert any(re.search(r"\bErr\b", p) for p in prompts), "no Err in a prompt"


def test_each_notebook_starts_by_choosing_the_backend() -> None:
    for nb in notebooks():
        first = next(c for c in nb.cells if c.cell_type == "code")
        assert "auto_session(" in first.source and "print(backend)" in first.source
        shown = "".join(o.get("text", "") for o in first.outputs)
        assert "No API key found: using holynb's local server" in shown


def test_cells_show_no_test_markers_and_ignored_outputs_say_why() -> None:
    """nbval's markers live in cell tags (``nbval-ignore-output``...), not in what readers see;
    tools/refresh_notebooks.py moves ``# NBVAL_...`` comments there, with the reason."""
    for nb in notebooks():
        for cell in nb.cells:
            assert not re.search(r"NBVAL_|PYTEST_VALIDATE_", cell.source), cell.source
        ignored = [c for c in nb.cells if "nbval-ignore-output" in c.metadata.get("tags", [])]
        assert len(ignored) <= 2, [c.source for c in ignored]
        for cell in ignored:
            assert cell.metadata.get("nbval_reason"), f"no reason given:\n{cell.source}"


def test_refresh_moves_nbval_comments_into_tags() -> None:
    sys.path.insert(0, str(REPO / "tools"))
    try:
        from refresh_notebooks import markers_to_tags
    finally:
        sys.path.remove(str(REPO / "tools"))
    cell = nbformat.v4.new_code_cell(
        "# NBVAL_IGNORE_OUTPUT\n# (timestamps differ between\n# runs)\n%llm history\n# NBVAL_SKIP"
    )
    markers_to_tags(cell)
    assert cell.source == "%llm history"
    assert cell.metadata["tags"] == ["nbval-ignore-output", "nbval-skip"]
    assert cell.metadata["nbval_reason"] == "timestamps differ between runs"


# -- binder/ installs what the notebooks need --------------------------------------------------

_SELF = re.compile(r"^(?:-e\s+|--editable[ =]\s*)?\.(?:\[(?P<extras>[^\]]*)\])?$")


def binder_requirements() -> tuple[list[str] | None, list[Requirement]]:
    """The extras of the line that installs this repository (None: no such line), and the
    other requirements of binder/requirements.txt."""
    extras: list[str] | None = None
    others: list[Requirement] = []
    for raw in (BINDER / "requirements.txt").read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        found = _SELF.match(line)
        if found:
            extras = [e.strip() for e in (found["extras"] or "").split(",") if e.strip()]
        else:
            others.append(Requirement(line))  # raises on anything pip would not read
    return extras, others


def test_binder_installs_this_package_and_what_the_notebooks_need() -> None:
    extras, others = binder_requirements()
    assert extras is not None, "binder/requirements.txt must install the repository (. or -e .)"
    optional = PYPROJECT["project"].get("optional-dependencies", {})
    assert set(extras) <= set(optional), f"unknown extras {extras}"

    runtime = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    provided = {canonicalize_name(r.name): r for r in runtime}
    for extra in extras:
        provided.update({canonicalize_name(r.name): r for r in map(Requirement, optional[extra])})
    for req in others:
        name = canonicalize_name(req.name)
        pinned = [s.version for s in req.specifier if s.operator == "=="]
        if name in provided and pinned:  # a pin must not contradict pyproject.toml
            assert provided[name].specifier.contains(pinned[0], prereleases=True), req
        provided[name] = req

    missing = {pkg: why for pkg, why in NOTEBOOK_NEEDS.items() if pkg not in provided}
    assert not missing, f"binder/requirements.txt lacks what the notebooks need: {missing}"
    assert "ipywidgets" in provided  # the streaming widget in JupyterLab


def test_binder_covers_every_module_the_notebooks_import() -> None:
    extras, others = binder_requirements()
    optional = PYPROJECT["project"].get("optional-dependencies", {})
    names = {canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["dependencies"]}
    for extra in extras or []:
        names |= {canonicalize_name(Requirement(r).name) for r in optional[extra]}
    names |= {canonicalize_name(r.name) for r in others}
    names.add("holynb")
    distributions = importlib.metadata.packages_distributions()
    for module in sorted(imported_modules()):
        if module in sys.stdlib_module_names:
            continue
        dists = {canonicalize_name(d) for d in distributions.get(module, [module])}
        assert dists & names, f"notebooks import {module!r}, which binder/ does not install"


def imported_modules() -> set[str]:
    modules = set()
    for nb in notebooks():
        for cell in nb.cells:
            if cell.cell_type != "code" or cell.source.startswith("%%"):
                continue
            lines = [line for line in cell.source.splitlines() if not line.startswith("%")]
            body = "".join(f"\n {line}" for line in [*lines, "pass"])
            tree = ast.parse("async def _cell():" + body)  # top-level await is allowed
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    modules.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    modules.add(node.module.split(".")[0])
    assert "holynb" in modules
    return modules


def test_binder_python_satisfies_requires_python() -> None:
    runtime = (BINDER / "runtime.txt").read_text().strip()
    assert runtime.startswith("python-"), runtime
    version = runtime.removeprefix("python-")
    assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(version + ".0"), runtime


def test_binder_scripts_are_executable() -> None:
    for name in ("postBuild", "start"):  # the scripts repo2docker runs, when present
        script = BINDER / name
        assert not script.exists() or os.access(script, os.X_OK), f"chmod +x binder/{name}"


def _run_all_as_jupyterlab(path: Path) -> nbformat.NotebookNode:
    """Run All on ``path`` in a fresh kernel that knows its notebook (``JPY_SESSION_NAME``, as
    jupyter-server sets it), applying what the kernel asks the frontend to do with the cells
    (``set_next_input``: a new cell below) as JupyterLab does."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    inserts: list[tuple[int, str]] = []

    def executed(cell: object, cell_index: int, execute_reply: dict) -> None:
        for payload in execute_reply.get("content", {}).get("payload", []):
            if payload.get("source") == "set_next_input" and not payload.get("replace"):
                inserts.append((cell_index, payload["text"]))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOLYNB_", "HOLYSHEEP_"))}
    env["JPY_SESSION_NAME"] = str(path)
    client = NotebookClient(
        nb, timeout=120, kernel_name="python3", on_cell_executed=executed,
        resources={"metadata": {"path": str(path.parent)}},
    )  # fmt: skip
    from jupyter_client.manager import KernelManager

    client.km = KernelManager(kernel_name="python3")
    client.execute(env=env)
    for index, text in reversed(inserts):
        nb.cells.insert(index + 1, nbformat.v4.new_code_cell(text))
    return nb


def test_run_all_on_01_leaves_its_cells_as_they_are() -> None:
    path = NOTEBOOKS / "01-quickstart.ipynb"
    stored = [(c.cell_type, c.source) for c in nbformat.read(path, as_version=4).cells]
    after = [(c.cell_type, c.source) for c in _run_all_as_jupyterlab(path).cells]
    assert after == stored


def test_01_introduction_links_the_whole_series() -> None:
    intro = nbformat.read(NOTEBOOKS / "01-quickstart.ipynb", as_version=4).cells[0].source
    assert "will get their own" not in intro
    for name in ("02-cost-and-budgets", "03-code-interpreter", "04-bulk-work",
                 "05-images-and-claude"):  # fmt: skip
        assert f"({name}.ipynb)" in intro
