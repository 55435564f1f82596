"""The local server against hostile requests, over raw HTTP (http.client, not holynb's client).

A web page can POST cross-origin to 127.0.0.1 without a CORS preflight (``Content-Type:
text/plain``) or rebind its domain to 127.0.0.1 (``Host: attacker.example``); another user of the
machine can reach the port. The server must refuse all of these before any code runs.
"""

from __future__ import annotations

import http.client
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import holynb
from holynb import offline
from holynb.server import LocalServer

EVIL = {"Content-Type": "text/plain", "Origin": "https://evil.example"}


def post(
    port: int, path: str, body: Any, headers: dict[str, str], timeout: float = 20.0
) -> tuple[int, dict[str, Any]]:
    """A raw POST; the status and the JSON body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn.request("POST", path, data, headers)
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        conn.close()


def get(port: int, path: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        conn.close()


def bearer(server: LocalServer) -> dict[str, str]:
    assert server.api_key is not None
    return {"Authorization": f"Bearer {server.api_key.get()}"}


def code_writing(target: Path) -> dict[str, Any]:
    """A local/python request whose code writes ``target``."""
    code = f"open({str(target)!r}, 'w').write('pwned')\nprint('wrote')"
    message = {"role": "user", "content": f"```python\n{code}\n```"}
    return {"model": "local/python", "messages": [message]}


CHAT = "/v1/chat/completions"
JSON_HEADERS = {"Content-Type": "application/json"}


# -- the cross-origin request that ran code ----------------------------------------------------


def test_cross_origin_text_plain_post_is_refused_and_runs_no_code(local, tmp_path):
    target = tmp_path / "pwned.txt"
    status, body = post(local.port, CHAT, code_writing(target), EVIL)  # what a web page sends
    assert status in (401, 403) and "error" in body
    # even with the token (say it leaked), a request from a web page is refused
    status, body = post(local.port, CHAT, code_writing(target), {**EVIL, **bearer(local)})
    assert status == 403 and body["error"]["code"] == "origin_not_allowed"
    assert "Origin" in body["error"]["message"]
    assert not target.exists()
    assert local.stats.requests == 0  # refused before the chat handler saw it
    # the control: the same code, sent properly, does write the file
    status, _ = post(local.port, CHAT, code_writing(target), {**JSON_HEADERS, **bearer(local)})
    assert status == 200 and target.read_text() == "pwned"


def test_origin_is_refused_on_every_route(local):
    for path in ("/health", "/v1/models", "/_holynb/stats"):
        status, body = get(local.port, path, {"Origin": "null", **bearer(local)})
        assert status == 403 and body["error"]["code"] == "origin_not_allowed", path


def test_text_plain_post_is_a_415_and_runs_no_code(local, tmp_path):
    target = tmp_path / "pwned.txt"
    headers = {"Content-Type": "text/plain", **bearer(local)}
    status, body = post(local.port, CHAT, code_writing(target), headers)
    assert status == 415 and body["error"]["code"] == "unsupported_media_type"
    assert "application/json" in body["error"]["message"]
    for form in ("application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        status, _ = post(
            local.port, CHAT, code_writing(target), {**bearer(local), "Content-Type": form}
        )
        assert status == 415, form
    status, _ = post(local.port, "/_holynb/faults", ["500"], headers)
    assert status == 415 and len(local.faults) == 0
    assert not target.exists()


def test_json_with_charset_is_accepted_and_get_routes_ignore_content_type(local):
    headers = {"Content-Type": "application/json; charset=utf-8", **bearer(local)}
    body = {"model": "local/echo", "messages": [{"role": "user", "content": "hi"}]}
    assert post(local.port, CHAT, body, headers)[0] == 200
    assert get(local.port, "/v1/models", {"Content-Type": "text/plain", **bearer(local)})[0] == 200


# -- DNS rebinding -----------------------------------------------------------------------------


def test_host_that_is_not_loopback_is_refused(local, tmp_path):
    target = tmp_path / "pwned.txt"
    headers = {"Host": "attacker.example", **JSON_HEADERS, **bearer(local)}
    status, body = post(local.port, CHAT, code_writing(target), headers)
    assert status == 403 and body["error"]["code"] == "host_not_allowed"
    assert "attacker.example" in body["error"]["message"]
    for host in ("attacker.example:8765", "127.0.0.1.attacker.example", "10.0.0.1"):
        assert get(local.port, "/health", {"Host": host})[0] == 403, host
    assert not target.exists()


def test_loopback_host_names_are_accepted(local):
    for host in ("localhost", f"localhost:{local.port}", "127.0.0.1", "127.1.2.3:80", "[::1]:9"):
        assert get(local.port, "/v1/models", {"Host": host, **bearer(local)})[0] == 200, host


# -- the token ---------------------------------------------------------------------------------


def test_no_token_or_a_wrong_one_is_a_401(local, tmp_path):
    target = tmp_path / "pwned.txt"
    status, body = post(local.port, CHAT, code_writing(target), JSON_HEADERS)
    assert status == 401 and body["error"]["code"] == "missing_api_key"
    wrong = {**JSON_HEADERS, "Authorization": "Bearer sk-guess"}
    status, body = post(local.port, CHAT, code_writing(target), wrong)
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert get(local.port, "/v1/models", {})[0] == 401
    assert get(local.port, "/_holynb/stats", {})[0] == 401
    assert not target.exists()
    assert local.api_key is not None
    token = local.api_key.get()
    assert (
        post(local.port, CHAT, code_writing(target), {**JSON_HEADERS, "x-api-key": token})[0] == 200
    )


def test_each_server_makes_its_own_token_and_never_shows_it():
    with LocalServer() as a, LocalServer() as b:
        assert a.api_key is not None and b.api_key is not None
        assert a.api_key.get() != b.api_key.get() and len(a.api_key.get()) >= 32
        assert a.api_key.get() not in repr(a) + repr(a.api_key) + str(a.api_key)


def test_sessions_of_this_process_know_the_token(local):
    s = holynb.Session(model="local/echo", base_url=local.base_url)
    assert s.chat("hello").text.startswith("You said: hello")
    assert s.settings.api_key == local.api_key and s.uses_offline_server and s.is_local
    token = local.api_key.get()
    assert token not in repr(s) + repr(s.settings)
    localhost = local.base_url.replace("127.0.0.1", "localhost")
    assert holynb.Session(base_url=localhost).settings.api_key == local.api_key


def test_the_token_beats_a_key_in_the_environment(local, monkeypatch):
    monkeypatch.setenv("HOLYNB_API_KEY", "sk-hs-real-key-for-the-real-api-000")
    s = holynb.Session(model="local/echo", base_url=local.base_url)
    assert s.settings.api_key == local.api_key  # the real key is not sent to the local server
    other = holynb.Session(base_url="http://127.0.0.1:9/v1")
    assert other.settings.api_key.get() == "sk-hs-real-key-for-the-real-api-000"
    assert other.is_local and not other.uses_offline_server


def test_an_explicit_key_is_used_as_given(local):
    s = holynb.Session(model="local/echo", base_url=local.base_url, api_key="sk-wrong-0000000000")
    with pytest.raises(holynb.AuthenticationError):
        s.chat("hello")


def test_a_stopped_server_is_forgotten():
    with LocalServer() as srv:
        url = srv.base_url
        assert holynb.Session(base_url=url).uses_offline_server
    s = holynb.Session(base_url=url)
    assert not s.uses_offline_server and s.settings.api_key is None


def test_auth_false_needs_no_key():
    with LocalServer(auth=False) as srv:
        assert srv.api_key is None
        body = {"model": "local/echo", "messages": [{"role": "user", "content": "hi"}]}
        assert post(srv.port, CHAT, body, JSON_HEADERS)[0] == 200


# -- code-running models are off by default ----------------------------------------------------


def test_python_model_is_disabled_by_default(tmp_path):
    target = tmp_path / "pwned.txt"
    with LocalServer() as srv:
        for model in ("local/python", "local/broken"):
            request = {**code_writing(target), "model": model}
            status, body = post(srv.port, CHAT, request, {**JSON_HEADERS, **bearer(srv)})
            assert status == 403 and body["error"]["code"] == "model_disabled", model
            assert "--enable-python" in body["error"]["message"]
            assert "python=True" in body["error"]["message"]
        assert not target.exists()
        srv.python = True  # turned on while running
        status, _ = post(srv.port, CHAT, code_writing(target), {**JSON_HEADERS, **bearer(srv)})
        assert status == 200 and target.exists()


def test_models_registered_as_running_code_are_off_too():
    with LocalServer() as srv:
        srv.register_model("local/exec", lambda messages, params: "ran", runs_code=True)
        s = holynb.Session(model="local/exec", base_url=srv.base_url, max_retries=0)
        with pytest.raises(holynb.APIError, match="enable-python"):
            s.chat("print(1)")
        with LocalServer(python=True) as on:
            on.register_model("local/exec", lambda messages, params: "ran", runs_code=True)
            assert holynb.Session(model="local/exec", base_url=on.base_url).chat("x").text == "ran"


def test_local_session_python_true_turns_it_on_for_the_shared_server():
    s = holynb.local_session(model="local/python", python=True)
    assert offline.local_server().python and s.uses_offline_server
    r = holynb.CodeInterpreter(s).run("print(6 * 7)")
    assert r.success and r.output == "42\n"


# -- holynb serve ------------------------------------------------------------------------------


def _serve(*args: str) -> tuple[subprocess.Popen[str], list[str]]:
    """``holynb serve --port 0 ARGS`` and its banner (read within 30 s)."""
    cmd = [sys.executable, "-m", "holynb", "serve", "--port", "0", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: [lines.put(x) for x in stdout], daemon=True).start()
    banner: list[str] = []
    deadline = time.monotonic() + 30
    while not any("HOLYNB_MODEL" in x for x in banner):
        try:
            banner.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
        except queue.Empty:
            proc.kill()
            raise AssertionError(f"holynb serve printed no banner: {banner}") from None
    return proc, banner


@pytest.fixture
def serve() -> Iterator[Any]:
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> tuple[int, dict[str, str], str]:
        proc, banner = _serve(*args)
        procs.append(proc)
        exports = dict(
            line.strip()[len("export ") :].split("=", 1)
            for line in banner
            if line.strip().startswith("export ")
        )
        port = int(exports["HOLYNB_BASE_URL"].rsplit(":", 1)[1].split("/")[0])
        return port, exports, "".join(banner)

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


def test_holynb_serve_requires_the_token_it_prints(serve):
    port, exports, banner = serve()
    assert exports["HOLYNB_MODEL"] == "local/echo"
    token = exports["HOLYNB_API_KEY"]
    assert len(token) >= 32 and "--enable-python" in banner
    body = {"model": "local/echo", "messages": [{"role": "user", "content": "hi"}]}
    assert post(port, CHAT, body, JSON_HEADERS)[0] == 401
    assert post(port, CHAT, body, {**JSON_HEADERS, "Authorization": "Bearer nope"})[0] == 401
    auth = {**JSON_HEADERS, "Authorization": f"Bearer {token}"}
    assert post(port, CHAT, body, auth)[0] == 200
    status, reply = post(port, CHAT, {**body, "model": "local/python"}, auth)
    assert status == 403 and reply["error"]["code"] == "model_disabled"
    assert post(port, CHAT, body, {**auth, **EVIL})[0] == 403


def test_holynb_serve_api_key_no_auth_and_enable_python(serve):
    port, exports, banner = serve("--api-key", "sk-fixed-key-0123456789")
    assert "sk-fixed-key" not in banner  # a key the user gave is not echoed
    body = {"model": "local/echo", "messages": [{"role": "user", "content": "hi"}]}
    fixed = {**JSON_HEADERS, "Authorization": "Bearer sk-fixed-key-0123456789"}
    assert post(port, CHAT, body, fixed)[0] == 200
    assert post(port, CHAT, body, JSON_HEADERS)[0] == 401
    port, exports, banner = serve("--no-auth", "--enable-python")
    assert "HOLYNB_API_KEY" not in exports and "no key" in banner
    python = {**body, "model": "local/python"}
    python["messages"] = [{"role": "user", "content": "```python\nprint(2 + 2)\n```"}]
    status, reply = post(port, CHAT, python, JSON_HEADERS)
    assert status == 200 and "4" in reply["choices"][0]["message"]["content"]
    assert post(port, CHAT, body, {**JSON_HEADERS, "Host": "attacker.example"})[0] == 403
