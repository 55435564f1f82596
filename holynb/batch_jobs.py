"""``BatchJob``: many prompts through the provider's Batch API (``/v1/files`` + ``/v1/batches``).

One job is one or more provider batches ("parts": a file holds at most 50,000 requests and
200 MB). Each part carries our job id in its ``metadata``; a manifest under ``HOLYNB_HOME``
remembers the job so ``BatchJob.attach(s, job_id)`` finds it after a kernel restart. Statuses
are normalised to lower case (some relays answer ``COMPLETED``). Results join the output and
error files back onto the input rows by ``custom_id`` and enter the ledger at batch prices.

>>> job = s.batch(df, template="Classify: {review}", model="gpt-4.1-mini")
>>> job.wait()              # progress bar; Interrupt stops waiting, not the batch
>>> out = job.results()     # like s.map's frame, plus custom_id
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from holynb._loop import default_loop
from holynb.batch_files import (
    ENDPOINT,
    MAX_BYTES_PER_FILE,
    MAX_REQUESTS_PER_FILE,
    PromptRows,
    custom_id,
    encode_lines,
    line_problems,
    position_of,
    prompt_rows,
    request_line,
    split_lines,
)
from holynb.batch_manifest import Manifest, Part, known_jobs, new_job_id, part_key
from holynb.batch_results import Outcome, frame, missing, outcome, read_lines
from holynb.budget import JOB_OWNER
from holynb.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    BatchError,
    BatchNotSupportedError,
    ConfigurationError,
    ImageError,
    RateLimitError,
    ServerError,
)
from holynb.ledger import CallRecord
from holynb.results import ChatResult, Usage

if TYPE_CHECKING:
    import pandas as pd

    from holynb.images import ImagePreset
    from holynb.session import Prompt, Session

COMPLETION_WINDOW = "24h"
MAX_METADATA_PAIRS = 16
_SHOWN_BAD_ROWS = 20  # rows named in the error when images cannot be sent
JOB_KEY, PART_KEY = "holynb_job", "holynb_part"
FINAL = frozenset({"completed", "failed", "expired", "cancelled"})
_RUNNING_ORDER = ("validating", "in_progress", "finalizing")
_FINAL_ORDER = ("failed", "expired", "cancelled", "completed")
_TRANSIENT = (APIConnectionError, ServerError, RateLimitError)


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


def _not_supported(session: Session, err: APIStatusError, what: str) -> BatchNotSupportedError:
    return BatchNotSupportedError(
        f"{session.base_url} has no Batch API: {what} answered HTTP {err.status}.",
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
    """

    def __init__(self, session: Session, manifest: Manifest, schema: Any = None) -> None:
        self.session = session
        self._manifest = manifest
        self._schema = schema  # schema= as given (a pydantic model validates as itself)
        for part in manifest.parts:  # reattached: its unrecorded parts are held again
            if not part.recorded:
                session._adopt_batch_hold(part.key(manifest.id), part.worst_usd, part.hold)

    # -- creating and finding jobs --------------------------------------------------------------

    @classmethod
    async def acreate(
        cls,
        session: Session,
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
    ) -> BatchJob:
        """Build, check, split and upload the requests, and create one batch per part.
        ``schema`` asks every request for ``response_format`` ``json_schema``; ``images`` (one
        entry per prompt, as for ``map``) go into each request's body, prepared by
        ``image_preset``. Any bad or oversized image refuses the whole job before anything is
        uploaded, naming every row concerned."""
        metadata = dict(metadata or {})
        if len(metadata) > MAX_METADATA_PAIRS - 2:
            raise ConfigurationError(
                f"metadata has {len(metadata)} pairs; a batch takes {MAX_METADATA_PAIRS} and "
                f"holynb uses 2 ({JOB_KEY}, {PART_KEY}): keep at most {MAX_METADATA_PAIRS - 2}."
            )
        params = dict(params or {})
        kept_schema = None  # what the manifest keeps of schema= (JSON), for attach
        if schema is not None:
            from holynb.structured import AnswerSchema

            if "response_format" in params:
                raise TypeError("Give schema= or response_format=, not both: schema= sets it.")
            spec = AnswerSchema.of(schema)
            params["response_format"] = spec.response_format()
            kept_schema = {"name": spec.name, "schema": spec.schema}
        rows = prompt_rows(prompts, template)
        if not rows.prompts:
            raise ConfigurationError("There are no prompts to send.")
        sent = _with_images(session, prompts, rows, system, images, image_preset)
        bodies = [
            session._body(p, model, own_system, temperature, max_tokens, dict(params))
            for p, own_system in sent
        ]
        encoded = encode_lines(request_line(custom_id(i), b) for i, b in enumerate(bodies))
        problems = line_problems(encoded)
        if problems:
            shown = "; ".join(f"line {n} ({cid}): {what}" for n, cid, what in problems[:5])
            raise ConfigurationError(f"The batch file would be refused: {shown}.")
        groups = split_lines(encoded, max_requests_per_file, max_bytes_per_file)
        job_id = new_job_id()
        holds = session._hold_batch([[bodies[i] for i in g] for g in groups], JOB_OWNER + job_id)
        manifest = Manifest(
            id=job_id,
            base_url=session.base_url,
            model=bodies[0]["model"],
            created_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
            index=rows.index,
            index_name=rows.index_name,
            texts=rows.texts,
            metadata=metadata,
            max_requests_per_file=max_requests_per_file,
            max_bytes_per_file=max_bytes_per_file,
            schema=kept_schema,
        )
        job = cls(session, manifest, schema)
        try:
            manifest.write_requests(encoded)
            manifest.save()
            await job._send(groups, encoded, round_=0, holds=holds)
        except BatchNotSupportedError:
            if not manifest.parts:  # nothing was created anywhere: leave no trace
                shutil.rmtree(manifest.folder, ignore_errors=True)
            raise
        except APIError as err:
            if not manifest.parts:
                shutil.rmtree(manifest.folder, ignore_errors=True)
                raise
            raise BatchError(
                f"Job {manifest.id}: {len(manifest.parts)} of {len(groups)} parts were created, "
                f"then: {err.message} Once they finish, BatchJob.attach(s, {manifest.id!r})"
                ".resubmit_failed() sends the rest."
            ) from err
        return job

    async def _send(
        self,
        groups: list[list[int]],
        encoded: list[bytes],
        round_: int,
        holds: list[tuple[int | None, float]],
    ) -> None:
        """Upload and create one batch per group; the holds of parts not created are
        released (the budget no longer counts them)."""
        try:
            await self._send_parts(groups, encoded, round_, holds)
        except BaseException:
            created = {p.key(self.id) for p in self._manifest.parts}
            for rows, (hold, _) in zip(groups, holds, strict=True):
                if part_key(self.id, round_, rows) not in created:
                    self.session._release(hold)
            raise

    async def _send_parts(
        self,
        groups: list[list[int]],
        encoded: list[bytes],
        round_: int,
        holds: list[tuple[int | None, float]],
    ) -> None:
        client = self.session._client
        m = self._manifest
        for n, (rows, (hold, worst)) in enumerate(zip(groups, holds, strict=True), start=1):
            name = f"{m.id}-r{round_}-p{n}.jsonl"
            content = b"".join(encoded[i] for i in rows)
            try:
                response = await client.send(
                    "POST",
                    "files",
                    files={"file": (name, content, "application/jsonl")},
                    data={"purpose": "batch"},
                )
            except APIStatusError as err:
                if err.status in (404, 405):
                    raise _not_supported(self.session, err, "POST /files") from None
                raise
            file_id = response.json()["id"]
            tags = {JOB_KEY: m.id, PART_KEY: f"{round_}:{n}/{len(groups)}"}
            request = {
                "input_file_id": file_id,
                "endpoint": ENDPOINT,
                "completion_window": COMPLETION_WINDOW,
                "metadata": {**m.metadata, **tags},
            }
            try:
                response = await client.send("POST", "batches", json=request)
            except APIStatusError as err:
                if err.status in (404, 405):
                    with contextlib.suppress(APIError):  # leave nothing behind at the provider
                        await client.send("DELETE", f"files/{file_id}")
                    raise _not_supported(self.session, err, "POST /batches") from None
                raise
            part = Part(
                batch_id="",
                input_file_id=file_id,
                rows=rows,
                round=round_,
                worst_usd=worst,
                hold=hold,
            )
            _update(part, response.json())
            m.parts.append(part)
            m.save()  # a crash after this still knows every part created so far
            self.session._adopt_batch_hold(part.key(m.id), worst, hold)

    @classmethod
    def attach(cls, session: Session, job_id: str) -> BatchJob:
        """The job ``job_id`` from this machine's manifest (nothing is created or sent).

        >>> job = holynb.BatchJob.attach(s, "job-20261127-101500-3f9a1c")
        """
        try:
            manifest = Manifest.load(job_id)
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise BatchError(
                f"The manifest of job {job_id!r} under HOLYNB_HOME cannot be read ({exc!r}); "
                "its provider batch ids are in each batch's metadata (holynb_job)."
            ) from None
        if manifest is None:
            known = [m.id for m in known_jobs()][-5:]
            raise BatchError(
                f"This machine knows no batch job {job_id!r} (HOLYNB_HOME holds the manifests). "
                f"Recent jobs: {known or 'none'}; s.batches() lists them all."
            )
        if manifest.base_url.rstrip("/") != session.base_url.rstrip("/"):
            raise BatchError(
                f"Job {job_id} was created at {manifest.base_url}, but this session talks to "
                f"{session.base_url}: attach with a Session(base_url={manifest.base_url!r})."
            )
        return cls(session, manifest)

    # -- where it stands ------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """Our id for the whole job (in every part's metadata as ``holynb_job``)."""
        return self._manifest.id

    @property
    def batch_ids(self) -> list[str]:
        """The provider's id of each part, in order of creation."""
        return [p.batch_id for p in self._manifest.parts]

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
                "batch_id": p.batch_id,
                "round": p.round,
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
            f"BatchJob({self.id!r}, status={self.status!r}, parts={len(self.batch_ids)}, "
            f"completed={c.completed}/{c.total}, failed={c.failed})"
        )

    async def arefresh(self) -> BatchJob:
        """Ask the provider where every unfinished part stands (async)."""
        client = self.session._client
        for part in self._manifest.parts:
            if part.status in FINAL:
                continue
            _update(part, (await client.send("GET", f"batches/{part.batch_id}")).json())
        self._manifest.save()
        return self

    def refresh(self) -> BatchJob:
        """Ask the provider where every unfinished part stands; returns the job."""
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
        from tqdm.auto import tqdm

        interval = poll_s or (0.1 if self.session.is_local else 5.0)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        bar = tqdm(
            total=self.counts.total, desc=f"batch {self.id}", unit="req", disable=not progress
        )
        try:
            while True:
                with contextlib.suppress(*_TRANSIENT):  # a failed poll: the next one will tell
                    self.refresh()
                c = self.counts
                bar.total = c.total
                bar.n = c.completed + c.failed
                bar.set_postfix_str(f"{self.status}, {c.failed} failed", refresh=True)
                if self.done:
                    return self
                if deadline is not None and time.monotonic() >= deadline:
                    raise BatchError(
                        f"Job {self.id} is still {self.status} after {timeout_s:g} s; it keeps "
                        "running: call job.wait() again later."
                    )
                pause = interval if deadline is None else min(interval, deadline - time.monotonic())
                time.sleep(max(pause, 0.0))
                if poll_s is None and not self.session.is_local:
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

    # -- results --------------------------------------------------------------------------------

    async def _file(self, part: Part, kind: str, file_id: str | None) -> bytes:
        if file_id is None:
            return b""
        path = self._manifest.folder / f"{part.batch_id}.{kind}.jsonl"
        if path.is_file():
            return path.read_bytes()
        data = (await self.session._client.send("GET", f"files/{file_id}/content")).content
        partial = path.with_suffix(".partial")
        partial.write_bytes(data)
        partial.replace(path)  # a crash mid-write never leaves a cut file to trust later
        return data

    async def _outcomes(self) -> tuple[dict[int, Outcome | str], dict[int, int], dict[int, Any]]:
        outcomes: dict[int, Outcome | str] = {}
        attempts: dict[int, int] = {}
        costs: dict[int, float | None] = {}
        requests: list[bytes] | None = None
        m = self._manifest
        for part in m.parts:
            for pos in part.rows:
                attempts[pos] = attempts.get(pos, 0) + 1
            if part.status not in FINAL:
                for pos in part.rows:
                    outcomes.setdefault(pos, f"Pending: batch {part.batch_id} is {part.status}")
                continue
            lines = read_lines(await self._file(part, "output", part.output_file_id))
            lines += read_lines(await self._file(part, "errors", part.error_file_id))
            found: set[int] = set()
            carried = set(part.rows)
            records: list[CallRecord] = []
            for line in lines:
                row = position_of(line["custom_id"])
                if row is None or row not in carried or row in found:
                    continue
                pos = row
                found.add(pos)
                got = outcome(line, m.model)
                outcomes[pos] = got
                if got.result is not None:
                    result = got.result
                    costs[pos] = self.session.prices.cost(result.model, result.usage, batch=True)
                if not part.recorded and got.charged:
                    if requests is None:
                        requests = m.read_requests()
                    records.append(self._record(got, costs.get(pos), requests[pos]))
            for pos in part.rows:
                if pos not in found:
                    outcomes[pos] = missing(part)
            if not part.recorded:
                key = part.key(m.id)
                hold = self.session._adopt_batch_hold(key, part.worst_usd, part.hold)
                self.session._record_batch(records, hold)
                part.recorded = True
                m.save()
        return outcomes, attempts, costs

    def _record(self, got: Outcome, cost: float | None, request: bytes) -> CallRecord:
        tag = self.id
        if got.result is not None:
            return CallRecord.from_result(got.result.with_cost(cost), kind="batch", tag=tag)
        model = orjson.loads(request)["body"].get("model") or self._manifest.model
        failed = ChatResult(text="", model=model, usage=Usage(), cost_usd=0.0)
        return CallRecord.from_result(failed, kind="batch", tag=tag, error=got.error)

    async def aresults(self, partial: bool = False) -> pd.DataFrame:
        """The results frame (async); see ``results``."""
        await self.arefresh()
        if not self.done and not partial:
            c = self.counts
            raise BatchError(
                f"Job {self.id} is {self.status} ({c.completed + c.failed}/{c.total} finished): "
                "call job.wait() first, or job.results(partial=True) for what is final so far."
            )
        outcomes, attempts, costs = await self._outcomes()
        return frame(self._manifest, outcomes, attempts, costs, self._answer_schema())

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
        once (``kind="batch"``, cost at batch prices). Downloads are kept beside the manifest.
        ``partial=True`` returns what is final while parts still run. A job created with
        ``schema=`` gets one column per field of the answer, as ``map`` does; an answer that
        does not fit is that row's error (no repair round trip in a batch)."""
        return default_loop().run(self.aresults(partial))

    # -- acting on it ---------------------------------------------------------------------------

    async def acancel(self) -> BatchJob:
        """Ask the provider to cancel every unfinished part (async)."""
        client = self.session._client
        for part in self._manifest.parts:
            if part.status in FINAL or part.status == "cancelling":
                continue
            _update(part, (await client.send("POST", f"batches/{part.batch_id}/cancel")).json())
        self._manifest.save()
        return self

    def cancel(self) -> BatchJob:
        """Cancel every unfinished part (they pass through ``cancelling``); what finished
        before stays in the results."""
        return default_loop().run(self.acancel())

    async def aresubmit_failed(self) -> BatchJob:
        """Send again the rows without an answer (async); see ``resubmit_failed``."""
        await self.arefresh()
        if not self.done:
            raise BatchError(
                f"Job {self.id} is still {self.status}: wait() (or cancel()) before resubmitting."
            )
        outcomes, _, _ = await self._outcomes()
        m = self._manifest
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
        holds = self.session._hold_batch(
            [[bodies[at[pos]] for pos in group] for group in groups], JOB_OWNER + m.id
        )
        await self._send(groups, encoded, round_, holds)
        return self

    def resubmit_failed(self) -> BatchJob:
        """Send again only the rows that failed, expired, were cancelled or never sent, as new
        parts of this job; ``results()`` then shows their new answers."""
        return default_loop().run(self.aresubmit_failed())


def _with_images(
    session: Session,
    prompts: Any,
    rows: PromptRows,
    system: str | None,
    images: Any,
    preset: str | ImagePreset | None,
) -> list[tuple[Prompt, str | None]]:
    """Each row's prompt and system message, with its images prepared and attached; raises
    ImageError naming every row whose image cannot be sent (nothing is uploaded then)."""
    if images is None:
        return [(p, system) for p in rows.prompts]
    from holynb.bulk import images_per_item

    per_item = images_per_item(prompts, images, len(rows.prompts), what="batch")
    sent: list[tuple[Prompt, str | None]] = []
    bad: list[tuple[Any, ImageError]] = []
    for label, prompt, own in zip(rows.index, rows.prompts, per_item, strict=True):
        try:
            sent.append(session._with_images(prompt, system, own, preset))
        except ImageError as err:
            bad.append((label, err))
    if bad:
        shown = "\n".join(f"  row {label!r}: {err}" for label, err in bad[:_SHOWN_BAD_ROWS])
        more = len(bad) - _SHOWN_BAD_ROWS
        tail = f"\n  ... and {more} more rows." if more > 0 else ""
        raise ImageError(
            f"{len(bad)} of {len(rows.prompts)} rows have an image that cannot be sent; the "
            f"batch was not created and nothing was uploaded. Fix or drop these rows:\n{shown}"
            f"{tail}",
            name=bad[0][1].name,
            size_bytes=bad[0][1].size_bytes,
        )
    return sent


def _update(part: Part, batch: dict[str, Any]) -> None:
    part.batch_id = batch.get("id") or part.batch_id
    part.status = normalise_status(batch.get("status"))
    counts = batch.get("request_counts") or {}
    part.total = int(counts.get("total") or 0)
    part.completed = int(counts.get("completed") or 0)
    part.failed = int(counts.get("failed") or 0)
    part.output_file_id = batch.get("output_file_id") or part.output_file_id
    part.error_file_id = batch.get("error_file_id") or part.error_file_id
    errors = (batch.get("errors") or {}).get("data") or []
    part.errors = [
        f"line {e.get('line')}: {e.get('message') or e.get('code')}"
        if e.get("line")
        else str(e.get("message") or e.get("code"))
        for e in errors
        if isinstance(e, dict)
    ] or part.errors


def job_status(parts: list[Part]) -> str:
    """One status for several parts: while any part runs, the earliest stage among the running
    parts (``cancelling`` first); once all are final, the worst final status (failed, expired,
    cancelled, then completed)."""
    statuses = [p.status for p in parts]
    if not statuses:
        return "failed"
    running = [s for s in statuses if s not in FINAL]
    if running:
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


def jobs_frame() -> pd.DataFrame:
    """Every batch job this machine knows, newest first, as last seen (nothing is sent)."""
    import pandas as pd

    rows = []
    for m in known_jobs():
        c = job_counts(m.parts)
        rows.append(
            {
                "job_id": m.id,
                "created_at": m.created_at,
                "base_url": m.base_url,
                "model": m.model,
                "status": job_status(m.parts),
                "requests": len(m.texts),
                "parts": len(m.parts),
                "completed": c.completed,
                "failed": c.failed,
            }
        )
    columns = ["job_id", "created_at", "base_url", "model", "status", "requests", "parts"]
    return (
        pd.DataFrame(rows, columns=[*columns, "completed", "failed"])
        .iloc[::-1]
        .reset_index(drop=True)
    )
