"""The HTTP stack's transports: holynb's own aiohttp sessions with no unused SSL set-up, the
first plain request of a fresh process over the standard library (no aiohttp loaded), and one
rule of trust for both."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from typing import Any

import httpcore2
import pytest
import trustme
from httpx_aiohttp.httpx2 import AiohttpTransport

from holynb._aiohttp_pool import _Transport
from holynb._transport import verifying_context
from holynb.server import faults
from tests.helpers import CHILD_ENV, run_without_network


def test_the_transport_sets_what_the_library_sets():
    def make_session():
        raise AssertionError("not called here")

    ours, theirs = _Transport(make_session), AiohttpTransport(client=make_session)
    assert vars(ours).keys() == vars(theirs).keys()
    assert ours.client is make_session
    assert (ours.proxy, ours.retries, ours.uds, ours.local_address) == (None, 0, None, None)


def test_opening_a_client_loads_no_unused_http_stack():
    # the transport's own SSL context would import httpcore2 (trio, anyio) and read the CA bundle
    run_without_network(
        """
import asyncio, sys
import httpx2
from holynb._transport import LoopHTTP

async def main():
    for url in ("http://127.0.0.1:9/v1", "https://127.0.0.1:9/v1"):
        http = LoopHTTP(url, {}, 4, httpx2.Timeout(5.0))
        for stream in (True, False):
            http.client(stream=stream)
        await http.aclose()

asyncio.run(main())
loaded = {"httpcore2", "trio", "anyio"} & set(sys.modules)
assert not loaded, loaded
"""
    )


# -- one rule of trust ---------------------------------------------------------------------------


def _trust(context: ssl.SSLContext) -> tuple[Any, ...]:
    return (
        context.get_ca_certs(),
        context.cert_store_stats(),
        context.verify_mode,
        context.check_hostname,
        context.options,
        context.verify_flags,
        context.minimum_version,
        context.maximum_version,
        context.protocol,
    )


@pytest.mark.parametrize("setting", [None, "SSL_CERT_FILE", "SSL_CERT_DIR"])
def test_holynb_trusts_what_httpx2_trusts(monkeypatch, tmp_path, setting):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    if setting == "SSL_CERT_FILE":
        bundle = tmp_path / "ca.pem"
        trustme.CA().cert_pem.write_to_path(str(bundle))
        monkeypatch.setenv(setting, str(bundle))
    elif setting == "SSL_CERT_DIR":
        monkeypatch.setenv(setting, str(tmp_path))
    ours, httpx2s = verifying_context(), httpcore2.default_ssl_context()
    assert _trust(ours) == _trust(httpx2s)
    assert ours.verify_mode == ssl.CERT_REQUIRED and ours.check_hostname
    if setting == "SSL_CERT_FILE":
        assert ours.cert_store_stats()["x509_ca"] == 1  # that file alone, as httpx2 does


# -- the first plain request of a fresh process ----------------------------------------------------


def _fresh(script: str, base_url: str, key: str, **env: str) -> dict[str, Any]:
    """Run ``script`` (with ``BASE_URL``, ``KEY`` and ``report(**values)``) in a new Python,
    where nothing has loaded aiohttp; what it reported."""
    prelude = textwrap.dedent(
        f"""
        import json, sys
        import holynb
        BASE_URL, KEY = {base_url!r}, {key!r}
        def report(**values):
            print("REPORT " + json.dumps(values))
        def loaded():
            return sorted({{"aiohttp", "httpcore2", "anyio"}} & set(sys.modules))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script)],
        env={**CHILD_ENV, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert lines, done.stdout + done.stderr
    return json.loads(lines[-1].removeprefix("REPORT "))


def test_a_script_asking_once_loads_no_aiohttp_and_later_calls_use_the_pool(local):
    got = _fresh(
        """
        s = holynb.Session(model="local/echo", base_url=BASE_URL, api_key=KEY)
        first = s.chat("first question")
        after_first = loaded()
        second = s.chat("second question")
        streamed = "".join(s.stream("third question"))
        report(first=first.text, second=second.text, streamed=streamed,
               cost=first.cost_usd, after_first=after_first, after_all=loaded(),
               calls=len(s.ledger))
        """,
        local.base_url,
        local.api_key.get(),
    )
    assert "first question" in got["first"]
    assert "second question" in got["second"] and "third question" in got["streamed"]
    assert got["after_first"] == []  # one answer: no aiohttp, no httpcore2, no anyio
    assert "aiohttp" in got["after_all"]
    assert got["cost"] == 0.0 and got["calls"] == 3
    assert local.stats.requests == 3


def test_a_first_stream_goes_over_the_pool(local):
    got = _fresh(
        """
        s = holynb.Session(model="local/echo", base_url=BASE_URL, api_key=KEY)
        text = "".join(s.stream("streamed first"))
        report(text=text, loaded=loaded())
        """,
        local.base_url,
        local.api_key.get(),
    )
    assert "streamed first" in got["text"] and "aiohttp" in got["loaded"]


def test_an_async_caller_opens_the_pool_with_its_first_request(local):
    got = _fresh(
        """
        import asyncio
        s = holynb.Session(model="local/echo", base_url=BASE_URL, api_key=KEY)
        r = asyncio.run(s.achat("awaited first"))
        report(text=r.text, loaded=loaded())
        """,
        local.base_url,
        local.api_key.get(),
    )
    assert "awaited first" in got["text"] and "aiohttp" in got["loaded"]


def test_the_first_request_gets_the_same_typed_errors_and_retries(local):
    local.faults.push(faults.status(401))
    got = _fresh(
        """
        s = holynb.Session(model="local/echo", base_url=BASE_URL, api_key=KEY)
        try:
            s.chat("refused")
        except holynb.AuthenticationError as err:
            report(kind=type(err).__name__, status=err.status, hint=err.hint,
                   shown=str(err), loaded=loaded())
        """,
        local.base_url,
        local.api_key.get(),
    )
    assert got["kind"] == "AuthenticationError" and got["status"] == 401
    assert got["hint"] and local.api_key.get() not in got["shown"]
    assert got["loaded"] == []

    local.reset()
    local.faults.push(faults.status(503, retry_after=0.05))
    got = _fresh(
        """
        s = holynb.Session(model="local/echo", base_url=BASE_URL, api_key=KEY)
        r = s.chat("after a 503")
        report(text=r.text, attempts=r.attempts)
        """,
        local.base_url,
        local.api_key.get(),
    )
    assert "after a 503" in got["text"] and got["attempts"] == 2  # the retry went over the pool


def test_the_first_request_says_when_nothing_listens():
    with contextlib.closing(__import__("socket").socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]  # bound, never listening: connection refused
        got = _fresh(
            """
            s = holynb.Session(model="local/echo", base_url=BASE_URL, api_key="sk-x",
                               max_retries=0)
            try:
                s.chat("hello?")
            except holynb.APIConnectionError as err:
                report(kind=type(err).__name__, message=err.message, loaded=loaded())
            """,
            f"http://127.0.0.1:{closed_port}/v1",
            "sk-x",
        )
    assert got["kind"] == "APIConnectionError" and got["loaded"] == []
    assert f"Could not talk to http://127.0.0.1:{closed_port}/v1" in got["message"]
    assert "refused" in got["message"].lower()


@pytest.mark.parametrize(
    ("timeout", "said"),
    [
        ("holynb.Timeout(read=0.3, total=None)", "within the timeout"),  # httpx2's ReadTimeout
        ("holynb.Timeout(read=30, total=0.3)", "within the total timeout of 0.3 s"),
    ],
)
def test_the_first_request_gives_up_on_time(local, timeout, said):
    local.faults.push(faults.delay(3.0))
    got = _fresh(
        f"""
        import time
        s = holynb.Session(model="local/echo", base_url=BASE_URL, api_key=KEY,
                           timeout={timeout}, max_retries=0)
        started = time.monotonic()
        try:
            s.chat("slow")
        except holynb.APITimeoutError as err:
            report(message=err.message, waited=time.monotonic() - started, loaded=loaded())
        """,
        local.base_url,
        local.api_key.get(),
    )
    assert said in got["message"] and got["waited"] < 2.0 and got["loaded"] == []


@contextlib.contextmanager
def _tls_in_front_of(port: int, certificate: trustme.LeafCert) -> Iterator[int]:
    """A TLS listener on 127.0.0.1 that forwards each connection to ``port``; its port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    certificate.configure_cert(context)
    loop = asyncio.new_event_loop()
    started: list[asyncio.Server] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def serve() -> None:
        started.append(await asyncio.start_server(forward, "127.0.0.1", 0, ssl=context))

    loop.run_until_complete(serve())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield started[0].sockets[0].getsockname()[1]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def test_the_first_request_over_https_trusts_what_the_pool_trusts(local, tmp_path):
    ca = trustme.CA()
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    script = """
        s = holynb.Session(model="local/echo", base_url=BASE_URL, api_key=KEY, max_retries=0)
        try:
            report(text=s.chat("over TLS").text, loaded=loaded())
        except holynb.APIConnectionError as err:
            report(error=err.message, loaded=loaded())
        """
    with _tls_in_front_of(local.port, ca.issue_cert("127.0.0.1")) as port:
        url = f"https://127.0.0.1:{port}/v1"
        trusted = _fresh(script, url, local.api_key.get(), SSL_CERT_FILE=str(bundle))
        untrusted = _fresh(script, url, local.api_key.get())
    assert "over TLS" in trusted["text"] and trusted["loaded"] == []
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted["error"] and untrusted["loaded"] == []
