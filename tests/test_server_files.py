"""The local server's memory for /v1/files and /v1/batches, over real HTTP: a total cap on what
it holds (a clear 413), a batch's input freed when the batch ends, output files kept (and
counted) until deleted, and the line limit checked before any line is parsed."""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from holynb.server import LocalServer

FINAL = {"completed", "failed", "expired", "cancelled"}


@pytest.fixture(scope="module")
def own() -> Iterator[LocalServer]:
    """A server of this module's own: the caps below must not meet other tests' files."""
    srv = LocalServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def srv(own: LocalServer) -> Iterator[LocalServer]:
    """``own`` with no files, default batch settings and default caps, before and after."""
    _clean(own)
    yield own
    _clean(own)


def _clean(srv: LocalServer) -> None:
    from holynb.server import files
    from holynb.server.batches import BatchSettings

    store = srv.batches
    for _ in range(500):  # let batches still running end (they write their files at the end)
        if all(b.status in FINAL for b in store.all()):
            break
        time.sleep(0.01)
    store.settings = BatchSettings()
    store.files.max_file_bytes = files.MAX_FILE_BYTES
    store.files.max_total_bytes = getattr(files, "MAX_TOTAL_BYTES", None)
    for f in store.files.all():
        store.files.delete(f.id)


@pytest.fixture
def http(srv: LocalServer) -> Iterator[httpx.Client]:
    auth = {"Authorization": f"Bearer {srv.api_key.get()}"}
    with httpx.Client(base_url=srv.base_url, headers=auth, timeout=30) as client:
        yield client


def line(i: int, **body: Any) -> bytes:
    item = {
        "custom_id": f"req-{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "local/echo", "messages": [{"role": "user", "content": f"hi {i}"}]},
    }
    item["body"].update(body)
    return orjson.dumps(item) + b"\n"


def upload(http: httpx.Client, content: bytes) -> httpx.Response:
    return http.post("/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"})


def run_batch(http: httpx.Client, content: bytes, *, cancel_after_s: float | None = None) -> dict:
    file_id = upload(http, content).raise_for_status().json()["id"]
    request = {"input_file_id": file_id, "endpoint": "/v1/chat/completions"}
    batch = http.post("/batches", json={**request, "completion_window": "24h"}).json()
    if cancel_after_s is not None:
        time.sleep(cancel_after_s)
        http.post(f"/batches/{batch['id']}/cancel").raise_for_status()
    for _ in range(1000):
        batch = http.get(f"/batches/{batch['id']}").json()
        if batch["status"] in FINAL:
            return batch
        time.sleep(0.01)
    raise AssertionError(f"batch {batch['id']} never ended")


# -- the total cap -------------------------------------------------------------------------------


def test_an_upload_past_the_total_cap_is_a_413_that_says_what_to_do(
    srv: LocalServer, http: httpx.Client
) -> None:
    srv.batches.files.max_total_bytes = 3_000
    first = upload(http, b"x" * 2_000)
    assert first.status_code == 200
    refused = upload(http, b"y" * 2_000)
    assert refused.status_code == 413
    error = refused.json()["error"]
    assert error["code"] == "storage_limit_exceeded"
    message = error["message"]
    assert "3,000 bytes" in message and "2,000 bytes" in message  # the cap and what is held
    assert "DELETE /v1/files/" in message and "max_total_bytes" in message
    http.delete(f"/files/{first.json()['id']}").raise_for_status()
    assert upload(http, b"y" * 2_000).status_code == 200  # room again once deleted


def test_a_refused_upload_holds_nothing(srv: LocalServer, http: httpx.Client) -> None:
    srv.batches.files.max_total_bytes = 3_000
    assert upload(http, b"x" * 5_000).status_code == 413
    assert srv.batches.files.used_bytes == 0
    assert upload(http, b"x" * 3_000).status_code == 200
    assert srv.batches.files.used_bytes == 3_000


def test_an_upload_refused_midway_names_what_the_others_hold(
    srv: LocalServer, http: httpx.Client
) -> None:
    srv.batches.files.max_total_bytes = 700_000
    assert upload(http, b"x" * 200_000).status_code == 200
    refused = upload(http, b"y" * 1_000_000)  # read in 256 KiB chunks: refused at the third
    assert refused.status_code == 413
    assert "holds 200,000 bytes in 1 file(s)" in refused.json()["error"]["message"]
    assert srv.batches.files.used_bytes == 200_000


def test_concurrent_uploads_never_pass_the_cap_together(srv: LocalServer) -> None:
    srv.batches.files.max_total_bytes = 350_000
    statuses: list[int] = []
    auth = {"Authorization": f"Bearer {srv.api_key.get()}"}

    def one() -> None:
        with httpx.Client(base_url=srv.base_url, headers=auth, timeout=30) as client:
            statuses.append(upload(client, b"z" * 100_000).status_code)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] * 3 + [413] * 3
    assert srv.batches.files.used_bytes == 300_000


# -- files freed ---------------------------------------------------------------------------------


@pytest.mark.parametrize("end", ["completed", "failed", "cancelled", "expired"])
def test_a_batch_frees_its_input_when_it_ends(
    srv: LocalServer, http: httpx.Client, end: str
) -> None:
    settings = srv.batches.settings
    content = b"".join(line(i) for i in range(20))
    if end == "failed":
        content += b"{not json\n"
    if end == "expired":
        settings.expire_after = 5
    if end == "cancelled":
        settings.seconds_per_request = 0.05
    batch = run_batch(http, content, cancel_after_s=0.2 if end == "cancelled" else None)
    assert batch["status"] == end
    input_id = batch["input_file_id"]
    gone = http.get(f"/files/{input_id}/content")
    assert gone.status_code == 404
    assert "freed" in gone.json()["error"]["message"] and batch["id"] in gone.text
    kept = [batch[k] for k in ("output_file_id", "error_file_id") if batch[k]]
    assert (end == "failed") == (not kept)
    held = sum(http.get(f"/files/{f}").json()["bytes"] for f in kept)
    assert srv.batches.files.used_bytes == held  # only what the batch wrote
    for f in kept:
        assert http.get(f"/files/{f}/content").content  # outputs stay until deleted
    info = http.get(f"/files/{input_id}").json()  # still known, and deletable as on OpenAI
    assert info["bytes"] == len(content)
    assert http.delete(f"/files/{input_id}").json()["deleted"] is True
    assert http.get(f"/files/{input_id}").status_code == 404


def test_output_files_count_against_the_cap_until_deleted(
    srv: LocalServer, http: httpx.Client
) -> None:
    batch = run_batch(http, b"".join(line(i) for i in range(30)))
    output = batch["output_file_id"]
    size = http.get(f"/files/{output}").json()["bytes"]
    srv.batches.files.max_total_bytes = size + 1_000
    assert upload(http, b"x" * 2_000).status_code == 413
    http.delete(f"/files/{output}").raise_for_status()
    assert srv.batches.files.used_bytes == 0
    assert upload(http, b"x" * 2_000).status_code == 200


def test_a_finished_batch_gives_its_memory_back(srv: LocalServer, http: httpx.Client) -> None:
    # 200 lines of ~20 KB each (4 MB); answers cut to one token, so the output is small.
    filler = "word " * 4_000
    content = b"".join(line(i, max_tokens=1, user=filler) for i in range(200))
    assert len(content) > 4_000_000
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        batch = run_batch(http, content)
        del content
        gc.collect()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert batch["status"] == "completed" and batch["request_counts"]["completed"] == 200
    assert after - before < 1_000_000, f"{after - before:,} bytes still held"
    assert peak - before < 16_000_000, f"peak {peak - before:,} bytes"


# -- the line limit --------------------------------------------------------------------------------


def test_a_file_one_line_over_the_limit_is_refused_before_any_line_is_parsed(
    srv: LocalServer, http: httpx.Client
) -> None:
    srv.batches.settings.max_requests = 3
    batch = run_batch(http, b"{not json\n" * 4)
    assert batch["status"] == "failed"
    errors = batch["errors"]["data"]
    assert [e["code"] for e in errors] == ["too_many_requests"]  # no line was read as JSON
    assert "4 requests" in errors[0]["message"] and "at most 3" in errors[0]["message"]


def test_a_file_at_the_limit_is_read_line_by_line(srv: LocalServer, http: httpx.Client) -> None:
    srv.batches.settings.max_requests = 3
    blank_tail = b"\n \n"  # blank lines at the end are not requests
    batch = run_batch(http, b"".join(line(i) for i in range(3)) + blank_tail)
    assert batch["status"] == "completed" and batch["request_counts"]["total"] == 3
    batch = run_batch(http, b"{not json\n" * 3)
    assert [e["code"] for e in batch["errors"]["data"]] == ["invalid_json_line"] * 3
