"""The HTTP stack's transport: holynb's own aiohttp sessions, and no unused SSL set-up."""

from __future__ import annotations

from httpx_aiohttp.httpx2 import AiohttpTransport

from holynb._transport import _Transport
from tests.helpers import run_without_network


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
from holynb._transport import open_http_client

async def main():
    for url in ("http://127.0.0.1:9/v1", "https://127.0.0.1:9/v1"):
        client = open_http_client(url, {}, 4)
        await client.aclose()

asyncio.run(main())
loaded = {"httpcore2", "trio", "anyio"} & set(sys.modules)
assert not loaded, loaded
"""
    )
