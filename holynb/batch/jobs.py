"""``BatchJob``: many prompts through the provider's Batch API (``/v1/files`` + ``/v1/batches``).

One job is one or more provider batches ("parts": a file holds at most 50,000 requests and
200 MB). Each part carries our job id in its ``metadata``; a manifest in the session's job
store (``job_store``: folders under ``HOLYNB_HOME``, or the team database with
``Session(database=...)``) remembers the job so ``BatchJob.attach(s, job_id)`` finds it after a
kernel restart, or on a teammate's machine. Statuses are normalised to lower case (some relays
answer ``COMPLETED``). Results join the output and error files back onto the input rows by
``custom_id`` and enter the ledger at batch prices.

>>> job = s.batch(df, template="Classify: {review}", model="gpt-4.1-mini")
>>> job.wait()              # progress bar; Interrupt stops waiting, not the batch
>>> out = job.results()     # like s.map's frame, plus custom_id
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from holynb._config import is_offline_server, offline_server_token
from holynb._loop import default_loop
from holynb.batch import anthropic as message_batches
from holynb.batch.files import (
    ENDPOINT,
    MAX_BYTES_PER_FILE,
    MAX_REQUESTS_PER_FILE,
    custom_id,
    encode_lines,
    line_problems,
    position_of,
    request_line,
    split_lines,
)
from holynb.batch.manifest import (
    UNKNOWN,
    FileJobs,
    Manifest,
    Part,
    known_jobs,
    new_job_id,
    part_key,
)
from holynb.batch.results import Outcome, frame, missing, read_outcomes
from holynb.batch.spend import Spend, row_worst
from holynb.batch.untrusted import checked_id, scrub_lines, scrub_value
from holynb.budget import JOB_OWNER
from holynb.calls.caller import caller_of
from holynb.errors import (
    APIConnectionError,
    APIError,
    APIResponseError,
    APIStatusError,
    BatchError,
    BatchNotSupportedError,
    ConfigurationError,
    ImageError,
    RateLimitError,
    ServerError,
    StoreError,
    StoreWarning,
)
from holynb.ledger import CallRecord
from holynb.prompts import PromptSet, prompt_error, prompt_text, read_prompts
from holynb.results import ChatResult, Usage

if TYPE_CHECKING:
    import pandas as pd

    from holynb.calls.caller import Caller, Core
    from holynb.images import ImagePreset
    from holynb.jobstore import JobStore
    from holynb.prompts import Prompt

COMPLETION_WINDOW = "24h"
MAX_METADATA_PAIRS = 16
_SHOWN_BAD_ROWS = 20  # rows named in the error when images cannot be sent
JOB_KEY, PART_KEY = "holynb_job", "holynb_part"
FINAL = frozenset({"completed", "failed", "expired", "cancelled"})
_RUNNING_ORDER = ("validating", "in_progress", "finalizing")
_FINAL_ORDER = ("failed", "expired", "cancelled", "completed")
_TRANSIENT = (APIConnectionError, ServerError, RateLimitError)
_LIST_PAGE = 100  # batches per page of GET /batches when a part is looked up
_LIST_PAGES = 20  # pages read at most per lookup
_LIST_SLACK_S = 3600.0  # batches created this long before a part was sent cannot be it


def _outcome_unknown(err: APIError) -> bool:
    """Whether an error to POST /batches leaves open that the provider created the batch (no
    answer, a cut connection, a gateway's 5xx), rather than refusing it (any other 4xx)."""
    if isinstance(err, APIConnectionError | APIResponseError):
        return True
    if not isinstance(err, APIStatusError):
        return False
    return err.status is None or err.status >= 500 or err.status == 408


@dataclass(frozen=True, slots=True)
class BatchCounts:
    """Requests of a job over all its parts: ``total``, ``completed``, ``failed``."""

    total: int
    completed: int
    failed: int

    @property
    def pending(self) -> int:
        """Requests not finished yet."""
        return max(0, self.total - self.completed - self.failed)


def normalise_status(status: Any) -> str:
    """A provider's batch status in lower case (``COMPLETED`` -> ``completed``)."""
    return str(status or "").strip().lower()


def _not_supported(base_url: str, err: APIStatusError, what: str) -> BatchNotSupportedError:
    return BatchNotSupportedError(
        f"{base_url} has no Batch API: {what} answered HTTP {err.status}.",
        status=err.status,
        request_id=err.request_id,
        hint=(
            "Use s.map(prompts, checkpoint='run.sqlite') instead: it sends the requests "
            "concurrently and a re-run after a crash sends only what is missing."
        ),
    )


class BatchJob:
    """A job on the provider's Batch API, made of one provider batch per part.

    >>> job = s.batch(prompts, model="gpt-4.1-mini", max_tokens=50)
    >>> job.id, job.batch_ids
    >>> job.refresh().status, job.counts          # lower case; totals over every part
    >>> job.wait(); df = job.results()
    >>> job = holynb.BatchJob.attach(s, "job-20261127-101500-3f9a1c")   # after a restart
    >>> job.resubmit_failed()                     # only the failed, expired or missing rows

    The manifest in its job store is the one truth: every method that changes it holds
    the job's lock and reads it again first, so any number of objects and processes on one job
    record each result once and never send a row twice. A part whose ``POST /batches`` got no
    answer is ``unknown``: it is looked up on the provider by its metadata before anything of
    it may be sent again.
    """

    lookup_grace_s: float = 300.0  # a part not listed this long after it was sent was not made

    def __init__(self, core: Core, manifest: Manifest, schema: Any = None) -> None:
        self.caller: Caller = caller_of(core)
        self.meter = self.caller.meter
        self._manifest = manifest
        self._schema = schema  # schema= as given (a pydantic model validates as itself)
        for part in manifest.parts:  # reattached: its unrecorded parts are held again
            if not part.recorded:
                self._adopt(part)

    def _adopt(self, part: Part) -> int | None:
        """Hold ``part``'s worst case in this session again (see ``Meter.adopt_batch_hold``)."""
        m = self._manifest
        return self.meter.adopt_batch_hold(
            part.key(m.id), part.worst_usd, part.hold, team_hold=part.team_hold, budget=m.budget
        )

    # -- creating and finding jobs --------------------------------------------------------------

    @classmethod
    async def acreate(
        cls,
        core: Core,
        prompts: Any,
        *,
        template: str | None = None,
        model: str | None = None,
        system: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        metadata: dict[str, str] | None = None,
        max_requests_per_file: int = MAX_REQUESTS_PER_FILE,
        max_bytes_per_file: int = MAX_BYTES_PER_FILE,
        params: dict[str, Any] | None = None,
        schema: Any = None,
        images: Any = None,
        image_preset: str | ImagePreset | None = None,
    ) -> BatchJob | pd.DataFrame:
        """Build, check, split and upload the requests, and create one batch per part
        (``params["dry_run"]``: the dry run's frame instead, see ``holynb.dry_run``).
        ``prompts`` are read as ``map`` reads them (``holynb.prompts``: the same shapes, the
        same errors). ``schema`` asks every request for ``response_format`` ``json_schema``;
        ``images`` (one entry per prompt, as for ``map``) go into each request's body, prepared
        by ``image_preset``. Any bad prompt or bad or oversized image refuses the whole job
        before anything is uploaded, naming every row concerned."""
        caller, meter = caller_of(core), caller_of(core).meter
        metadata = dict(metadata or {})
        if len(metadata) > MAX_METADATA_PAIRS - 2:
            raise ConfigurationError(
                f"metadata has {len(metadata)} pairs; a batch takes {MAX_METADATA_PAIRS} and "
                f"holynb uses 2 ({JOB_KEY}, {PART_KEY}): keep at most {MAX_METADATA_PAIRS - 2}."
            )
        params = dict(params or {})
        dry_run = bool(params.pop("dry_run", False))
        kept_schema = None  # what the manifest keeps of schema= (JSON), for attach
        if schema is not None:
            from holynb.structured import AnswerSchema

            if "response_format" in params:
                raise TypeError("Give schema= or response_format=, not both: schema= sets it.")
            spec = AnswerSchema.of(schema)
            params["response_format"] = spec.response_format()
            kept_schema = {"name": spec.name, "schema": spec.schema}
        anthropic = caller.settings.api == "anthropic"
        if anthropic:  # Message Batches: Anthropic's limits where OpenAI's defaults were left
            if max_requests_per_file == MAX_REQUESTS_PER_FILE:
                max_requests_per_file = message_batches.MAX_REQUESTS
            if max_bytes_per_file == MAX_BYTES_PER_FILE:
                max_bytes_per_file = message_batches.MAX_BYTES
        parsed = read_prompts(prompts, template, images=images, what="batch")
        if not parsed.prompts:
            raise ConfigurationError("There are no prompts to send.")
        sent = _with_images(caller, parsed, system, image_preset)
        bodies = []
        for label, (p, own_system) in zip(parsed.labels, sent, strict=True):
            try:
                bodies.append(
                    caller.body(p, model, own_system, temperature, max_tokens, dict(params))
                )
            except (TypeError, ValueError) as err:  # a bad prompt: map's row error, raised
                raise prompt_error(label, err) from None
        encoded = encode_lines(request_line(custom_id(i), b) for i, b in enumerate(bodies))
        problems = line_problems(encoded)
        if problems:
            shown = "; ".join(f"line {n} ({cid}): {what}" for n, cid, what in problems[:5])
            raise ConfigurationError(f"The batch file would be refused: {shown}.")
        if dry_run:  # what would be sent, at batch prices: nothing is uploaded
            from holynb.dry_run import Planned, plan_frame

            planned = [Planned(p, b) for p, b in zip(parsed.prompts, bodies, strict=True)]
            return plan_frame(caller, planned, parsed.index, batch=True)
        groups = split_lines(encoded, max_requests_per_file, max_bytes_per_file)
        digest = hashlib.sha256(b"".join(encoded)).hexdigest()
        store = job_store(caller)
        _refuse_a_twin(caller.base_url, digest, store)
        job_id = new_job_id()
        holds = meter.hold_batch([[bodies[i] for i in g] for g in groups], JOB_OWNER + job_id)
        manifest = Manifest(
            id=job_id,
            base_url=caller.base_url,
            model=bodies[0]["model"],
            created_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
            index=parsed.labels,
            index_name=parsed.index_name,
            texts=[prompt_text(p) for p in parsed.prompts],
            metadata=metadata,
            max_requests_per_file=max_requests_per_file,
            max_bytes_per_file=max_bytes_per_file,
            schema=kept_schema,
            requests_sha256=digest,
            api=caller.settings.api,
            offline_in_process=offline_server_token(caller.base_url) is not None,
            budget=meter.team_budget.name if meter.team_budget is not None else None,
            user=store.user,
            store=store,
        )
        job = cls(caller, manifest, schema)
        sending = False
        try:
            async with manifest.lock():
                manifest.write_requests(encoded)
                manifest.save()
                sending = True  # from here _send releases the holds of parts not created
                try:
                    await job._send(groups, encoded, round_=0, holds=holds)
                except BatchNotSupportedError:
                    if not manifest.parts:  # nothing was created anywhere: leave no trace
                        store.remove(manifest.id)
                    raise
                except APIError as err:
                    if not manifest.parts:
                        store.remove(manifest.id)
                        raise
                    raise BatchError(
                        f"Job {manifest.id}: {len(manifest.parts)} of {len(groups)} parts were "
                        f"created, then: {err.message} Once they finish, BatchJob.attach(s, "
                        f"{manifest.id!r}).resubmit_failed() sends the rest."
                    ) from err
        except BaseException:
            if not sending:  # nothing went out: no part holds its share
                for hold, _ in holds:
                    meter.release(hold)
            raise
        return job

    async def _send(
        self,
        groups: list[list[int]],
        encoded: list[bytes],
        round_: int,
        holds: list[tuple[int | None, float]],
    ) -> None:
        """Upload and create one batch per group, saving each part (with its budget hold)
        before its POST /batches goes out. An unknown outcome is looked up at once; a part
        still unknown after that stops the sending (BatchError), so nothing is sent that may
        already exist. The holds of parts not created are released; a part whose outcome is
        unknown keeps its hold until a lookup decides."""
        try:
            await self._send_parts(groups, encoded, round_, holds)
        except BaseException:
            kept = {p.key(self.id) for p in self._manifest.parts}
            for rows, (hold, _) in zip(groups, holds, strict=True):
                if part_key(self.id, round_, rows) not in kept:
                    self.meter.release(hold)
            raise

    async def _send_parts(
        self,
        groups: list[list[int]],
        encoded: list[bytes],
        round_: int,
        holds: list[tuple[int | None, float]],
    ) -> None:
        api = self.caller
        m = self._manifest
        for n, (rows, (hold, worst)) in enumerate(zip(groups, holds, strict=True), start=1):
            label = f"{round_}:{n}/{len(groups)}"
            if self.anthropic:
                await self._send_message_batch(rows, encoded, round_, label, (hold, worst))
                continue
            name = f"{m.id}-r{round_}-p{n}.jsonl"
            content = b"".join(encoded[i] for i in rows)
            try:
                response = await api.request(
                    "POST",
                    "files",
                    files={"file": (name, content, "application/jsonl")},
                    data={"purpose": "batch"},
                )
            except APIStatusError as err:
                if err.status in (404, 405):
                    raise _not_supported(self.caller.base_url, err, "POST /files") from None
                raise
            file_id = checked_id(self._answer(response).get("id"), "file id")
            request = {
                "input_file_id": file_id,
                "endpoint": ENDPOINT,
                "completion_window": COMPLETION_WINDOW,
                "metadata": {**m.metadata, JOB_KEY: m.id, PART_KEY: label},
            }
            part = Part(
                batch_id="",
                input_file_id=file_id,
                rows=rows,
                round=round_,
                status=UNKNOWN,
                label=label,
                sent_at=time.time(),
                worst_usd=worst,
                hold=hold,
                team_hold=self.meter.team_hold_of(hold),
            )
            m.parts.append(part)
            m.save()  # a crash during the POST still knows this part may exist
            try:
                response = await api.request("POST", "batches", json=request)
            except APIError as err:
                if not _outcome_unknown(err):  # refused: nothing was created
                    m.parts.remove(part)
                    m.save()
                    if isinstance(err, APIStatusError) and err.status in (404, 405):
                        with contextlib.suppress(APIError):  # leave nothing at the provider
                            await api.request("DELETE", f"files/{file_id}")
                        raise _not_supported(self.caller.base_url, err, "POST /batches") from None
                    raise
                await self._look_up(part)
                m.save()
                if part.status == UNKNOWN:
                    raise BatchError(self._lost_message(part, n, len(groups), err)) from None
                if not part.created:
                    continue  # never created: _look_up released its hold
            else:
                _update(part, self._answer(response), created=True)
            m.save()  # a crash after this still knows every part created so far
            self._adopt(part)

    @property
    def anthropic(self) -> bool:
        """Whether this job is one of Anthropic's Message Batches."""
        return self._manifest.api == "anthropic"

    async def _send_message_batch(
        self,
        rows: list[int],
        encoded: list[bytes],
        round_: int,
        label: str,
        held: tuple[int | None, float],
    ) -> None:
        """One part as ``POST /messages/batches`` (saved with its hold before it goes out; an
        unknown outcome stops the sending, since a Message Batch cannot be looked up by
        metadata)."""
        m = self._manifest
        hold, worst = held
        request = message_batches.create_request([encoded[i] for i in rows])
        part = Part(batch_id="", input_file_id="", rows=rows, round=round_, status=UNKNOWN,
                    label=label, sent_at=time.time(), worst_usd=worst, hold=hold,
                    team_hold=self.meter.team_hold_of(hold))  # fmt: skip
        m.parts.append(part)
        m.save()  # a crash during the POST still knows this part may exist
        try:
            response = await self.caller.request("POST", message_batches.PATH, json=request)
        except APIError as err:
            if _outcome_unknown(err):
                raise BatchError(
                    f"Job {self.id}: the answer to POST /messages/batches for part {label} was "
                    f"lost ({err.message}); the batch may exist on Anthropic, which cannot be "
                    "searched by metadata, so nothing more is sent and its rows are never sent "
                    "again by holynb. Check the Anthropic console's batches before sending "
                    "these prompts again."
                ) from None
            m.parts.remove(part)
            m.save()
            if isinstance(err, APIStatusError) and err.status in (404, 405):
                raise _not_supported(self.caller.base_url, err, "POST /messages/batches") from None
            raise
        _update(part, message_batches.as_batch(self._answer(response)), created=True)
        m.save()  # a crash after this still knows every part created so far
        self._adopt(part)

    def _end_hold(self, part: Part) -> None:
        """Release ``part``'s budget hold without a cost (it was never created)."""
        self.meter.release(self._adopt(part))
        part.hold, part.team_hold, part.worst_usd = None, None, 0.0

    def _lost_message(self, part: Part, n: int, parts: int, err: APIError) -> str:
        when = datetime.fromtimestamp(part.sent_at + self.lookup_grace_s, UTC)
        return (
            f"Job {self.id}: the answer to POST /batches for part {n} of {parts} was lost "
            f"({err.message}); the batch may exist on the provider, so nothing more is sent "
            f"for now. BatchJob.attach(s, {self.id!r}).refresh() looks it up by its metadata "
            f"({JOB_KEY}={self.id}, {PART_KEY}={part.label}) and adopts it; if it is still not "
            f"listed after {when:%H:%M:%S} UTC, refresh() marks it as never created, so that "
            "its rows can be sent again."
        )

    def _answer(self, response: Any) -> dict[str, Any]:
        """A provider's JSON answer, redacted of the key (an object, else BatchError)."""
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise BatchError(
                f"{self.caller.base_url} answered {response.request.method} "
                f"{response.request.url.path} with something that is not a JSON object: check "
                "that base_url points at an OpenAI-compatible Batch API."
            )
        return scrub_value(data, self.caller.settings.api_key)

    async def _look_up(self, part: Part) -> None:
        """Find an unknown part on the provider by its metadata (GET /batches, newest first)
        and adopt it; once it has gone unlisted for ``lookup_grace_s``, mark it as never
        created (``failed``, no batch id). An endpoint that cannot list batches leaves it
        unknown."""
        if self.anthropic:
            return  # Message Batches carry no metadata to find a part by: it stays unknown
        api = self.caller
        params: dict[str, Any] = {"limit": _LIST_PAGE}
        oldest = part.sent_at - _LIST_SLACK_S
        for _ in range(_LIST_PAGES):
            try:
                page = self._answer(await api.request("GET", "batches", params=params))
            except (APIError, BatchError):
                return  # cannot list: it stays unknown
            batches = page.get("data")
            if not isinstance(batches, list):
                return
            for batch in batches:
                if not isinstance(batch, dict):
                    continue
                tags = batch.get("metadata")
                if (
                    isinstance(tags, dict)
                    and tags.get(JOB_KEY) == self.id
                    and tags.get(PART_KEY) == part.label
                ):
                    _update(part, batch, created=True)
                    return
            created = [b.get("created_at") for b in batches if isinstance(b, dict)]
            stamps = [c for c in created if isinstance(c, int | float)]
            last = page.get("last_id")
            if not batches or not page.get("has_more") or not isinstance(last, str):
                break
            if stamps and min(stamps) < oldest:
                break  # older than the part: it is not further down
            params = {"limit": _LIST_PAGE, "after": last}
        if time.time() - part.sent_at >= self.lookup_grace_s:
            self._end_hold(part)
            part.status = "failed"
            part.errors = [
                f"the provider created no batch for part {part.label} ({JOB_KEY}={self.id}): "
                f"none was listed {self.lookup_grace_s:g} s after its POST /batches got no "
                "answer. job.resubmit_failed() sends its rows again."
            ]

    @classmethod
    def attach(cls, session: Core, job_id: str) -> BatchJob:
        """The job ``job_id`` from this machine's manifest (nothing is created or sent).

        >>> job = holynb.BatchJob.attach(s, "job-20261127-101500-3f9a1c")

        A job that ran on holynb's offline server of a kernel that has stopped (a restart)
        died with that server: attached from an offline session (``holynb.local_session()``),
        the rows without an answer on disk are sent to this session's local server (its
        models answer the same), as new parts of the job; from any other session it is a
        ``BatchError`` that says so.
        """
        store = job_store(session)
        try:
            manifest = Manifest.load(job_id, store)
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise BatchError(
                f"The manifest of job {job_id!r} in {store.where} cannot be read ({exc!r}); "
                "its provider batch ids are in each batch's metadata (holynb_job)."
            ) from None
        if manifest is None:
            known = [m.id for m in known_jobs(store)][-5:]
            holder = (
                "This machine"
                if isinstance(store, FileJobs)
                else store.where[:1].upper() + store.where[1:]
            )
            held = " (HOLYNB_HOME holds the manifests)" if isinstance(store, FileJobs) else ""
            raise BatchError(
                f"{holder} knows no batch job {job_id!r}{held}. Recent jobs: {known or 'none'}; "
                "s.batches() lists them all."
            )
        caller = caller_of(session)
        base_url = caller.base_url
        if server_gone(manifest):
            if not is_offline_server(caller.settings):
                raise BatchError(
                    f"Job {job_id} ran on holynb's offline server at {manifest.base_url}, which "
                    "stopped with the kernel that started it: its batches died with it. Attach "
                    "from an offline session (holynb.local_session()) to send its requests to "
                    f"the new local server, or forget it: holynb.BatchJob.forget({job_id!r})."
                )
            job = cls(session, manifest)
            default_loop().run(job._move_to(base_url))
            return job
        if manifest.base_url.rstrip("/") != base_url.rstrip("/"):
            raise BatchError(
                f"Job {job_id} was created at {manifest.base_url}, but this session talks to "
                f"{base_url}: attach with a Session(base_url={manifest.base_url!r})."
            )
        return cls(session, manifest)

    async def _move_to(self, base_url: str) -> None:
        # The offline server the job ran on is gone, with every batch and file it held: the
        # parts whose answers are not on disk end as expired, and their rows go to this
        # session's offline server as a new round (resubmit_failed).
        async with self._manifest.lock():
            m = self._reload()
            old = m.base_url
            for position, part in enumerate(m.parts):
                kept = part.status in FINAL and all(
                    file_id is None or (m.folder / f"{part.stem(position)}.{kind}.jsonl").is_file()
                    for kind, file_id in (
                        ("output", part.output_file_id),
                        ("errors", part.error_file_id),
                    )
                )
                if not kept:
                    part.status = "expired"
                    part.output_file_id = part.error_file_id = None
                    part.errors = [*part.errors, f"it died with the offline server at {old}"]
            m.base_url = base_url
            m.offline_in_process = offline_server_token(base_url) is not None
            m.save()
        await self.aresubmit_failed()

    @staticmethod
    def forget(job_id: str, *, force: bool = False, session: Core | None = None) -> None:
        """Remove job ``job_id`` from this machine (its manifest and kept files, under
        ``HOLYNB_HOME``; with ``session=`` a session with a team database, from the database):
        ``s.batches()`` no longer lists it, nothing is sent. A job still running where it can be
        followed is refused unless ``force=True`` (its batches would go on, and be billed,
        unseen): ``cancel()`` it, or wait for it.

        >>> holynb.BatchJob.forget("job-20261127-101500-3f9a1c")
        """
        store = job_store(session) if session is not None else FileJobs()
        manifest = Manifest.load(job_id, store)
        if manifest is None:
            raise BatchError(f"This machine knows no batch job {job_id!r}; s.batches() lists them.")
        running = not all(p.status in FINAL for p in manifest.parts)
        if running and not force and not server_gone(manifest):
            raise BatchError(
                f"Job {job_id} is still {job_status(manifest.parts)}: forgetting it would leave "
                "its batches running, and billed, unseen. job.cancel() or job.wait() first, or "
                "BatchJob.forget(job_id, force=True)."
            )
        store.remove(manifest.id)

    def _reload(self) -> Manifest:
        """The manifest as its store has it (call with the job's lock held): the one truth."""
        with contextlib.suppress(OSError, orjson.JSONDecodeError, KeyError, TypeError):
            found = Manifest.load(self.id, self._manifest.store)
            if found is not None:
                self._manifest = found
        return self._manifest

    # -- where it stands ------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """Our id for the whole job (in every part's metadata as ``holynb_job``)."""
        return self._manifest.id

    @property
    def batch_ids(self) -> list[str]:
        """The provider's id of each part it is known to have created, in order of creation."""
        return [p.batch_id for p in self._manifest.parts if p.created]

    @property
    def status(self) -> str:
        """The job's status as of the last refresh, lower case (see ``job_status``)."""
        return job_status(self._manifest.parts)

    @property
    def done(self) -> bool:
        """Whether every part is final (completed, failed, expired or cancelled)."""
        return all(p.status in FINAL for p in self._manifest.parts)

    @property
    def counts(self) -> BatchCounts:
        """Requests over every part as of the last refresh."""
        return job_counts(self._manifest.parts)

    @property
    def parts(self) -> pd.DataFrame:
        """One row per provider batch: id, round, status, counts and file ids."""
        import pandas as pd

        rows = [
            {
                "batch_id": p.batch_id or None,
                "round": p.round,
                "label": p.label,
                "status": p.status,
                "requests": len(p.rows),
                "completed": p.completed,
                "failed": p.failed,
                "output_file_id": p.output_file_id,
                "error_file_id": p.error_file_id,
                "errors": "; ".join(p.errors) or None,
            }
            for p in self._manifest.parts
        ]
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        c = self.counts
        return (
            f"BatchJob({self.id!r}, status={self.status!r}, parts={len(self._manifest.parts)}, "
            f"completed={c.completed}/{c.total}, failed={c.failed})"
        )

    async def arefresh(self) -> BatchJob:
        """Ask the provider where every unfinished part stands (async)."""
        async with self._manifest.lock():
            await self._refresh()
        return self

    async def _refresh(self) -> None:
        m = self._reload()
        api = self.caller
        if m.budget is not None:  # under the lock: no part of it is being held or sent now
            running = {p.team_hold for p in m.parts if not p.recorded and p.team_hold is not None}
            self.meter.end_stray_batch_holds(JOB_OWNER + m.id, running)
        try:
            for part in m.parts:
                if part.status == UNKNOWN:
                    await self._look_up(part)  # adopted: read its state at once, below
                if part.created and part.status not in FINAL:
                    batch_id = checked_id(part.batch_id, "batch id")
                    if self.anthropic:
                        answer = await api.request("GET", f"{message_batches.PATH}/{batch_id}")
                        _update(part, message_batches.as_batch(self._answer(answer)))
                        continue
                    answer = await api.request("GET", f"batches/{batch_id}")
                    _update(part, self._answer(answer))
        finally:
            m.save()

    def refresh(self) -> BatchJob:
        """Ask the provider where every unfinished part stands (an ``unknown`` part is looked
        up by its metadata); returns the job."""
        return default_loop().run(self.arefresh())

    def wait(
        self, poll_s: float | None = None, timeout_s: float | None = None, progress: bool = True
    ) -> BatchJob:
        """Poll until every part is final, with a progress bar of finished requests.

        ``poll_s`` defaults to 0.1 s for a local endpoint and grows from 5 s to 60 s otherwise.
        The kernel's Interrupt (Ctrl+C) stops waiting and leaves the batch running: wait again,
        or ``BatchJob.attach(s, job.id)`` after a restart. ``timeout_s`` raises BatchError when
        it passes (the batch keeps running).
        """
        from holynb.progress import progress_bar

        interval = poll_s or (0.1 if self.caller.is_local else 5.0)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        bar = progress_bar(
            total=self.counts.total, desc=f"batch {self.id}", unit="req", disable=not progress
        )
        requests = self._manifest.read_requests() if progress else []
        spend = Spend(row_worst(self.meter.bounds, requests))
        read: set[int] = set()  # the parts whose rows are in spend.costs
        unrecorded = False  # said once that the ledger could not take them
        if progress:
            self._show(bar, spend, read)  # the most it can cost, before the first poll
        try:
            while True:
                with contextlib.suppress(*_TRANSIENT):  # a failed poll: the next one will tell
                    self.refresh()
                    ended = {i for i, p in enumerate(self._manifest.parts) if p.status in FINAL}
                    if ended - read:  # read what ended: its rows enter the ledger now
                        try:
                            spend.costs.update(default_loop().run(self._read_ended(ended - read)))
                            read |= ended
                        except StoreError as err:  # held and unrecorded: results() tries again
                            unrecorded = unrecorded or _warn_unrecorded(self.id, err)
                if progress:
                    self._show(bar, spend, read)
                if self.done:
                    return self
                stuck = self._unfindable()
                if stuck is not None:
                    raise BatchError(stuck)
                if deadline is not None and time.monotonic() >= deadline:
                    raise BatchError(
                        f"Job {self.id} is still {self.status} after {timeout_s:g} s; it keeps "
                        "running: call job.wait() again later."
                    )
                pause = interval if deadline is None else min(interval, deadline - time.monotonic())
                time.sleep(max(pause, 0.0))
                if poll_s is None and not self.caller.is_local:
                    interval = min(interval * 1.5, 60.0)
        except KeyboardInterrupt:
            print(
                f"Stopped waiting; job {self.id} is still {self.status} on the provider. "
                f"Call job.wait() again, or BatchJob.attach(s, {self.id!r}) after a restart.",
                file=sys.stderr,
            )
            return self
        finally:
            bar.close()

    def _show(self, bar: Any, spend: Spend, read: set[int]) -> None:
        """Where the job stands on ``wait``'s bar: requests finished, status, money (the
        rows of the parts not ``read`` yet count at their worst)."""
        c = self.counts
        bar.total, bar.n = c.total, c.completed + c.failed
        parts = enumerate(self._manifest.parts)
        money = spend.postfix(r for i, p in parts if i not in read for r in p.rows)
        bar.set_postfix_str(f"{self.status}, {c.failed} failed, {money}", refresh=True)

    def _unfindable(self) -> str | None:
        """Why waiting could never end, or None: every unfinished part is a Message Batch whose
        create got no answer (it carries no metadata to be found by, so it stays unknown)."""
        running = [p for p in self._manifest.parts if p.status not in FINAL]
        if not self.anthropic or not running or any(p.status != UNKNOWN for p in running):
            return None
        sent = datetime.fromtimestamp(min(p.sent_at for p in running), UTC)
        return (
            f"Job {self.id}: {len(running)} part(s), {sum(len(p.rows) for p in running)} "
            f"requests, got no answer when created at {sent:%Y-%m-%d %H:%M:%S} UTC, and "
            "Anthropic's Message Batches carry no metadata to find them by, so holynb will not "
            "send those rows again on its own (you could pay twice). Look in the Anthropic "
            "console for a batch of that size created then; if there is none, "
            f"holynb.BatchJob.forget({self.id!r}, force=True) and send them again. What "
            "finished is in job.results(partial=True)."
        )

    # -- results --------------------------------------------------------------------------------

    async def _file(self, part: Part, position: int, kind: str, file_id: str | None) -> bytes:
        """A part's output or error file, downloaded once and kept (redacted of the key)
        under a name holynb chose."""
        if file_id is None:
            return b""
        secret = self.caller.settings.api_key
        path = self._manifest.folder / f"{part.stem(position)}.{kind}.jsonl"
        if path.is_file():
            return scrub_lines(path.read_bytes(), secret)  # kept before redaction existed
        file_id = checked_id(file_id, "file id")
        where = f"files/{file_id}/content"
        if self.anthropic:  # a Message Batch's results, by its own id
            where = f"{message_batches.PATH}/{checked_id(part.batch_id, 'batch id')}/results"
        data = (await self.caller.request("GET", where)).content
        data = scrub_lines(data, secret)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_bytes(data)
        partial.replace(path)  # a crash mid-write never leaves a cut file to trust later
        return data

    async def _outcomes(
        self, only: set[int] | None = None
    ) -> tuple[dict[int, Outcome | str], dict[int, int], dict[int, Any]]:
        """Every row's outcome, and each final part's results entered in the ledger once
        (call with the job's lock held, after ``_refresh``); ``only``: those parts alone."""
        outcomes: dict[int, Outcome | str] = {}
        attempts: dict[int, int] = {}
        costs: dict[int, float | None] = {}
        requests: list[bytes] | None = None
        m = self._manifest
        for position, part in enumerate(m.parts):
            if only is not None and position not in only:
                continue
            if part.created:
                for pos in part.rows:
                    attempts[pos] = attempts.get(pos, 0) + 1
            if part.status not in FINAL:
                why = "may exist on the provider (looked up by refresh())"
                state = why if part.status == UNKNOWN else f"is {part.status}"
                for pos in part.rows:
                    outcomes.setdefault(
                        pos, f"Pending: batch {part.batch_id or part.label} {state}"
                    )
                continue
            got_lines: list[Outcome] = []
            lost = 0
            for kind, file_id in (("output", part.output_file_id), ("errors", part.error_file_id)):
                name = f"the {kind} file of batch {part.batch_id}"
                data = await self._file(part, position, kind, file_id)
                read = message_batches.outcome if self.anthropic else None
                found_here, lost_here = read_outcomes(data, m.model, name, read)
                got_lines += found_here
                lost += lost_here
            found: set[int] = set()
            carried = set(part.rows)
            records: list[CallRecord] = []
            for got in got_lines:
                row = position_of(got.custom_id)
                if row is None or row not in carried or row in found:
                    continue
                pos = row
                found.add(pos)
                outcomes[pos] = got
                if got.result is not None:
                    result = got.result
                    costs[pos] = self.meter.prices.cost(result.model, result.usage, batch=True)
                if not part.recorded and got.charged:
                    if requests is None:
                        requests = m.read_requests()
                    records.append(self._record(got, costs.get(pos), requests[pos]))
            for pos in part.rows:
                if pos not in found:
                    outcomes[pos] = missing(part, lost)
            if not part.recorded:
                self.meter.record_batch(
                    records, self._adopt(part), budget=m.budget, once=part.key(m.id)
                )
                part.recorded = True
                m.save()
        return outcomes, attempts, costs

    def _record(self, got: Outcome, cost: float | None, request: bytes) -> CallRecord:
        tag = self.id
        if got.result is not None:
            return CallRecord.from_result(got.result.with_cost(cost), kind="batch", tag=tag)
        model = orjson.loads(request)["body"].get("model") or self._manifest.model
        spent = None if got.unreadable else 0.0  # an unreadable line's cost is unknown
        failed = ChatResult(text="", model=model, usage=Usage(), cost_usd=spent)
        return CallRecord.from_result(failed, kind="batch", tag=tag, error=got.error)

    async def aresults(self, partial: bool = False) -> pd.DataFrame:
        """The results frame (async); see ``results``."""
        async with self._manifest.lock():
            await self._refresh()
            if not self.done and not partial:
                c = self.counts
                raise BatchError(
                    f"Job {self.id} is {self.status} ({c.completed + c.failed}/{c.total} "
                    "finished): call job.wait() first, or job.results(partial=True) for what "
                    "is final so far."
                )
            outcomes, attempts, costs = await self._outcomes()
        return frame(self._manifest, outcomes, attempts, costs, self._answer_schema())

    async def _read_ended(self, parts: set[int]) -> dict[int, float | None]:
        """The cost of each row of ``parts`` (positions of parts that ended), those parts
        entered in the ledger once (as ``results`` does)."""
        async with self._manifest.lock():
            self._reload()
            return (await self._outcomes(only=parts))[2]

    def _answer_schema(self) -> Any:
        # As given to s.batch in this kernel; after attach, the JSON schema from the manifest.
        schema = self._schema if self._schema is not None else self._manifest.schema
        if schema is None:
            return None
        from holynb.structured import AnswerSchema

        return AnswerSchema.of(schema)

    def results(self, partial: bool = False) -> pd.DataFrame:
        """Every input row in input order, with the input's index, shaped like ``s.map``'s
        frame plus ``custom_id``: answers where the batch gave one, failed, expired or
        cancelled rows with their error. Each answered or failed request enters the ledger
        once (``kind="batch"``, cost at batch prices), however many objects or processes read
        the job. A line of the output that cannot be read fails only its own row. Downloads
        are kept beside the manifest, redacted of the API key. ``partial=True`` returns what
        is final while parts still run. A job created with ``schema=`` gets one column per
        field of the answer, as ``map`` does; an answer that does not fit is that row's error
        (no repair round trip in a batch)."""
        return default_loop().run(self.aresults(partial))

    # -- acting on it ---------------------------------------------------------------------------

    async def acancel(self) -> BatchJob:
        """Ask the provider to cancel every unfinished part (async)."""
        api = self.caller
        async with self._manifest.lock():
            m = self._reload()
            try:
                for part in m.parts:
                    if part.status in FINAL or part.status in ("cancelling", UNKNOWN):
                        continue
                    batch_id = checked_id(part.batch_id, "batch id")
                    if self.anthropic:
                        where = f"{message_batches.PATH}/{batch_id}/cancel"
                        answer = self._answer(await api.request("POST", where))
                        _update(part, message_batches.as_batch(answer))
                        continue
                    _update(
                        part, self._answer(await api.request("POST", f"batches/{batch_id}/cancel"))
                    )
            finally:
                m.save()
        return self

    def cancel(self) -> BatchJob:
        """Cancel every unfinished part (they pass through ``cancelling``); what finished
        before stays in the results. A part whose creation is still ``unknown`` cannot be
        cancelled until ``refresh()`` has found it."""
        return default_loop().run(self.acancel())

    async def aresubmit_failed(self) -> BatchJob:
        """Send again the rows without an answer (async); see ``resubmit_failed``."""
        async with self._manifest.lock():
            await self._refresh()
            m = self._manifest
            unknown = [p.label for p in m.parts if p.status == UNKNOWN]
            if unknown:
                raise BatchError(
                    f"Job {self.id}: the outcome of part(s) {', '.join(unknown)} is unknown (their "
                    "POST /batches got no answer); they may exist on the provider, so nothing is "
                    "sent. job.refresh() looks them up by their metadata; resubmit once it has "
                    "found them or marked them as never created."
                )
            if not self.done:
                raise BatchError(
                    f"Job {self.id} is still {self.status}: wait() (or cancel()) before "
                    "resubmitting."
                )
            outcomes, _, _ = await self._outcomes()
            todo = [
                pos
                for pos in range(len(m.texts))
                if not (isinstance(got := outcomes.get(pos), Outcome) and got.result is not None)
            ]
            if not todo:
                return self
            encoded = m.read_requests()
            chosen = [encoded[pos] for pos in todo]
            groups = split_lines(chosen, m.max_requests_per_file, m.max_bytes_per_file)
            groups = [[todo[i] for i in group] for group in groups]
            round_ = max(p.round for p in m.parts) + 1 if m.parts else 0
            bodies = [orjson.loads(encoded[i])["body"] for i in todo]
            at = {pos: i for i, pos in enumerate(todo)}
            holds = self.meter.hold_batch(
                [[bodies[at[pos]] for pos in group] for group in groups], JOB_OWNER + m.id
            )
            await self._send(groups, encoded, round_, holds)
        return self

    def resubmit_failed(self) -> BatchJob:
        """Send again only the rows that failed, expired, were cancelled or never sent, as new
        parts of this job; ``results()`` then shows their new answers. Refused while a part's
        creation is unknown (it may exist on the provider); two calls never send a row twice."""
        return default_loop().run(self.aresubmit_failed())


def job_store(core: Core | None) -> JobStore:
    """Where ``core``'s jobs live: its team database when it has one, else this machine's
    folders under ``HOLYNB_HOME``."""
    log = caller_of(core).meter.store if core is not None else None
    shared = log.job_store() if log is not None else None
    return shared if shared is not None else FileJobs()


def _refuse_a_twin(base_url: str, digest: str, store: JobStore) -> None:
    """Refuse requests identical to those of a job whose creation is unknown: they may
    already exist on the provider."""
    for m in known_jobs(store):
        same = m.requests_sha256 == digest and m.base_url.rstrip("/") == base_url.rstrip("/")
        if same and any(p.status == UNKNOWN for p in m.parts):
            raise BatchError(
                f"Job {m.id} holds these same requests and may already exist on the provider "
                f"(its POST /batches got no answer); nothing was sent. BatchJob.attach(s, "
                f"{m.id!r}).refresh() looks it up."
            )


def _with_images(
    caller: Caller,
    parsed: PromptSet,
    system: str | None,
    preset: str | ImagePreset | None,
) -> list[tuple[Prompt, str | None]]:
    """Each row's prompt and system message, with its images prepared and attached; raises
    ImageError naming every row whose image cannot be sent (nothing is uploaded then)."""
    sent: list[tuple[Prompt, str | None]] = []
    bad: list[tuple[Any, ImageError]] = []
    for label, prompt, own in zip(parsed.labels, parsed.prompts, parsed.images, strict=True):
        try:
            sent.append(caller.with_images(prompt, system, own, preset))
        except ImageError as err:
            bad.append((label, err))
    if bad:
        shown = "\n".join(f"  row {label!r}: {err}" for label, err in bad[:_SHOWN_BAD_ROWS])
        more = len(bad) - _SHOWN_BAD_ROWS
        tail = f"\n  ... and {more} more rows." if more > 0 else ""
        raise ImageError(
            f"{len(bad)} of {len(parsed.prompts)} rows have an image that cannot be sent; the "
            f"batch was not created and nothing was uploaded. Fix or drop these rows:\n{shown}"
            f"{tail}",
            name=bad[0][1].name,
            size_bytes=bad[0][1].size_bytes,
        )
    return sent


def _update(part: Part, batch: dict[str, Any], *, created: bool = False) -> None:
    """``part`` as the provider's batch object (already redacted) describes it. Its id names
    the part only when it is created or adopted (``created``); later answers must carry the
    same id. Every id is checked before it is kept; a final status and the file ids are
    taken from ``GET /batches/{id}`` only, never from the answer that created it."""
    answered = batch.get("id")
    if created:
        part.batch_id = checked_id(answered, "batch id")
    elif answered is not None and answered != part.batch_id:
        raise BatchError(
            f"Asked for batch {part.batch_id}, the provider answered batch id "
            f"{str(answered)[:80]!r}: holynb keeps the batch it asked for. Check base_url."
        )
    status = normalise_status(batch.get("status"))
    if created and (status in FINAL or not status):
        status = "validating"  # the first refresh reads the final state and its files
    part.status = status
    if not created:
        for key in ("output_file_id", "error_file_id"):
            value = batch.get(key)
            if value is not None:
                setattr(part, key, checked_id(value, "file id"))
    counts = batch.get("request_counts")
    counts = counts if isinstance(counts, dict) else {}
    part.total = _count(counts.get("total"))
    part.completed = _count(counts.get("completed"))
    part.failed = _count(counts.get("failed"))
    errors = batch.get("errors")
    data = errors.get("data") if isinstance(errors, dict) else None
    part.errors = [
        f"line {e.get('line')}: {e.get('message') or e.get('code')}"
        if e.get("line")
        else str(e.get("message") or e.get("code"))
        for e in (data if isinstance(data, list) else [])
        if isinstance(e, dict)
    ] or part.errors


def _count(value: Any) -> int:
    """A request count from the provider (0 for anything that is not a count)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _warn_unrecorded(job_id: str, err: StoreError) -> bool:
    warnings.warn(
        f"The parts of job {job_id} that ended could not be entered in the ledger ({err}); "
        "they stay unrecorded and held, and job.results() records them once it can. "
        "Waiting goes on.",
        StoreWarning,
        stacklevel=3,
    )
    return True


def job_status(parts: list[Part]) -> str:
    """One status for several parts: while any part runs, the earliest stage among the running
    parts (``cancelling`` first); once all are final, the worst final status (failed, expired,
    cancelled, then completed)."""
    statuses = [p.status for p in parts]
    if not statuses:
        return "failed"
    running = [s for s in statuses if s not in FINAL]
    if running:
        if UNKNOWN in running:
            return UNKNOWN
        if "cancelling" in running:
            return "cancelling"
        known = [s for s in _RUNNING_ORDER if s in running]
        return known[0] if known else running[0]
    return next(s for s in _FINAL_ORDER if s in statuses)


def job_counts(parts: list[Part]) -> BatchCounts:
    """Requests summed over ``parts`` (a part not counted yet counts its rows as its total)."""
    return BatchCounts(
        total=sum(max(p.total, len(p.rows)) for p in parts),
        completed=sum(p.completed for p in parts),
        failed=sum(p.failed for p in parts),
    )


def server_gone(m: Manifest) -> bool:
    """Whether job ``m`` ran on holynb's offline server of a process (a kernel) that has
    stopped: none runs at its address in this process and nothing listens there (a loopback
    connect, no request), so its batches died with it."""
    if not m.offline_in_process or offline_server_token(m.base_url) is not None:
        return False
    return not _listening(m.base_url)


def _listening(base_url: str) -> bool:
    import socket
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(base_url)
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), 0.2):
            return True
    except (OSError, ValueError):
        return False


def jobs_frame(core: Core | None = None) -> pd.DataFrame:
    """Every batch job ``core``'s store knows (``job_store``: the team database, else this
    machine), newest first, as last seen (nothing is sent); ``followable`` is False for a job
    whose offline server is gone (``server_gone``)."""
    import pandas as pd

    rows = []
    for m in known_jobs(job_store(core)):
        c = job_counts(m.parts)
        rows.append(
            {
                "job_id": m.id,
                "user": m.user,
                "created_at": m.created_at,
                "base_url": m.base_url,
                "model": m.model,
                "status": job_status(m.parts),
                "requests": len(m.texts),
                "parts": len(m.parts),
                "completed": c.completed,
                "failed": c.failed,
                "followable": not server_gone(m),
            }
        )
    columns = ["job_id", "user", "created_at", "base_url", "model", "status", "requests", "parts"]
    return (
        pd.DataFrame(rows, columns=[*columns, "completed", "failed", "followable"])
        .iloc[::-1]
        .reset_index(drop=True)
    )
