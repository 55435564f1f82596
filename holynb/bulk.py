"""Bulk work: many prompts concurrently, one row per prompt, crash-safe with a checkpoint.

``Session.map`` / ``amap`` are thin entry points to ``amap`` here. The per-item core is
``MapRun``: it runs a list of ``Request`` specs (each may name its own model, so ``compare``
builds on it) with a bounded pool of workers, records one row per request whatever happens to
it, stores every finished answer in the checkpoint as it completes (keyed by its exact request,
see ``holynb.keystore``), and shows progress with tqdm.

The result frame has the input's index, in input order, and the columns
``holynb.frames.RESULT_COLUMNS``:

- ``prompt`` (the prompt as sent: the template filled in, or the message list), ``text``,
  ``ok``, ``error`` (``"Class: message"`` for a failed or refused item, else None),
  ``finish_reason``, ``model``, ``prompt_tokens``, ``completion_tokens``, ``cost_usd`` (what this
  run paid for the item: 0.0 when it came from the checkpoint or the cache), ``latency_ms``,
  ``attempts`` (0 when nothing was sent), ``cache_hit``, ``duplicate_of``.

Identical requests in one run (the same prompt and settings, e.g. a review that occurs twice) are
sent once: every other row that asked the same shares the answer, says whose in ``duplicate_of``
(the first row's label), and has ``attempts`` 0 and ``cost_usd`` 0.0; the budget holds only for
what is sent.

``dry_run=True`` returns what would be sent and its worst case instead, sending nothing (see
``holynb.dry_run``).

Resuming: items found in the checkpoint are not sent again; failed, refused and unfinished items
are. An interrupt (the kernel's Interrupt button, Ctrl-C) cancels the requests in flight and
raises ``MapInterrupted`` with the finished rows in ``.frame`` (``amap`` re-raises the
cancellation; its finished items are in the checkpoint).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from holynb.answers import ask
from holynb.cache import as_hit, is_complete
from holynb.calls.call import Call
from holynb.calls.caller import caller_of
from holynb.errors import (
    APIError,
    BudgetExceededError,
    ConfigurationError,
    HolynbError,
    MapInterrupted,
)
from holynb.frames import RESULT_COLUMNS, answer_row, failure_row, result_frame, shared_row
from holynb.keystore import AnswerStore, CallerIdentity, KeyStore, request_key
from holynb.prompts import PromptSet, read_prompts

if TYPE_CHECKING:
    import pandas as pd

    from holynb.calls.caller import Core
    from holynb.prompts import Prompt
    from holynb.results import ChatResult

__all__ = [
    "MapRun",
    "Request",
    "amap",
    "map_sync",
    "requests_for",
    "requests_from",
]


Prompts = Sequence[Any] | Any  # a list of str / message lists, a pandas Series or DataFrame
_POSTFIX_EVERY_S = 0.2
_CHUNK = 500
_STORED = ("stored",)  # a row found in the checkpoint and not read yet
_POLL_S = 0.25  # a shared job: how often to look for the answers of other processes' items
_SHARED = ("shared",)  # a row that asks what an earlier row asks: its answer is that row's


@dataclass(frozen=True, slots=True)
class Request:
    """One item of a bulk run: what to ask, and with which settings.

    >>> Request("Classify: great phone", model="gpt-4.1", max_tokens=5)
    """

    prompt: Prompt
    model: str | None = None
    system: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    images: Any = None  # this item's images: one source or a list (see holynb.images)
    image_preset: Any = None


# -- prompts in, requests out ------------------------------------------------------------------


def requests_from(
    prompts: Prompts,
    template: str | None = None,
    *,
    model: str | None = None,
    system: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    images: Any = None,
    image_preset: Any = None,
    **params: Any,
) -> tuple[list[Request], pd.Index | None]:
    """The requests for ``prompts`` and the index of the result frame (None: 0..n-1).

    ``prompts`` and ``images`` as ``holynb.prompts.read_prompts`` takes them (a list, a
    Series, a DataFrame with ``template``, records with ``template``; one image entry per
    prompt or a DataFrame's column name). Bad input raises ``ConfigurationError`` before
    anything is sent.
    """
    parsed = read_prompts(prompts, template, images=images, what="map")
    requests = requests_for(
        parsed,
        model=model,
        system=system,
        temperature=temperature,
        max_tokens=max_tokens,
        image_preset=image_preset,
        **params,
    )
    return requests, parsed.index


def requests_for(
    parsed: PromptSet,
    *,
    model: str | None = None,
    system: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    image_preset: Any = None,
    **params: Any,
) -> list[Request]:
    """One ``Request`` per prompt of ``parsed``, each with its own images and these settings."""
    common = {
        "model": model,
        "system": system,
        "temperature": temperature,
        "max_tokens": max_tokens,
        "params": params,
        "image_preset": image_preset,
    }
    return [
        Request(p, images=i, **common) for p, i in zip(parsed.prompts, parsed.images, strict=True)
    ]


# -- one run -----------------------------------------------------------------------------------


class MapRun:
    """One bulk run over ``requests``: its rows so far, its checkpoint and its progress bar.

    >>> run = MapRun(session.caller, requests, index, checkpoint="run.sqlite", concurrency=32)
    >>> frame = await run.arun()        # every row, input order
    >>> run.frame()                     # at any moment: the rows finished so far

    ``compare`` runs one ``Request`` per (prompt, model) through it; a subclass may add
    columns (``columns``, ``row``, ``failure_row``).
    """

    columns: tuple[str, ...] = RESULT_COLUMNS

    def __init__(
        self,
        caller: Core,
        requests: Sequence[Request],
        index: pd.Index | None = None,
        *,
        concurrency: int | None = None,
        checkpoint: str | os.PathLike[str] | AnswerStore | None = None,
        progress: bool = True,
        errors: str = "record",
        tag: str | None = None,
        kind: str = "map",
        description: str = "map",
        shape: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    ) -> None:
        if errors not in ("record", "raise"):
            raise ConfigurationError(f'errors must be "record" or "raise", got {errors!r}.')
        self.caller = caller_of(caller)
        self.requests = list(requests)
        self._index = index
        if index is not None and len(index) != len(self.requests):
            raise ConfigurationError("index must have one label per request.")
        limit = self.caller.settings.limits.concurrency
        if concurrency is not None and concurrency > limit:
            warnings.warn(
                f"holynb: map(concurrency={concurrency}) is capped by the session's "
                f"concurrency={limit}; create the Session with concurrency={concurrency} to "
                "send more at once.",
                stacklevel=5,  # the caller of Session.map / amap
            )
        self.concurrency = max(1, min(concurrency or limit, limit))
        self._owns_checkpoint = isinstance(checkpoint, (str, os.PathLike))
        self.checkpoint: Any = (
            _open_checkpoint(self.caller, checkpoint)
            if isinstance(checkpoint, (str, os.PathLike))
            else checkpoint
        )
        # a team database's job: items claimed, each sent by one process (holynb.team)
        self.shared = hasattr(self.checkpoint, "claim")
        self.progress = progress
        self.errors = errors
        self.tag = tag
        self.kind = kind
        self.description = description
        self.shape = shape  # the frame as the user gets it (compare: the long form)
        self._reading = threading.Lock()  # after an interrupt both threads read the rows
        self.rows: list[tuple[Any, ...] | None] = [None] * len(self.requests)
        self.counts = {"done": 0, "failed": 0, "cached": 0, "refused": 0, "shared": 0}
        self.cost_usd = 0.0  # what the answers sent cost, as far as priced
        self.unpriced = 0  # answers that used tokens of a model without a price
        self._bar: Any = None
        self._postfix_at = 0.0
        self.startup_s: float | None = None  # from arun() to the first request sent
        self.schema = _schema_of(self.requests)
        self._stored: dict[int, str] = {}  # position -> key, found in the checkpoint, not read
        self._again: list[int] = []  # positions found stored but unusable: to ask again
        self._sending: dict[int, tuple[Any, str | None]] = {}  # prompt with its images attached
        self._shared: dict[int, int] = {}  # position -> the position of the same request, sent
        self._followers: dict[int, int] = {}  # a sent position -> how many rows share it

    # -- the frame ----------------------------------------------------------------------------

    @property
    def index(self) -> pd.Index:
        """The labels of the rows: the input's index, or 0..n-1 for a list."""
        if self._index is None:
            import pandas as pd

            self._index = pd.RangeIndex(len(self.requests))
        return self._index

    def frame(self) -> pd.DataFrame:
        """The rows finished so far (every row once the run is over), in input order."""
        self._load_stored_now()
        positions = [i for i in range(len(self.rows)) if self._finished(i)]
        rows = [self._row_at(i) for i in positions]
        index = self.index if len(positions) == len(self.rows) else self.index[positions]
        frame = result_frame(rows, index, self.columns)
        if self.schema is not None:  # schema=: the answer's fields become columns
            frame = self.schema.add_columns(frame)
        return frame

    def result(self) -> pd.DataFrame:
        """The rows finished so far as the user gets them (``shape`` applied), also kept as
        the caller's ``last_map`` (``Session.last_map``)."""
        with self._reading:
            out = self.frame() if self.shape is None else self.shape(self.frame())
            self.caller.last_map = out
            return out

    def _finished(self, i: int) -> bool:
        row = self.rows[i]
        if row is _SHARED:
            row = self.rows[self._shared[i]]
        return row is not None and row is not _STORED

    def _row_at(self, i: int) -> tuple[Any, ...]:
        row = self.rows[i]
        if row is _SHARED:
            leader = self._shared[i]
            return shared_row(self.rows[leader], self.index[leader], self.columns)  # type: ignore[arg-type]
        return row  # type: ignore[return-value]

    # -- running ------------------------------------------------------------------------------

    def _bodies(self) -> tuple[list[dict[str, Any] | None], list[str | None], set[str]]:
        """Every request's body (None for a bad one: its failure row is set), its checkpoint
        key, and the keys the checkpoint holds already."""
        bodies: list[dict[str, Any] | None] = [None] * len(self.requests)
        keys: list[str | None] = [None] * len(self.requests)
        for i, req in enumerate(self.requests):
            try:
                prompt, system = self.caller.with_images(
                    req.prompt, req.system, req.images, req.image_preset
                )  # a bad image fails its own item (ImageError is a ValueError)
                if req.images is not None:
                    self._sending[i] = (prompt, system)
                bodies[i] = self.caller.body(
                    prompt, req.model, system, req.temperature, req.max_tokens,
                    sent_params(req.params),
                )  # fmt: skip
            except (TypeError, ValueError) as err:  # a bad prompt: its row says why
                self.rows[i] = self.failure_row(req, None, err, 0.0)
                self.counts["failed"] += 1
        identity = CallerIdentity.of(self.caller.settings)
        first: dict[str, int] = {}
        for i, body in enumerate(bodies):
            if body is None:
                continue
            key = request_key(body, identity)
            leader = first.setdefault(key, i)
            if leader == i:
                keys[i] = key
            else:  # the same request again: sent once, its answer shared
                self.rows[i] = _SHARED
                self._shared[i] = leader
                self._followers[leader] = self._followers.get(leader, 0) + 1
        self.counts["shared"] = len(self._shared)
        present: set[str] = set()
        if self.checkpoint is not None:
            present = self.checkpoint.present(k for k in keys if k is not None)
        return bodies, keys, present

    def plan(self, *, batch: bool = False) -> pd.DataFrame:
        """The dry run of this run: one row per request, what it would cost at most and whether
        it is stored already (see ``holynb.dry_run``); nothing is sent."""
        from holynb.dry_run import Planned, plan_frame

        try:
            bodies, keys, present = self._bodies()
        finally:
            if self._owns_checkpoint and self.checkpoint is not None:
                self.checkpoint.close()
        cache = self.caller.cache
        planned = []
        for i, req in enumerate(self.requests):
            body, row = bodies[i], self.rows[i]
            if body is None:
                error = row[RESULT_COLUMNS.index("error")] if row is not None else None
                planned.append(Planned(req.prompt, None, error=error))
                continue
            stored = keys[i] in present or (cache is not None and cache.has(body))
            shared = row is _SHARED  # the same request as an earlier row: sent once
            planned.append(Planned(req.prompt, body, cached=stored or shared))
        return plan_frame(self.caller, planned, self.index, batch=batch)

    async def arun(self) -> pd.DataFrame:
        """Run every request not yet in the checkpoint; the whole frame in input order (as
        ``result()`` gives it); an interrupt leaves the finished rows in ``result()``."""
        started = time.perf_counter()
        bodies, keys, present = self._bodies()
        if self.checkpoint is not None:
            for i, key in enumerate(keys):
                if key is not None and key in present:
                    self.rows[i] = _STORED  # read after the first requests are out
                    self._stored[i] = key
            self.counts["cached"] += len(self._stored)
        pending = [i for i, row in enumerate(self.rows) if row is None]
        self._open_bar(len(self.requests) - sum(1 + self._followers.get(i, 0) for i in pending))
        if self.shared:
            pending = list({keys[i]: i for i in reversed(pending)}.values())[::-1]  # one per key
            self.checkpoint.register([keys[i] for i in pending])

        def start(positions: list[int]) -> list[asyncio.Future[None]]:
            if self.shared:
                claims = _Claims(self.checkpoint, positions, keys, self.concurrency)

                async def worker() -> None:
                    while (i := await claims.next()) is not None:  # each to one worker
                        await self._run_item(i, bodies[i], keys[i])  # type: ignore[arg-type]

            else:
                items = iter(positions)

                async def worker() -> None:
                    for i in items:  # one shared iterator: each item is taken by one worker
                        await self._run_item(i, bodies[i], keys[i])  # type: ignore[arg-type]

            size = min(self.concurrency, len(positions))
            return [asyncio.ensure_future(worker()) for _ in range(size)]

        workers = start(pending)
        self.startup_s = time.perf_counter() - started
        try:
            await self._load_stored()
            await asyncio.gather(*workers)
            while self._again:  # stored answers that turned out unusable: asked again
                again, self._again = self._again, []
                workers = start(again)
                await asyncio.gather(*workers)
            while self.shared and (waiting := self._others(keys)):
                workers = start(waiting)  # claims that opened again (a process died)
                await asyncio.gather(*workers)
                await self._load_stored()
                if self._others(keys):
                    await asyncio.sleep(_POLL_S)
            return self.result()
        except BaseException:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            self.result()
            raise
        finally:
            if self.shared:
                self.checkpoint.flush()  # the answers stored before claims of others are freed
                with contextlib.suppress(HolynbError):  # else the lease ends the claims
                    self.checkpoint.release_mine()
            self._close_bar()
            if self._owns_checkpoint and self.checkpoint is not None:
                self.checkpoint.close()

    def _others(self, keys: list[str | None]) -> list[int]:
        """In a shared job: the items still without a row here (one position per key), after
        taking the answers other processes stored meanwhile."""
        mine = {keys[i]: row for i, row in enumerate(self.rows) if row not in (None, _STORED)}
        for i, row in enumerate(self.rows):  # a repeated prompt: its first row's answer
            if row is None and keys[i] in mine:
                self.rows[i] = mine[keys[i]]
        waiting = {keys[i]: i for i, row in enumerate(self.rows) if row is None}
        done = self.checkpoint.present(k for k in waiting if k is not None)
        for key in done:
            for i, row in enumerate(self.rows):
                if row is None and keys[i] == key:
                    self.rows[i] = _STORED
                    self._stored[i] = key
                    self.counts["cached"] += 1
                    if self._bar is not None:
                        self._bar.update(1)
        return [i for k, i in waiting.items() if k not in done]

    async def _load_stored(self) -> None:
        # The answers found in the checkpoint, read in slices while the first requests are in
        # flight, so a resume starts sending at once however much is stored.
        while self._stored:
            await asyncio.sleep(0)
            self._load_stored_now(_CHUNK)

    def _load_stored_now(self, limit: int | None = None) -> None:
        if not self._stored or self.checkpoint is None:
            return
        positions = list(self._stored)[:limit]
        found = self.checkpoint.get_many(self._stored[i] for i in positions)
        for i in positions:
            stored = found.get(self._stored.pop(i))
            if stored is None or not still_valid(self.requests[i], stored):
                # removed from the file meanwhile (e.g. cleared), unreadable, or no longer
                # valid for the request's schema: not done, asked again
                self.rows[i] = None
                self.counts["cached"] -= 1
                self._again.append(i)
                if self._bar is not None:
                    self._bar.update(-1 - self._followers.get(i, 0))
                continue
            hit = as_hit(stored, saved_usd=stored.cost_usd, latency_ms=0.0)
            self.rows[i] = self.row(self.requests[i], hit)

    async def _run_item(self, i: int, body: dict[str, Any], key: str | None) -> None:
        req = self.requests[i]
        prompt, system = self._sending.pop(i, (req.prompt, req.system))
        started = time.perf_counter()
        try:
            if req.params.get("schema") is None:  # the body built above is the call
                call = Call(body=body, kind=self.kind, tag=self.tag)
                result = await self.caller.complete(call)
            else:
                result = await ask(
                    self.caller, prompt, model=req.model, system=system,
                    temperature=req.temperature, max_tokens=req.max_tokens, tag=self.tag,
                    kind=self.kind, schema=req.params.get("schema"),
                    params={k: v for k, v in req.params.items() if k != "schema"},
                )  # fmt: skip
        except (APIError, BudgetExceededError, TypeError, ValueError) as err:
            elapsed = (time.perf_counter() - started) * 1000.0
            self.rows[i] = self.failure_row(req, body, err, elapsed)
            refused = isinstance(err, BudgetExceededError)
            self.counts["refused" if refused else "failed"] += 1
            self._tick(i)
            if self.errors == "raise":
                err.add_note(f"holynb: raised by map item {self.index[i]!r} (errors='raise').")
                raise
            return
        self.rows[i] = self.row(req, result)
        if key is not None and self.checkpoint is not None and is_complete(result):
            if self.shared:  # stored while the next calls go out; flushed before the end
                self.checkpoint.keep_soon(key, result)
            else:
                self.checkpoint.keep(key, result)
        self.counts["cached" if result.cache_hit else "done"] += 1
        self.cost_usd += result.cost_usd or 0.0
        if result.cost_usd is None and (
            result.usage.prompt_tokens or result.usage.completion_tokens
        ):
            self.unpriced += 1
        self._tick(i)

    def row(self, req: Request, r: ChatResult) -> tuple[Any, ...]:
        """The row of a finished item, in ``columns`` order (a subclass that adds columns,
        e.g. a schema's fields, extends ``columns`` and this and ``failure_row``)."""
        return answer_row(req.prompt, r)

    def failure_row(
        self, req: Request, body: dict[str, Any] | None, err: BaseException, elapsed_ms: float
    ) -> tuple[Any, ...]:
        """The row of an item that failed or was refused, in ``columns`` order."""
        message = getattr(err, "message", None) or str(err)  # SchemaValidationError's too
        error = f"{type(err).__name__}: {message}"
        partial: ChatResult | None = getattr(err, "partial", None)
        if partial is not None:
            return answer_row(req.prompt, replace(partial, interrupted=True), error=error)
        model = body["model"] if body is not None else (req.model or self.caller.settings.model)
        attempts = getattr(err, "attempts", 0) if isinstance(err, APIError) else 0
        return failure_row(req.prompt, model, error, attempts=attempts, latency_ms=elapsed_ms)

    # -- progress -----------------------------------------------------------------------------

    def _open_bar(self, initial: int) -> None:
        if not self.progress or not self.requests:
            return
        from holynb.progress import progress_bar

        self._bar = progress_bar(
            total=len(self.requests), initial=initial, desc=self.description, unit="item",
            dynamic_ncols=True, mininterval=0.2,
        )  # fmt: skip
        self._bar.set_postfix_str(self._postfix(), refresh=True)

    def _postfix(self) -> str:
        c = self.counts
        text = f"done={c['done']} failed={c['failed']} cached={c['cached']}"
        if c["refused"]:
            text += f" refused={c['refused']}"
        if c["shared"]:
            text += f" shared={c['shared']}"
        if not (c["done"] or c["cached"]):
            return text  # no answer yet: no cost to show
        if self.unpriced and not self.cost_usd:
            return text + " cost unknown"
        more = f" + {self.unpriced} without a price" if self.unpriced else ""
        text += f" cost=${self.cost_usd:.4f}{more}"
        if c["done"]:  # the answers so far, at their mean cost, for every item still to come
            left = len(self.requests) - sum(c.values())
            projected = self.cost_usd + self.cost_usd / c["done"] * max(left, 0)
            text += f" projected=${projected:.4f}"
        return text

    def _tick(self, i: int) -> None:
        if self._bar is None:
            return
        now = time.monotonic()
        if now - self._postfix_at >= _POSTFIX_EVERY_S:
            self._postfix_at = now
            self._bar.set_postfix_str(self._postfix(), refresh=False)
        self._bar.update(1 + self._followers.get(i, 0))

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix(), refresh=False)
            self._bar.close()
            self._bar = None


class _Claims:
    """The items this process claimed in a shared job (``TeamCheckpoint``), for the workers:
    claimed a few at a time, off the event loop (one statement each, over the next few keys,
    not the whole run's), the next claim made while half of the last one's items are still
    ready, so workers do not stand waiting for it; ``next`` is None once nothing is left open
    to claim."""

    def __init__(
        self, checkpoint: Any, positions: list[int], keys: list[str | None], limit: int
    ) -> None:
        self.checkpoint = checkpoint
        self.by_key = {keys[i]: i for i in positions}
        self.left = [k for k in self.by_key if k is not None]
        self.limit = limit
        self.ready: collections.deque[int] = collections.deque()
        self.claiming: asyncio.Future[None] | None = None  # the claim under way, if any

    async def next(self) -> int | None:
        """The position of the next item claimed for this process, or None."""
        while not self.ready:
            if not self.left and self.claiming is None:
                return None
            await asyncio.shield(self._claim_ahead())  # one claim at a time, for everyone
        if len(self.ready) <= self.limit // 2:
            self._claim_ahead()  # the next items, claimed while these are worked on
        return self.ready.popleft()

    def _claim_ahead(self) -> asyncio.Future[None]:
        if self.claiming is None and self.left:
            self.claiming = asyncio.ensure_future(self._claim())
            # a claim ahead that fails is made again by the worker that needs its items,
            # which then gets the error: this one's is read here, not logged as lost
            self.claiming.add_done_callback(lambda t: t.cancelled() or t.exception())
        if self.claiming is None:  # nothing left to claim: nothing to wait for
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        return self.claiming

    async def _claim(self) -> None:
        try:
            window = self.left[: 4 * self.limit]
            got = await asyncio.to_thread(self.checkpoint.claim, window, self.limit)
            if len(got) < self.limit:  # every open item of the window is claimed now
                self.left = self.left[len(window) :]
            else:
                taken = set(got)
                self.left = [k for k in self.left if k not in taken]
            self.ready.extend(self.by_key[key] for key in got)
        finally:
            self.claiming = None


def _open_checkpoint(caller: Any, checkpoint: str | os.PathLike[str]) -> AnswerStore:
    """A file, or with a team database a job of that name in it (a path object stays a file)."""
    log = caller.meter.store
    if isinstance(checkpoint, str) and log is not None:
        shared = log.shared_checkpoint(checkpoint)
        if shared is not None:
            return shared
    return KeyStore(checkpoint)


def still_valid(req: Request, stored: ChatResult) -> bool:
    """Whether a stored answer still answers ``req``: with ``schema=``, its text must pass the
    schema's validation as it is now (a pydantic model's validators may have changed while
    its JSON schema, and so the key, did not)."""
    schema = req.params.get("schema")
    if schema is None:
        return True
    from holynb.structured import AnswerSchema

    return AnswerSchema.of(schema).mismatch(stored.text) is None


def sent_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters as the request carries them (what its key is made of): ``schema``
    becomes the ``response_format`` it asks for."""
    out = {k: v for k, v in params.items() if k != "schema"}
    if params.get("schema") is not None:
        from holynb.structured import AnswerSchema

        out["response_format"] = AnswerSchema.of(params["schema"]).response_format()
    return out


def _schema_of(requests: Sequence[Request]) -> Any:
    from holynb.structured import AnswerSchema

    for req in requests:
        if req.params.get("schema") is not None:
            return AnswerSchema.of(req.params["schema"])
    return None


# -- entry points ------------------------------------------------------------------------------


def _make_run(caller: Core, prompts: Prompts, **kwargs: Any) -> MapRun:
    run_options = {
        name: kwargs.pop(name)
        for name in ("concurrency", "checkpoint", "progress", "errors", "tag")
        if name in kwargs
    }
    template = kwargs.pop("template", None)
    requests, index = requests_from(prompts, template, **kwargs)
    return MapRun(caller, requests, index, **run_options)


async def amap(caller: Core, prompts: Prompts, **kwargs: Any) -> pd.DataFrame:
    """``Session.amap``: build the requests, run them, return the frame (see the module);
    ``dry_run=True``: the dry run's frame instead, nothing sent (``holynb.dry_run``)."""
    dry_run = kwargs.pop("dry_run", False)
    run = _make_run(caller, prompts, **kwargs)
    return run.plan() if dry_run else await run.arun()


def map_sync(caller: Core, prompts: Prompts, **kwargs: Any) -> pd.DataFrame:
    """``Session.map``: ``amap`` on holynb's loop thread; an interrupt raises
    ``MapInterrupted`` with the finished rows."""
    __tracebackhide__ = True  # an interrupt shows the user's cell, not holynb's frames
    from holynb._loop import default_loop

    dry_run = kwargs.pop("dry_run", False)
    run = _make_run(caller, prompts, **kwargs)
    if dry_run:
        return run.plan()
    try:
        return default_loop().run(run.arun())
    except KeyboardInterrupt:
        raise interrupted(run, "map", "items") from None


def interrupted(run: MapRun, what: str, items: str) -> MapInterrupted:
    """The ``MapInterrupted`` of an interrupted ``run``: a short message saying where the
    finished rows are (the session's ``last_map``, the checkpoint) and the rows in ``.frame``."""
    frame = run.result()
    where = (
        f"; they are in the checkpoint {str(run.checkpoint.path)!r} too: run the same call "
        "again to continue"
        if run.checkpoint is not None
        else "; pass checkpoint='run.sqlite' to keep them across runs"
    )
    return MapInterrupted(
        f"{what} interrupted: {len(frame)} of {len(run.requests)} {items} finished. In the next "
        f"cell, s.last_map (s: your session) holds them{where}.",
        frame=frame,
    )
