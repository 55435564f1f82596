"""Fixtures for real-browser tests: JupyterLab on 127.0.0.1 and Debian's chromium via playwright.

Skipped, with the reason, when /usr/bin/chromium, jupyterlab or playwright is missing
(``apt-get install -y chromium``; ``pip install jupyterlab playwright``; never
``playwright install``: it downloads a browser build).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import without_holynb_settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parents[2]
LAB_START_TIMEOUT_S = 30


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives JupyterLab in a real chromium")


def _missing() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is missing (apt-get install -y chromium)"
    for module, package in (("jupyterlab", "jupyterlab"), ("playwright", "playwright")):
        if importlib.util.find_spec(module) is None:
            return f"{package} is not installed (pip install {package})"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + LAB_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited early:\n{log.read_text()[-3000:]}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(url + "api/status", timeout=1) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"JupyterLab was not ready in {LAB_START_TIMEOUT_S} s:\n{log.read_text()}")


class Lab:
    """A running JupyterLab: its URL and the folder it serves."""

    def __init__(self, url: str, root: Path) -> None:
        self.url = url
        self.root = root

    def notebook_url(self, name: str) -> str:
        """The notebook alone in a fresh workspace (no tabs restored from earlier tests)."""
        workspace = name.rsplit(".", 1)[0]
        return f"{self.url}lab/workspaces/{workspace}/tree/{name}?reset"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """JupyterLab on a free 127.0.0.1 port, no token, serving a fresh folder."""
    reason = _missing()
    if reason:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("lab")
    root = base / "root"
    root.mkdir()
    env = without_holynb_settings(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        JUPYTER_CONFIG_DIR=str(base / "config"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(base / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
    )
    # this checkout's prebuilt JupyterLab extension (holynb-lab), as pip installs it
    extensions = base / "data" / "labextensions"
    extensions.mkdir(parents=True)
    (extensions / "holynb-lab").symlink_to(REPO / "holynb" / "labextension")
    env["JUPYTER_PATH"] = os.pathsep.join(
        filter(None, [str(base / "data"), env.get("JUPYTER_PATH")])
    )
    news = base / "settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    port = _free_port()
    log = base / "lab.log"
    command = [
        sys.executable, "-m", "jupyterlab",
        "--ServerApp.token=", "--ServerApp.password=", "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        "--allow-root", "--no-browser", f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=root,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_ready(url, proc, log)
        yield Lab(url, root)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(base / "runtime", ignore_errors=True)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's chromium, headless, driven by playwright's sync API. Module scope: while the
    sync API is open an event loop runs in the main thread, and later tests need it gone."""
    reason = _missing()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.failed_call = report.failed  # type: ignore[attr-defined]
    return report


@pytest.fixture
def page(chromium: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh page (1280x900) that records JavaScript dialogs (alert, ...) in
    ``page.dialogs``; a failing test leaves a screenshot in /tmp."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.dialogs = dialogs
    # JupyterLab may ask for the kernel while it is still listing kernelspecs (a race in Lab
    # itself, seen once under load): keep the notebook's own, as a reader would
    chooser = page.locator(".jp-Dialog", has_text="Select Kernel")
    page.add_locator_handler(chooser, lambda dialog: dialog.locator(".jp-mod-accept").first.click())
    try:
        yield page
    finally:
        if getattr(request.node, "failed_call", False):
            shot = f"/tmp/holynb_failed_{request.node.name}.png"
            with contextlib.suppress(Exception):
                page.screenshot(path=shot)
                print(f"screenshot of the failure: {shot}")
        context.close()
