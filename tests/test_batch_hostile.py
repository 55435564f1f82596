"""The Batch API client against endpoints that misbehave: late or lost answers, hostile ids,
malformed output lines, keys echoed back, and several objects or processes on one job.

Most tests talk to ``Provider``, a small OpenAI-compatible Batch API of this file's own on
127.0.0.1 whose batches complete at once and which a test can make misbehave; the others use
the local server.
"""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pandas as pd
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings, strategies as st

import holynb
from holynb.server import LocalServer
from holynb.server.batches import BatchSettings
from tests.conftest import PLANTED_KEY
from tests.helpers import key_env

KEY = "sk-hostile-test-key-0123456789abcdef"
MODEL = "acme/batch-model"
PRICES = {MODEL: {"input": 2.0, "output": 4.0}, "local/mirror": {"input": 2.0, "output": 4.0}}


def answer_line(item: dict[str, Any]) -> dict[str, Any]:
    """The output line an honest provider writes for one input line."""
    content = item["body"]["messages"][-1]["content"]
    return {
        "id": "batch_req_" + uuid.uuid4().hex[:12],
        "custom_id": item["custom_id"],
        "response": {
            "status_code": 200,
            "request_id": "req_" + uuid.uuid4().hex[:12],
            "body": {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": item["body"]["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": f"answer to {content}"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            },
        },
        "error": None,
    }


class Provider:
    """An OpenAI-compatible ``/v1/files`` + ``/v1/batches`` on 127.0.0.1 whose batches are
    completed as soon as they are created. A test makes it misbehave through its attributes:

    - ``answer(item) -> dict | bytes``: the output line for one input line (bytes: written raw);
      lines whose response is not a 200 go to the error file.
    - ``output(items) -> bytes``: the whole output file instead (no error file then).
    - ``shape(batch)``: change a new batch (status, errors, ids) before it is kept.
    - ``lost``: what happens to the answer of ``POST /batches``: ``"late"`` (created, answered
      after ``late_s``), ``"drop"`` (created, connection closed), ``"502"`` (created, HTTP 502),
      ``"never"`` (connection closed, nothing created).
    - ``hide_new``: new batches are left out of ``GET /batches`` until ``reveal()``.
    - ``on_create_answer`` / ``on_retrieve``: rewrite what those answer (hostile ids).
    """

    def __init__(self, key: str = KEY) -> None:
        self.key = key
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}  # in creation order
        self.creates: list[list[dict[str, Any]]] = []  # the input lines of every batch created
        self.paths: list[str] = []
        self.hidden: set[str] = set()
        self.answer: Callable[[dict[str, Any]], dict[str, Any] | bytes] = answer_line
        self.output: Callable[[list[dict[str, Any]]], bytes] | None = None
        self.shape: Callable[[dict[str, Any]], None] | None = None
        self.on_create_answer: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        self.on_retrieve: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        self.lost: str | None = None
        self.lose_create: int | None = None  # lose only the answer to this create (1-based)
        self.late_s = 1.0
        self.hide_new = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # -- running ---------------------------------------------------------------------------------

    def start(self) -> Provider:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/v1/files", self.upload)
        app.router.add_get("/v1/files/{id}/content", self.content)
        app.router.add_delete("/v1/files/{id}", self.delete_file)
        app.router.add_post("/v1/batches", self.create)
        app.router.add_get("/v1/batches", self.list)
        app.router.add_get("/v1/batches/{id}", self.retrieve)
        app.router.add_post("/v1/batches/{id}/cancel", self.cancel)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/v1"

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def reveal(self) -> None:
        """Let ``GET /batches`` list every batch."""
        self.hide_new = False
        self.hidden.clear()

    def session(self, **kwargs: Any) -> holynb.Session:
        kwargs.setdefault("model", MODEL)
        kwargs.setdefault("prices", PRICES)
        return holynb.Session(base_url=self.base_url, api_key=self.key, **kwargs)

    def rows_sent(self) -> list[str]:
        """The custom_id of every request of every batch created, in order."""
        return [item["custom_id"] for lines in self.creates for item in lines]

    # -- handlers ------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.paths.append(request.path)
        if request.headers.get("authorization") != f"Bearer {self.key}":
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        return await handler(request)

    async def upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        content = form["file"].file.read()  # type: ignore[union-attr]
        file_id = "file-" + uuid.uuid4().hex[:16]
        self.files[file_id] = content
        return web.json_response({"id": file_id, "object": "file", "purpose": "batch"})

    async def content(self, request: web.Request) -> web.Response:
        data = self.files.get(request.match_info["id"])
        if data is None:
            return web.json_response({"error": {"message": "no such file"}}, status=404)
        return web.Response(body=data, content_type="application/octet-stream")

    async def delete_file(self, request: web.Request) -> web.Response:
        self.files.pop(request.match_info["id"], None)
        return web.json_response({"id": request.match_info["id"], "deleted": True})

    async def create(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        number = len(self.creates) + 1
        lost = self.lost if self.lose_create in (None, number) else None
        if lost == "never":
            request.transport.close()  # type: ignore[union-attr]
            return web.Response()
        items = [orjson.loads(x) for x in self.files[body["input_file_id"]].splitlines()]
        self.creates.append(items)
        batch = self._make(body, items)
        if self.hide_new:
            self.hidden.add(batch["id"])
        answer = dict(batch)
        if self.on_create_answer is not None:
            answer = self.on_create_answer(answer)
        if lost == "late":
            await asyncio.sleep(self.late_s)
        elif lost == "drop":
            request.transport.close()  # type: ignore[union-attr]
            return web.Response()
        elif lost == "502":
            return web.json_response({"error": {"message": "bad gateway"}}, status=502)
        return web.json_response(answer)

    def _make(self, body: dict[str, Any], items: list[dict[str, Any]]) -> dict[str, Any]:
        batch_id = "batch_" + uuid.uuid4().hex[:16]
        out, err = b"", b""
        if self.output is not None:
            out = self.output(items)
        else:
            for item in items:
                line = self.answer(item)
                raw = line if isinstance(line, bytes) else orjson.dumps(line)
                response = line.get("response") if isinstance(line, dict) else None
                ok = isinstance(response, dict) and response.get("status_code") == 200
                if ok or isinstance(line, bytes):
                    out += raw + b"\n"
                else:
                    err += raw + b"\n"
        output_file_id = error_file_id = None
        if out:
            output_file_id = "file-" + uuid.uuid4().hex[:16]
            self.files[output_file_id] = out
        if err:
            error_file_id = "file-" + uuid.uuid4().hex[:16]
            self.files[error_file_id] = err
        batch = {
            "id": batch_id,
            "object": "batch",
            "endpoint": body["endpoint"],
            "input_file_id": body["input_file_id"],
            "completion_window": body["completion_window"],
            "status": "completed",
            "created_at": int(time.time()),
            "metadata": body.get("metadata"),
            "output_file_id": output_file_id,
            "error_file_id": error_file_id,
            "errors": None,
            "request_counts": {"total": len(items), "completed": len(items), "failed": 0},
        }
        if self.shape is not None:
            self.shape(batch)
        self.batches[batch["id"]] = batch
        return batch

    async def list(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", "20"))
        batches = [b for b in reversed(self.batches.values()) if b["id"] not in self.hidden]
        after = request.query.get("after")
        if after:
            ids = [b["id"] for b in batches]
            batches = batches[ids.index(after) + 1 :] if after in ids else []
        page = batches[:limit]
        return web.json_response(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(batches) > limit,
            }
        )

    async def retrieve(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        return web.json_response(self.on_retrieve(dict(batch)) if self.on_retrieve else batch)

    async def cancel(self, request: web.Request) -> web.Response:
        batch = self.batches[request.match_info["id"]]
        return web.json_response(batch)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOLYNB_HOME three levels inside tmp_path, so ``../../../../escaped`` from a job's folder
    lands in ``tmp_path/escaped``."""
    home = tmp_path / "inside" / "home"
    monkeypatch.setenv("HOLYNB_HOME", str(home))
    (tmp_path / "escaped").mkdir()
    return home


@pytest.fixture
def provider(home: Path) -> Iterator[Provider]:
    p = Provider().start()
    yield p
    p.stop()


def written_outside(tmp_path: Path, home: Path) -> list[Path]:
    """Every file under tmp_path that is not inside HOLYNB_HOME."""
    return [p for p in tmp_path.rglob("*") if p.is_file() and home not in p.parents]


# -- 3: a late or lost answer to POST /batches never leads to a second batch ---------------------


@pytest.mark.parametrize("lost", ["late", "drop", "502"])
def test_a_lost_answer_to_create_adopts_the_batch_the_provider_made(provider, lost):
    provider.lost = lost
    provider.late_s = 1.5
    with provider.session(timeout=0.4) as s:
        job = s.batch(["a", "b"])
        assert len(provider.creates) == 1
        assert job.batch_ids == list(provider.batches)
        df = job.wait(progress=False).results()
        assert df.ok.all() and df.text.tolist() == ["answer to a", "answer to b"]
        assert len(provider.creates) == 1 and len(s.ledger) == 2


def test_an_unknown_outcome_keeps_the_job_and_refresh_adopts_the_batch(provider, home):
    provider.lost, provider.hide_new = "late", True  # created, answered late, not listed yet
    with provider.session(timeout=0.4) as s:
        with pytest.raises(holynb.BatchError) as info:
            s.batch(["a", "b"])
        message = str(info.value)
        job_id = s.batches().job_id.iloc[0]
        assert "may exist" in message and f"BatchJob.attach(s, {job_id!r})" in message
        assert ".refresh()" in message and "resubmit_failed" not in message
        assert s.batches().status.tolist() == ["unknown"]
        manifest = orjson.loads((home / "batches" / job_id / "manifest.json").read_bytes())
        (part,) = manifest["parts"]
        assert part["status"] == "unknown" and part["input_file_id"] in provider.files
        assert part["label"] == "0:1/1"

        provider.lost = None
        with pytest.raises(holynb.BatchError, match=job_id):
            s.batch(["a", "b"])  # the same requests again: refused, nothing is sent
        assert len(provider.creates) == 1

        provider.reveal()
        job = holynb.BatchJob.attach(s, job_id).refresh()
        assert job.batch_ids == list(provider.batches) and job.status == "completed"
        assert job.results().ok.all() and len(provider.creates) == 1


def test_resubmit_failed_never_sends_a_part_whose_outcome_is_unknown(provider):
    provider.lost, provider.lose_create, provider.hide_new = "late", 2, True
    with provider.session(timeout=0.4) as s:
        with pytest.raises(holynb.BatchError, match="part 2 of 3"):
            s.batch([f"p{i}" for i in range(6)], max_requests_per_file=2)
        job = holynb.BatchJob.attach(s, s.batches().job_id.iloc[0])
        with pytest.raises(holynb.BatchError, match="unknown"):
            job.resubmit_failed()
        assert len(provider.creates) == 2

        provider.reveal()
        job.refresh()
        assert len(job.batch_ids) == 2
        job.resubmit_failed()  # only the part that was never sent
        assert provider.rows_sent() == [f"row-{i}" for i in range(6)]
        df = job.wait(progress=False).results()
        assert df.ok.all() and df.attempts.tolist() == [1] * 6


def test_a_part_never_created_is_sent_again_only_after_the_lookup_grace(provider, monkeypatch):
    provider.lost = "never"
    with provider.session(timeout=0.4) as s:
        with pytest.raises(holynb.BatchError, match="may exist"):
            s.batch(["a", "b"])
        provider.lost = None
        job = holynb.BatchJob.attach(s, s.batches().job_id.iloc[0])
        with pytest.raises(holynb.BatchError, match="unknown"):
            job.resubmit_failed()  # within the grace, not being listed proves nothing
        assert provider.creates == []

        monkeypatch.setattr(holynb.BatchJob, "lookup_grace_s", 0.0)
        assert job.refresh().status == "failed"
        assert job.results().error.str.startswith("BatchNotCreated:").all()
        job.resubmit_failed()
        assert provider.rows_sent() == ["row-0", "row-1"]
        assert job.wait(progress=False).results().ok.all()


def test_a_part_of_unknown_outcome_keeps_its_budget_hold_until_the_lookup_decides(
    provider, monkeypatch
):
    provider.lost = "never"  # nothing created, and no answer: the outcome is unknown
    with provider.session(timeout=0.4, budget_usd=1.0) as s:
        with pytest.raises(holynb.BatchError, match="may exist"):
            s.batch(["a", "b"], max_tokens=1000)
        held = s.meter.budget.reserved_usd
        assert held > 0  # it may exist and be billed: its worst case stays held
        job = holynb.BatchJob.attach(s, s.batches().job_id.iloc[0])
        job.refresh()  # within the grace: still unknown, still held
        assert s.meter.budget.reserved_usd == pytest.approx(held)

        monkeypatch.setattr(holynb.BatchJob, "lookup_grace_s", 0.0)
        assert job.refresh().status == "failed"  # never created: the hold ends
        assert s.meter.budget.reserved_usd == pytest.approx(0.0)
        provider.lost = None
        job.resubmit_failed()  # sent again: held again
        assert s.meter.budget.reserved_usd == pytest.approx(held)
        assert job.wait(progress=False).results().ok.all()
        assert s.meter.budget.reserved_usd == pytest.approx(0.0)
        assert 0 < s.total_cost_usd < held


def test_the_local_server_lists_batches_with_their_metadata_in_pages(local: LocalServer):
    local.batches.settings = BatchSettings()
    auth = {"Authorization": f"Bearer {local.api_key.get()}"}
    ids = []
    for n in range(3):
        upload = httpx.post(
            f"{local.base_url}/files",
            headers=auth,
            files={"file": ("in.jsonl", b'{"custom_id": "a"}\n')},
            data={"purpose": "batch"},
        ).json()
        created = httpx.post(
            f"{local.base_url}/batches",
            headers=auth,
            json={
                "input_file_id": upload["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
                "metadata": {"holynb_job": "job-x", "holynb_part": f"0:{n + 1}/3"},
            },
        ).json()
        ids.append(created["id"])
    first = httpx.get(f"{local.base_url}/batches", headers=auth, params={"limit": 2}).json()
    assert [b["id"] for b in first["data"]] == ids[::-1][:2] and first["has_more"]
    assert first["data"][0]["metadata"] == {"holynb_job": "job-x", "holynb_part": "0:3/3"}
    rest = httpx.get(
        f"{local.base_url}/batches", headers=auth, params={"limit": 2, "after": first["last_id"]}
    ).json()
    assert rest["data"][0]["id"] == ids[0]


# -- 4: ids from the provider and from the user are checked; files are named by holynb ----------

HOSTILE_IDS = ["../../../../escaped/planted", "ESCAPED_ABSOLUTE", "..", "batch\x00evil", "a/b"]


def hostile(value: str, tmp_path: Path) -> str:
    return str(tmp_path / "escaped" / "planted") if value == "ESCAPED_ABSOLUTE" else value


@pytest.mark.parametrize("bad", HOSTILE_IDS)
def test_a_hostile_batch_id_is_refused_and_nothing_is_written_outside_home(
    provider, home, tmp_path, bad
):
    bad = hostile(bad, tmp_path)
    provider.on_retrieve = lambda batch: {**batch, "id": bad}
    with provider.session() as s:
        job = s.batch(["a", "b"])
        with pytest.raises(holynb.BatchError, match="batch id"):
            job.wait(progress=False)
            job.results()
    assert written_outside(tmp_path, home) == []


@pytest.mark.parametrize("bad", HOSTILE_IDS)
def test_a_hostile_id_in_the_answer_to_create_is_refused(provider, home, tmp_path, bad):
    bad = hostile(bad, tmp_path)
    provider.on_create_answer = lambda batch: {**batch, "id": bad}
    with provider.session() as s, pytest.raises(holynb.BatchError, match="batch id"):
        s.batch(["a", "b"]).wait(progress=False).results()
    assert written_outside(tmp_path, home) == []


@pytest.mark.parametrize("bad", HOSTILE_IDS)
def test_a_hostile_file_id_is_refused_and_never_requested(provider, home, tmp_path, bad):
    bad = hostile(bad, tmp_path)
    provider.on_retrieve = lambda batch: {**batch, "output_file_id": bad}
    with provider.session() as s:
        job = s.batch(["a", "b"])
        with pytest.raises(holynb.BatchError, match="file id"):
            job.wait(progress=False)
            job.results()
    assert written_outside(tmp_path, home) == []
    assert not [p for p in provider.paths if "escaped" in p or p.count("/") > 4]


@pytest.mark.parametrize("bad", ["..", ".", "../batches/x", "/etc", "job\x00x", "a/b", ""])
def test_attach_refuses_a_job_id_that_is_not_an_id(provider, home, bad):
    with provider.session() as s:
        s.batch(["a"])  # a real job, so HOLYNB_HOME/batches exists
        planted = orjson.loads(next(home.glob("batches/*/manifest.json")).read_bytes())
        (home / "manifest.json").write_bytes(orjson.dumps(planted))
        with pytest.raises(holynb.BatchError, match="not a job id"):
            holynb.BatchJob.attach(s, bad)


def test_a_planted_manifest_naming_another_folder_is_not_trusted(provider, home):
    with provider.session() as s:
        job = s.batch(["a"])
        folder = home / "batches" / job.id
        data = orjson.loads((folder / "manifest.json").read_bytes())
        decoy = home / "batches" / "job-decoy"
        decoy.mkdir()
        (decoy / "manifest.json").write_bytes(orjson.dumps({**data, "id": "../../../escaped"}))
        assert s.batches().job_id.tolist() == [job.id]
        with pytest.raises(holynb.BatchError, match="job-decoy"):
            holynb.BatchJob.attach(s, "job-decoy")


def test_downloads_are_named_by_holynb_not_by_the_provider(provider, home):
    provider.answer = lambda item: (
        answer_line(item)
        if item["custom_id"] != "row-1"
        else {"custom_id": "row-1", "response": {"status_code": 400, "body": {}}, "error": None}
    )
    with provider.session() as s:
        job = s.batch(["a", "b"]).wait(progress=False)
        job.results()
        names = sorted(p.name for p in (home / "batches" / job.id).iterdir())
    assert [n for n in names if n.endswith(".jsonl")] == [
        "r0-p1.errors.jsonl",
        "r0-p1.output.jsonl",
        "requests.jsonl",
    ]
    assert not [n for n in names if job.batch_ids[0] in n]


# -- 5: any number of objects or processes on one job record each result once ------------------

PRICED = {"local/flaky": {"input": 2.0, "output": 4.0}, "local/echo": {"input": 2.0, "output": 4.0}}


def flaky(messages: list[dict], params: dict) -> str:
    if "FAIL" in messages[-1]["content"]:
        raise RuntimeError("cannot answer this one")
    return f"answer to {messages[-1]['content']}"


@pytest.fixture
def srv(local: LocalServer, home: Path) -> Iterator[LocalServer]:
    local.batches.settings = BatchSettings()
    local.register_model("local/flaky", flaky)
    yield local
    local.batches.settings = BatchSettings()


def logged_batch_rows(srv: LocalServer, log: Path) -> int:
    with holynb.Session(base_url=srv.base_url, log_path=log) as fresh:
        return sum(r.kind == "batch" for r in fresh.records)


def test_two_job_objects_in_one_process_record_each_result_once(srv, tmp_path):
    log = tmp_path / "log.sqlite"
    with holynb.Session(base_url=srv.base_url, model="local/flaky", log_path=log) as s:
        job = s.batch(["a", "b FAIL", "c"]).wait(progress=False)
        other = holynb.BatchJob.attach(s, job.id)
        other.results()
        job.results()
        assert len(s.ledger) == 3
    assert logged_batch_rows(srv, log) == 3


ATTACH_AND_READ = """
import sys, holynb
s = holynb.Session(base_url=sys.argv[1], log_path=sys.argv[2])
holynb.BatchJob.attach(s, sys.argv[3]).wait(progress=False).results()
"""


def test_a_stale_object_after_another_process_recorded_adds_nothing(srv, home, tmp_path):
    log = tmp_path / "log.sqlite"
    with holynb.Session(base_url=srv.base_url, model="local/flaky", log_path=log) as s:
        job = s.batch(["a", "b FAIL", "c"])
        stale = holynb.BatchJob.attach(s, job.id)
        env = {**key_env(srv), "HOLYNB_HOME": str(home)}
        done = subprocess.run(
            [sys.executable, "-c", ATTACH_AND_READ, srv.base_url, str(log), job.id],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        stale.wait(progress=False).results()
        job.results()
        assert len(s.ledger) == 0  # the other process entered them
    assert logged_batch_rows(srv, log) == 3


def test_processes_reading_results_at_once_record_each_result_once(srv, home, tmp_path):
    log = tmp_path / "log.sqlite"
    with holynb.Session(base_url=srv.base_url, model="local/flaky", log_path=log) as s:
        job = s.batch([f"p{i}" for i in range(40)]).wait(progress=False)
    env = {**key_env(srv), "HOLYNB_HOME": str(home)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", ATTACH_AND_READ, srv.base_url, str(log), job.id],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for child in children:
        _, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
    assert logged_batch_rows(srv, log) == 40


def test_two_resubmit_failed_calls_send_a_failed_row_once_and_keep_every_part(srv, home):
    created = len(srv.batches.all())  # the local server is shared with other tests
    with holynb.Session(base_url=srv.base_url, model="local/flaky", prices=PRICED) as s:
        job = s.batch([f"p{i}" + (" FAIL" if i in (1, 4) else "") for i in range(6)])
        job.wait(progress=False)
        other = holynb.BatchJob.attach(s, job.id)
        srv.register_model("local/flaky", lambda messages, params: "fixed")
        job.resubmit_failed()
        job.wait(progress=False)
        other.resubmit_failed()  # it knew nothing of the first resubmission
        assert len(srv.batches.all()) - created == 2
        on_disk = orjson.loads((home / "batches" / job.id / "manifest.json").read_bytes())
        assert len(on_disk["parts"]) == 2
        assert other.batch_ids == job.batch_ids
        df = other.wait(progress=False).results()
        assert df.ok.all() and df.attempts.tolist() == [1, 2, 1, 1, 2, 1]
        assert len(s.ledger) == 8  # 6 answers and 2 failures, once each


# -- 6: one malformed output line fails only its own row -----------------------------------------


def _mutated(row: str, change: Callable[[dict[str, Any]], Any]) -> Callable[[dict], Any]:
    def answer(item: dict[str, Any]) -> Any:
        line = answer_line(item)
        return change(line) if item["custom_id"] == row else line

    return answer


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    def change(line: dict[str, Any]) -> dict[str, Any]:
        target: Any = line
        keys = path.split(".")
        for key in keys[:-1]:
            target = target[int(key)] if key.isdigit() else target[key]
        target[keys[-1]] = value
        return line

    return change


MALFORMED = {
    "body is a string": _set("response.body", "upstream error"),
    "response is a list": _set("response", [1, 2]),
    "choices not a list": _set("response.body.choices", "none"),
    "choice not a dict": _set("response.body.choices", ["x"]),
    "message a string": _set("response.body.choices.0.message", "hi"),
    "content a number": _set("response.body.choices.0.message.content", 42),
    "usage with strings": _set("response.body.usage", {"prompt_tokens": "ten"}),
    "usage a list": _set("response.body.usage", [1]),
    "status code a string": _set("response.status_code", "200"),
    "finish reason an object": _set("response.body.choices.0.finish_reason", {"a": 1}),
    "model an object": _set("response.body.model", {"name": "x"}),
    "error a list": lambda line: {"custom_id": line["custom_id"], "response": None, "error": [1]},
    "error code a list": lambda line: {
        "custom_id": line["custom_id"],
        "response": None,
        "error": {"code": ["x"], "message": 5},
    },
    "broken json": lambda line: b'{"custom_id": "row-1", "response": {"status_code": 200, "bo',
}


@pytest.mark.parametrize("change", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_output_line_fails_only_its_own_row(provider, change):
    provider.answer = _mutated("row-1", change)
    with provider.session() as s:
        df = s.batch(["a", "b", "c"]).wait(progress=False).results()
        assert df.ok.tolist() == [True, False, True]
        assert df.text[[0, 2]].tolist() == ["answer to a", "answer to c"]
        assert "unreadable" in df.loc[1, "error"] and "line" in df.loc[1, "error"]
        assert len(s.ledger) == 3


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
PATHS = [
    "custom_id",
    "response",
    "error",
    "response.status_code",
    "response.request_id",
    "response.body",
    "response.body.model",
    "response.body.choices",
    "response.body.choices.0",
    "response.body.choices.0.message",
    "response.body.choices.0.message.content",
    "response.body.choices.0.finish_reason",
    "response.body.usage",
    "response.body.usage.prompt_tokens",
    "response.body.usage.completion_tokens",
    "response.body.usage.prompt_tokens_details",
]
N_FUZZ = 4


def _file_of(items: list[dict[str, Any]], edits: list[tuple[int, str, Any]], cut: Any) -> bytes:
    lines = [answer_line(item) for item in items]
    for row, path, value in edits:
        try:
            _set(path, value)(lines[row % len(lines)])
        except (LookupError, TypeError, AttributeError, ValueError):
            continue  # an earlier edit removed the way there
    data = b"".join(orjson.dumps(x, option=orjson.OPT_NON_STR_KEYS) + b"\n" for x in lines)
    if cut is not None:
        position, junk = cut
        position %= len(data) + 1
        data = data[:position] + junk + data[position:]
    return data


@settings(
    max_examples=300,
    derandomize=True,  # a fixed seed: the same 300 files every run
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    edits=st.lists(
        st.tuples(st.integers(0, N_FUZZ - 1), st.sampled_from(PATHS), JSON_VALUES), max_size=4
    ),
    cut=st.none() | st.tuples(st.integers(0, 10_000), st.binary(max_size=8)),
)
def test_results_never_raise_and_keep_every_row_whatever_the_output_file(provider, edits, cut):
    provider.output = lambda items: _file_of(items, edits, cut)
    with provider.session() as s:
        df = s.batch([f"p{i}" for i in range(N_FUZZ)]).wait(progress=False).results()
    assert df.custom_id.tolist() == [f"row-{i}" for i in range(N_FUZZ)]
    assert all(isinstance(t, str) for t in df.text[df.ok])
    assert all(isinstance(e, str) for e in df.error[~df.ok])
    touched = {row % N_FUZZ for row, _, _ in edits}
    if cut is None:  # every line left alone is answered
        assert df.ok[[i for i in range(N_FUZZ) if i not in touched]].all()


# -- 10: one prompt parser for map, batch and batch_jsonl ----------------------------------------


def mirror(messages: list[dict], params: dict) -> str:
    """Answers with the messages it received, as JSON."""
    return json.dumps(messages, sort_keys=True)


def tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" + b"\xff\x00\x00" * 2 + b"\x00" + b"\x00\xff\x00" * 2)
    parts = chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + parts


FRAME = pd.DataFrame({"review": ["great", "awful"], "stars": [5, 1]}, index=["r9", "r2"])
SHAPES: dict[str, tuple[Callable[[], Any], dict[str, Any]]] = {
    "list": (lambda: ["a", "b"], {}),
    "tuple": (lambda: ("a", "b"), {}),
    "generator": (lambda: (f"g{i}" for i in range(2)), {}),
    "list, positional template": (lambda: ["a", "b"], {"template": "Say {}"}),
    "series": (lambda: pd.Series(["a", "b"], index=[10, 20], name="word"), {}),
    "series, named template": (
        lambda: pd.Series(["a", "b"], index=[10, 20], name="word"),
        {"template": "Say {word}"},
    ),
    "frame, template": (lambda: FRAME, {"template": "Rate ({stars}*): {review}"}),
    "records, template": (
        lambda: [{"review": "great", "stars": 5}, {"review": "awful", "stars": 1}],
        {"template": "Rate ({stars}*): {review}"},
    ),
    "message lists, system": (
        lambda: [[{"role": "user", "content": "x"}], [{"role": "user", "content": "y"}]],
        {"system": "Be brief."},
    ),
    "images per item": (lambda: ["a", "b"], {"images": [tiny_png(), None]}),
    "frame, column of images": (
        lambda: pd.DataFrame({"name": ["a", "b"], "photo": [tiny_png(), None]}),
        {"template": "Describe {name}", "images": "photo"},
    ),
    # refused: the same error class from map and batch
    "dict": (lambda: {"a": "x", "b": "y"}, {}),
    "one string": (lambda: "just one", {}),
    "bytes": (lambda: b"abc", {}),
    "a number": (lambda: 42, {}),
    "frame without template": (lambda: FRAME, {}),
    "frame, missing column": (lambda: FRAME, {"template": "Rate: {text}"}),
    "frame, positional template": (lambda: FRAME, {"template": "Rate: {}"}),
    "list, named template": (lambda: ["a", "b"], {"template": "Say {word}"}),
    "records lacking a field": (lambda: [{"review": "x"}, {"stars": 1}], {"template": "{review}"}),
    "a bad template": (lambda: ["a"], {"template": "Say {"}),
    "images, wrong count": (lambda: ["a", "b"], {"images": [tiny_png()]}),
    "a None prompt": (lambda: ["a", None], {}),
    "an empty message list": (lambda: ["a", []], {}),
}


def _outcome(call: Callable[[], pd.DataFrame]) -> tuple[str, Any]:
    try:
        return "ok", call()
    except holynb.HolynbError as err:
        return "raised", type(err)
    except (TypeError, ValueError) as err:
        return "raised", type(err)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPES.keys())
def test_map_and_batch_take_the_same_prompt_shapes_with_the_same_errors(srv, tmp_path, shape):
    make, kwargs = SHAPES[shape]
    srv.register_model("local/mirror", mirror)
    files_before = len(srv.batches.files.all())
    with holynb.Session(base_url=srv.base_url, model="local/mirror", prices=PRICES) as s:
        how, mapped = _outcome(lambda: s.map(make(), progress=False, **kwargs))
        if how == "ok" and not mapped.ok.all():  # a bad prompt is that row's error in map
            how, mapped = "raised", mapped.error[~mapped.ok].iloc[0].split(":")[0]
        done, batched = _outcome(lambda: s.batch(make(), **kwargs).wait(progress=False).results())
        if done == "raised":
            batched = batched.__name__ if how == "raised" and isinstance(mapped, str) else batched
            assert (how, mapped) == ("raised", batched)
            assert len(srv.batches.files.all()) == files_before  # nothing was uploaded
            return
        assert how == "ok", f"map refused {shape} but batch took it"
        assert batched.ok.all(), batched.error.tolist()
        assert batched.text.tolist() == mapped.text.tolist()  # the same messages were sent
        assert batched.index.equals(mapped.index)
        if "images" not in kwargs:
            path = holynb.batch_jsonl(make(), tmp_path / "in.jsonl", model="local/mirror", **kwargs)
            sent = [orjson.loads(x)["body"]["messages"] for x in path.read_bytes().splitlines()]
            assert [json.dumps(m, sort_keys=True) for m in sent] == mapped.text.tolist()


def test_batch_refuses_a_dict_with_maps_advice(srv):
    with holynb.Session(base_url=srv.base_url, model="local/echo") as s:
        with pytest.raises(holynb.ConfigurationError, match=r"pd\.Series") as info:
            s.batch({"a": "x", "b": "y"})
        assert "batch got a dict" in str(info.value)
        assert s.batches().empty


# -- 14: the key echoed by a provider is redacted everywhere it could land ----------------------


def test_a_key_echoed_by_the_provider_never_reaches_results_ledger_log_or_files(home, tmp_path):
    provider = Provider(key=PLANTED_KEY).start()
    escaped = "".join(f"\\u{ord(c):04x}" for c in PLANTED_KEY)  # the key spelled as JSON escapes

    def answer(item: dict[str, Any]) -> dict[str, Any] | bytes:
        cid = item["custom_id"]
        if cid == "row-1":
            body = {"error": {"message": f"invalid key {PLANTED_KEY}", "type": "auth"}}
            return {"custom_id": cid, "response": {"status_code": 401, "body": body}}
        if cid == "row-2":
            return {"custom_id": cid, "response": None, "error": {"message": f"{PLANTED_KEY}!"}}
        if cid == "row-3":
            return ('{"custom_id": "row-3", "response": null, "error": {"message": "' + escaped
                    + '"}}').encode()  # fmt: skip
        line = answer_line(item)
        line["response"]["body"]["choices"][0]["message"]["content"] = f"echo {PLANTED_KEY}"
        return line

    def shape(batch: dict[str, Any]) -> None:
        if len(provider.batches) == 1:  # the second part: refused, its errors echo the key
            batch["status"] = "failed"
            batch["output_file_id"] = batch["error_file_id"] = None
            batch["errors"] = {"data": [{"line": 1, "message": f"bad key {PLANTED_KEY}"}]}

    provider.answer, provider.shape = answer, shape
    log = tmp_path / "log.sqlite"
    try:
        with provider.session(log_path=log) as s:
            job = s.batch([f"p{i}" for i in range(5)], max_requests_per_file=4)
            df = job.wait(progress=False).results()
            assert df.ok.tolist() == [True, False, False, False, False]
            shown = [
                df.to_json(),
                s.ledger.to_json(date_format="iso"),
                repr(job),
                job.parts.to_json(),
                s.batches().to_json(),
            ]
            job.resubmit_failed()  # its error messages too
    finally:
        provider.stop()
    assert "***" in df.loc[1, "error"] and "***" in df.loc[4, "error"]
    assert not [text for text in shown if PLANTED_KEY in text]
    stored = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert log in stored and [p for p in stored if PLANTED_KEY.encode() in p.read_bytes()] == []
    everything = b"".join(p.read_bytes() for p in stored)
    assert escaped.encode() not in everything
