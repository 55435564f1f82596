"""The local server's /v1/files and /v1/batches, driven by the official openai SDK unchanged."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import orjson
import pytest

from holynb.server import LocalServer
from holynb.server.batches import BatchSettings

FINAL = {"completed", "failed", "expired", "cancelled"}


def line(i: int, model: str = "local/echo", **changes: object) -> dict:
    item = {
        "custom_id": f"req-{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": f"hi {i}"}]},
    }
    item.update(changes)
    return item


def jsonl(items: list) -> bytes:
    return b"".join((x if isinstance(x, bytes) else orjson.dumps(x)) + b"\n" for x in items)


@pytest.fixture
def batch_server(local: LocalServer) -> Iterator[LocalServer]:
    """The local server with default batch settings restored afterwards."""
    local.batches.settings = BatchSettings()
    yield local
    local.batches.settings = BatchSettings()


@pytest.fixture
def client(batch_server: LocalServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=batch_server.base_url, api_key=batch_server.api_key.get(), max_retries=0
    ) as c:
        yield c


def submit(client: openai.OpenAI, items: list, **kwargs: object):
    uploaded = client.files.create(file=("in.jsonl", jsonl(items)), purpose="batch")
    return client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        **kwargs,
    )


def wait_final(client: openai.OpenAI, batch_id: str, seen: list[str] | None = None):
    for _ in range(500):
        batch = client.batches.retrieve(batch_id)
        if seen is not None and (not seen or seen[-1] != batch.status):
            seen.append(batch.status)
        if batch.status in FINAL:
            return batch
        time.sleep(0.01)
    raise AssertionError(f"batch {batch_id} never finished")


def lines_of(client: openai.OpenAI, file_id: str) -> list[dict]:
    return [orjson.loads(x) for x in client.files.content(file_id).content.splitlines()]


def test_sdk_round_trip_files_and_batches(client):
    batch = submit(client, [line(i) for i in range(5)], metadata={"purpose": "test"})
    assert batch.status == "validating" and batch.metadata == {"purpose": "test"}
    done = wait_final(client, batch.id)
    assert done.status == "completed"
    assert (done.request_counts.total, done.request_counts.completed) == (5, 5)
    assert done.error_file_id is None
    out = lines_of(client, done.output_file_id)
    assert sorted(x["custom_id"] for x in out) == [f"req-{i}" for i in range(5)]
    answer = out[0]["response"]
    assert answer["status_code"] == 200
    assert answer["body"]["choices"][0]["message"]["content"].startswith("You said: hi")
    info = client.files.retrieve(done.output_file_id)
    assert info.purpose == "batch_output" and info.bytes > 0
    assert client.files.delete(batch.input_file_id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(batch.input_file_id)


def test_a_batch_passes_through_every_status_in_order(client, batch_server):
    batch_server.batches.settings.phase_seconds = 0.2
    batch_server.batches.settings.seconds_per_request = 0.05
    seen: list[str] = []
    wait_final(client, submit(client, [line(i) for i in range(4)]).id, seen)
    assert seen == ["validating", "in_progress", "finalizing", "completed"]


def test_cancel_goes_through_cancelling_and_reports_lines_not_run(client, batch_server):
    batch_server.batches.settings.seconds_per_request = 0.02
    batch_server.batches.settings.phase_seconds = 0.05
    batch = submit(client, [line(i) for i in range(40)])
    time.sleep(0.15)
    assert client.batches.cancel(batch.id).status == "cancelling"
    done = wait_final(client, batch.id)
    assert done.status == "cancelled"
    assert done.cancelling_at and done.cancelled_at
    not_run = lines_of(client, done.error_file_id)
    assert not_run and all(x["error"]["code"] == "batch_cancelled" for x in not_run)
    assert done.request_counts.completed + len(not_run) == 40
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(submit_and_finish(client).id)


def submit_and_finish(client: openai.OpenAI):
    return wait_final(client, submit(client, [line(0)]).id)


def test_list_pages_newest_first(client):
    ids = [submit_and_finish(client).id for _ in range(3)]
    first = client.batches.list(limit=2)
    assert [b.id for b in first.data] == ids[::-1][:2]
    assert first.has_more and first.first_id == ids[2] and first.last_id == ids[1]
    rest = client.batches.list(limit=2, after=first.last_id)
    assert rest.data[0].id == ids[0]
    assert [b.id for b in client.batches.list(limit=1)][:3] == ids[::-1]  # auto-paging


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"endpoint": "/v1/embeddings"}, "endpoint"),
        ({"completion_window": "1h"}, "completion_window"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
    ],
)
def test_create_is_checked_like_openai(client, change, message):
    uploaded = client.files.create(file=("in.jsonl", jsonl([line(0)])), purpose="batch")
    request = {
        "input_file_id": uploaded.id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        **change,
    }
    with pytest.raises(openai.BadRequestError, match=message):
        client.batches.create(**request)


def test_create_with_an_unknown_file_is_404(client):
    with pytest.raises(openai.NotFoundError, match="No such File"):
        client.batches.create(
            input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
        )


def test_bad_lines_fail_the_batch_with_one_error_per_line(client):
    items = [
        line(0),
        b"{not json",
        line(0),  # duplicate custom_id
        line(3, method="GET"),
        line(4, url="/v1/embeddings"),
        line(5, model="local/slow"),  # differs from the file's model
    ]
    done = wait_final(client, submit(client, items).id)
    assert done.status == "failed" and done.failed_at
    codes = {(e.line, e.code) for e in done.errors.data}
    assert codes == {
        (2, "invalid_json_line"),
        (3, "duplicate_custom_id"),
        (4, "invalid_method"),
        (5, "invalid_url"),
        (6, "mismatched_model"),
    }


def test_lines_the_model_cannot_answer_become_error_lines(client):
    done = wait_final(client, submit(client, [line(i, model="gpt-nope") for i in range(3)]).id)
    assert done.status == "completed"
    assert (done.request_counts.completed, done.request_counts.failed) == (0, 3)
    assert done.output_file_id is None
    errors = lines_of(client, done.error_file_id)
    assert {x["response"]["status_code"] for x in errors} == {404}
    assert "gpt-nope" in errors[0]["response"]["body"]["error"]["message"]


def test_uploads_are_limited_in_size_and_purpose(client, batch_server):
    with pytest.raises(openai.BadRequestError, match="purpose"):
        client.files.create(file=("in.jsonl", jsonl([line(0)])), purpose="fine-tune")
    batch_server.batches.files.max_file_bytes = 100
    try:
        with pytest.raises(openai.APIStatusError, match="larger than the limit") as info:
            client.files.create(file=("in.jsonl", jsonl([line(0)] * 3)), purpose="batch")
        assert info.value.status_code == 413
    finally:
        batch_server.batches.files.max_file_bytes = 200 * 2**20


def test_upper_case_statuses_on_request(client, batch_server):
    batch_server.batches.settings.uppercase_status = True
    batch = submit(client, [line(0)])
    auth = {"Authorization": f"Bearer {batch_server.api_key.get()}"}
    for _ in range(200):
        status = httpx.get(f"{batch_server.base_url}/batches/{batch.id}", headers=auth).json()[
            "status"
        ]
        if status == "COMPLETED":
            break
        time.sleep(0.01)
    assert status == "COMPLETED"
