"""Bulk work: many prompts concurrently, one row per prompt, crash-safe with a checkpoint.

``Session.map`` / ``amap`` are thin entry points to ``amap`` here. The per-item core is
``MapRun``: it runs a list of ``Request`` specs (each may name its own model, so ``compare``
builds on it) with a bounded pool of workers, records one row per request whatever happens to
it, stores every finished answer in the checkpoint as it completes (keyed by its exact request,
see ``holynb.keystore``), and shows progress with tqdm.

The result frame has the input's index, in input order, and the columns ``RESULT_COLUMNS``:

- ``prompt`` (the prompt as sent: the template filled in, or the message list), ``text``,
  ``ok``, ``error`` (``"Class: message"`` for a failed or refused item, else None),
  ``finish_reason``, ``model``, ``prompt_tokens``, ``completion_tokens``, ``cost_usd`` (what this
  run paid for the item: 0.0 when it came from the checkpoint or the cache), ``latency_ms``,
  ``attempts`` (0 when nothing was sent), ``cache_hit``.

Resuming: items found in the checkpoint are not sent again; failed, refused and unfinished items
are. An interrupt (the kernel's Interrupt button, Ctrl-C) cancels the requests in flight and
raises ``MapInterrupted`` with the finished rows in ``.frame`` (``amap`` re-raises the
cancellation; its finished items are in the checkpoint).
"""

from __future__ import annotations

import asyncio
import os
import string
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

from holynb.cache import as_hit, is_complete
from holynb.errors import APIError, BudgetExceededError, ConfigurationError, MapInterrupted
from holynb.keystore import CallerIdentity, KeyStore, request_key

if TYPE_CHECKING:
    import pandas as pd

    from holynb.results import ChatResult
    from holynb.session import Prompt, Session

__all__ = [
    "RESULT_COLUMNS",
    "MapRun",
    "Request",
    "amap",
    "map_sync",
    "requests_from",
    "result_frame",
]

RESULT_COLUMNS: tuple[str, ...] = (
    "prompt",
    "text",
    "ok",
    "error",
    "finish_reason",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "latency_ms",
    "attempts",
    "cache_hit",
)
"""The columns of every bulk result frame (map, compare, batch results), in this order."""

Prompts = Sequence[Any] | Any  # a list of str / message lists, a pandas Series or DataFrame
_POSTFIX_EVERY_S = 0.2
_CHUNK = 500
_STORED = ("stored",)  # a row found in the checkpoint and not read yet


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

    ``prompts``: a list (or any iterable) of strings or message lists, a pandas Series (its
    index), or a DataFrame with ``template`` naming its columns (``"Classify: {review}"``). A
    template field that is not a column raises ``ConfigurationError`` before anything is sent.
    ``images``: one entry per prompt (a list or Series; each entry one image source, a list of
    them, or None), or with a DataFrame the name of its column of images.
    """
    kind = _pandas_kind(prompts)  # pandas is imported only when the input is pandas
    index = None
    if kind == "frame":
        texts, index = _fill_frame(prompts, template), prompts.index
    elif kind == "series":
        texts, index = _fill_values(list(prompts), template, cast(Any, prompts).name), prompts.index
    elif isinstance(prompts, (str, bytes)) or not isinstance(prompts, Iterable):
        raise ConfigurationError(
            "map needs several prompts: a list of strings or message lists, a pandas Series, "
            f"or a DataFrame with template=, got {type(prompts).__name__}. For one prompt use "
            "session.chat()."
        )
    elif isinstance(prompts, Mapping):
        raise ConfigurationError(
            "map got a dict: pass a list of prompts, or pd.Series(your_dict) to keep the keys "
            "as the index."
        )
    else:
        texts = _fill_values(list(prompts), template, None)
    common = {
        "model": model,
        "system": system,
        "temperature": temperature,
        "max_tokens": max_tokens,
        "params": params,
        "image_preset": image_preset,
    }
    per_item = images_per_item(prompts, images, len(texts))
    return [Request(p, images=i, **common) for p, i in zip(texts, per_item, strict=True)], index


def images_per_item(prompts: Any, images: Any, n: int, what: str = "map") -> list[Any]:
    """``images`` as one entry per prompt (None: no image): a list or Series of entries, or
    with a DataFrame the name of its column of images. ``what`` names the call in errors."""
    if images is None:
        return [None] * n
    if isinstance(images, str) and _pandas_kind(prompts) == "frame":
        if images not in prompts.columns:
            raise ConfigurationError(
                f"images={images!r} is not a column of the DataFrame (columns: "
                f"{', '.join(map(repr, prompts.columns))}). Nothing was sent."
            )
        images = prompts[images]
    if isinstance(images, str | bytes) or not isinstance(images, Sequence | Iterable):
        images = None
    else:
        images = list(images)
    if images is None or len(images) != n:
        got = "one source" if images is None else f"{len(images)} entries"
        raise ConfigurationError(
            f"{what}'s images= needs one entry per prompt ({n}), got {got}: a list like "
            "[path1, [path2, path3], None, ...], or with a DataFrame the name of its column of "
            "images. Nothing was sent."
        )
    return [None if isinstance(i, float) and i != i else i for i in images]  # NaN: no image


def _pandas_kind(obj: Any) -> str | None:
    if not type(obj).__module__.startswith("pandas"):
        return None
    import pandas as pd

    if isinstance(obj, pd.DataFrame):
        return "frame"
    return "series" if isinstance(obj, pd.Series) else None


def _template_fields(template: str) -> list[str]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ConfigurationError(
            f"template {template!r} is not a valid format string: {err}."
        ) from None
    names = []
    for _, name, _, _ in parsed:
        if name is not None:
            names.append(name.split(".", 1)[0].split("[", 1)[0])
    return names


def _fill_frame(frame: pd.DataFrame, template: str | None) -> list[str]:
    if template is None:
        raise ConfigurationError(
            "map over a DataFrame needs template=, e.g. template='Classify: {review}' with "
            f"columns from {list(frame.columns)[:10]}; or pass one column: s.map(df['review'])."
        )
    names = _template_fields(template)
    if any(n == "" or n.isdigit() for n in names):
        raise ConfigurationError(
            f"template {template!r} has a positional field ({{}}): with a DataFrame, name the "
            f"columns, e.g. {{{frame.columns[0] if len(frame.columns) else 'review'}}}."
        )
    columns = {str(c): c for c in frame.columns}
    missing = [n for n in dict.fromkeys(names) if n not in columns]
    if missing:
        raise ConfigurationError(
            f"template {template!r} names {', '.join(repr(m) for m in missing)}, not a column "
            f"of the DataFrame (columns: {', '.join(map(repr, columns))}). Nothing was sent."
        )
    used = list(dict.fromkeys(names))
    rows = zip(*(frame[columns[n]].tolist() for n in used), strict=True) if used else None
    if rows is None:
        return [template] * len(frame)
    return [template.format_map(dict(zip(used, row, strict=True))) for row in rows]


def _fill_values(values: list[Any], template: str | None, name: Any) -> list[Any]:
    if template is None:
        return values
    names = _template_fields(template)
    if all(n == "" or n == "0" for n in names):
        return [template.format(v) for v in values]
    if name is not None and all(n == str(name) for n in names):
        return [template.format_map({str(name): v}) for v in values]
    raise ConfigurationError(
        f"template {template!r} names fields that a list or Series cannot fill: use {{}} for "
        "the prompt itself, or pass a DataFrame whose columns the fields name. Nothing was sent."
    )


# -- one run -----------------------------------------------------------------------------------


class MapRun:
    """One bulk run over ``requests``: its rows so far, its checkpoint and its progress bar.

    >>> run = MapRun(session, requests, index, checkpoint="run.sqlite", concurrency=32)
    >>> frame = await run.arun()        # every row, input order
    >>> run.frame()                     # at any moment: the rows finished so far

    ``compare`` runs one ``Request`` per (prompt, model) through it; a subclass may add
    columns (``columns``, ``row``, ``failure_row``).
    """

    columns: tuple[str, ...] = RESULT_COLUMNS

    def __init__(
        self,
        session: Session,
        requests: Sequence[Request],
        index: pd.Index | None = None,
        *,
        concurrency: int | None = None,
        checkpoint: str | os.PathLike[str] | KeyStore | None = None,
        progress: bool = True,
        errors: str = "record",
        tag: str | None = None,
        kind: str = "map",
        description: str = "map",
    ) -> None:
        if errors not in ("record", "raise"):
            raise ConfigurationError(f'errors must be "record" or "raise", got {errors!r}.')
        self.session = session
        self.requests = list(requests)
        self._index = index
        if index is not None and len(index) != len(self.requests):
            raise ConfigurationError("index must have one label per request.")
        limit = session.settings.limits.concurrency
        if concurrency is not None and concurrency > limit:
            warnings.warn(
                f"holynb: map(concurrency={concurrency}) is capped by the session's "
                f"concurrency={limit}; create the Session with concurrency={concurrency} to "
                "send more at once.",
                stacklevel=5,  # the caller of Session.map / amap
            )
        self.concurrency = max(1, min(concurrency or limit, limit))
        if isinstance(checkpoint, KeyStore) or checkpoint is None:
            self.checkpoint = checkpoint
        else:
            self.checkpoint = KeyStore(checkpoint)
        self._owns_checkpoint = checkpoint is not None and not isinstance(checkpoint, KeyStore)
        self.progress = progress
        self.errors = errors
        self.tag = tag
        self.kind = kind
        self.description = description
        self.rows: list[tuple[Any, ...] | None] = [None] * len(self.requests)
        self.counts = {"done": 0, "failed": 0, "cached": 0, "refused": 0}
        self.cost_usd = 0.0
        self._bar: Any = None
        self._postfix_at = 0.0
        self.startup_s: float | None = None  # from arun() to the first request sent
        self.schema = _schema_of(self.requests)
        self._stored: dict[int, str] = {}  # position -> key, found in the checkpoint, not read
        self._again: list[int] = []  # positions found stored but unusable: to ask again
        self._sending: dict[int, tuple[Any, str | None]] = {}  # prompt with its images attached

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
        positions = [i for i, row in enumerate(self.rows) if row is not None]
        rows = [self.rows[i] for i in positions]
        index = self.index if len(positions) == len(self.rows) else self.index[positions]
        frame = result_frame(rows, index, self.columns)  # type: ignore[arg-type]
        if self.schema is not None:  # schema=: the answer's fields become columns
            frame = self.schema.add_columns(frame)
        return frame

    # -- running ------------------------------------------------------------------------------

    async def arun(self) -> pd.DataFrame:
        """Run every request not yet in the checkpoint; the whole frame in input order."""
        started = time.perf_counter()
        bodies: list[dict[str, Any] | None] = [None] * len(self.requests)
        keys: list[str | None] = [None] * len(self.requests)
        for i, req in enumerate(self.requests):
            try:
                prompt, system = self.session._with_images(
                    req.prompt, req.system, req.images, req.image_preset
                )  # a bad image fails its own item (ImageError is a ValueError)
                if req.images is not None:
                    self._sending[i] = (prompt, system)
                bodies[i] = self.session._body(
                    prompt, req.model, system, req.temperature, req.max_tokens,
                    sent_params(req.params),
                )  # fmt: skip
            except (TypeError, ValueError) as err:  # a bad prompt: its row says why
                self.rows[i] = self.failure_row(req, None, err, 0.0)
                self.counts["failed"] += 1
        if self.checkpoint is not None:
            identity = CallerIdentity.of(self.session.settings)
            for i, body in enumerate(bodies):
                if body is not None:
                    keys[i] = request_key(body, identity)
            present = self.checkpoint.present(k for k in keys if k is not None)
            for i, key in enumerate(keys):
                if key is not None and key in present:
                    self.rows[i] = _STORED  # read after the first requests are out
                    self._stored[i] = key
            self.counts["cached"] += len(self._stored)
        pending = [i for i, row in enumerate(self.rows) if row is None]
        self._open_bar(len(self.requests) - len(pending))

        def start(positions: list[int]) -> list[asyncio.Future[None]]:
            items = iter(positions)

            async def worker() -> None:
                for i in items:  # one shared iterator: each item is taken by exactly one worker
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
        except BaseException:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        finally:
            self._close_bar()
            if self._owns_checkpoint and self.checkpoint is not None:
                self.checkpoint.close()
        return self.frame()

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
                    self._bar.update(-1)
                continue
            hit = as_hit(stored, saved_usd=stored.cost_usd, latency_ms=0.0)
            self.rows[i] = self.row(self.requests[i], hit)

    async def _run_item(self, i: int, body: dict[str, Any], key: str | None) -> None:
        req = self.requests[i]
        prompt, system = self._sending.pop(i, (req.prompt, req.system))
        started = time.perf_counter()
        try:
            result = await self.session.achat(
                prompt, model=req.model, system=system, temperature=req.temperature,
                max_tokens=req.max_tokens, tag=self.tag, kind=self.kind, **req.params,
            )  # fmt: skip
        except (APIError, BudgetExceededError, TypeError, ValueError) as err:
            elapsed = (time.perf_counter() - started) * 1000.0
            self.rows[i] = self.failure_row(req, body, err, elapsed)
            refused = isinstance(err, BudgetExceededError)
            self.counts["refused" if refused else "failed"] += 1
            self._tick()
            if self.errors == "raise":
                err.add_note(f"holynb: raised by map item {self.index[i]!r} (errors='raise').")
                raise
            return
        self.rows[i] = self.row(req, result)
        if key is not None and self.checkpoint is not None and is_complete(result):
            self.checkpoint.keep(key, result)
        self.counts["cached" if result.cache_hit else "done"] += 1
        self.cost_usd += result.cost_usd or 0.0
        self._tick()

    def row(self, req: Request, r: ChatResult) -> tuple[Any, ...]:
        """The row of a finished item, in ``columns`` order (a subclass that adds columns,
        e.g. a schema's fields, extends ``columns`` and this and ``failure_row``)."""
        u = r.usage
        return (
            req.prompt, r.text, not r.interrupted, None, r.finish_reason, r.model,
            u.prompt_tokens, u.completion_tokens, r.cost_usd, r.latency_ms, r.attempts,
            r.cache_hit,
        )  # fmt: skip

    def failure_row(
        self, req: Request, body: dict[str, Any] | None, err: BaseException, elapsed_ms: float
    ) -> tuple[Any, ...]:
        """The row of an item that failed or was refused, in ``columns`` order."""
        message = getattr(err, "message", None) or str(err)  # SchemaValidationError's too
        partial: ChatResult | None = getattr(err, "partial", None)
        model = body["model"] if body is not None else (req.model or self.session.model)
        attempts = getattr(err, "attempts", 0) if isinstance(err, APIError) else 0
        if partial is not None:
            partial = replace(partial, interrupted=True)
            row = self.row(req, partial)
            return (*row[:2], False, f"{type(err).__name__}: {message}", *row[4:])
        return (
            req.prompt, None, False, f"{type(err).__name__}: {message}", None, model,
            0, 0, 0.0, elapsed_ms, attempts, False,
        )  # fmt: skip

    # -- progress -----------------------------------------------------------------------------

    def _open_bar(self, initial: int) -> None:
        if not self.progress or not self.requests:
            return
        from tqdm.auto import tqdm

        self._bar = tqdm(
            total=len(self.requests), initial=initial, desc=self.description, unit="item",
            dynamic_ncols=True, mininterval=0.2,
        )  # fmt: skip
        self._bar.set_postfix_str(self._postfix(), refresh=True)

    def _postfix(self) -> str:
        c = self.counts
        text = f"done={c['done']} failed={c['failed']} cached={c['cached']}"
        if c["refused"]:
            text += f" refused={c['refused']}"
        return text + f" cost=${self.cost_usd:.4f}"

    def _tick(self) -> None:
        if self._bar is None:
            return
        now = time.monotonic()
        if now - self._postfix_at >= _POSTFIX_EVERY_S:
            self._postfix_at = now
            self._bar.set_postfix_str(self._postfix(), refresh=False)
        self._bar.update(1)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix(), refresh=False)
            self._bar.close()
            self._bar = None


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


def result_frame(
    rows: Sequence[Sequence[Any]],
    index: pd.Index | None = None,
    columns: Sequence[str] = RESULT_COLUMNS,
) -> pd.DataFrame:
    """A bulk result frame from rows in ``columns`` order, with the usual dtypes (``ok`` and
    ``cache_hit`` bool, token counts and attempts int, cost and latency float)."""
    import pandas as pd

    data = {c: [r[k] for r in rows] for k, c in enumerate(columns)}
    frame = pd.DataFrame(data, index=index, columns=list(columns))
    for name in frame.columns:
        dtype = _DTYPES.get(name, None if rows else object)  # empty text columns stay object
        if dtype is not None:
            frame[name] = frame[name].astype(dtype)
    return frame


_DTYPES = {
    "ok": "bool",
    "cache_hit": "bool",
    "prompt_tokens": "int64",
    "completion_tokens": "int64",
    "attempts": "int64",
    "cost_usd": "float64",
    "latency_ms": "float64",
}


# -- entry points ------------------------------------------------------------------------------


def _make_run(session: Session, prompts: Prompts, **kwargs: Any) -> MapRun:
    run_options = {
        name: kwargs.pop(name)
        for name in ("concurrency", "checkpoint", "progress", "errors", "tag")
        if name in kwargs
    }
    template = kwargs.pop("template", None)
    requests, index = requests_from(prompts, template, **kwargs)
    return MapRun(session, requests, index, **run_options)


async def amap(session: Session, prompts: Prompts, **kwargs: Any) -> pd.DataFrame:
    """``Session.amap``: build the requests, run them, return the frame (see the module)."""
    return await _make_run(session, prompts, **kwargs).arun()


def map_sync(session: Session, prompts: Prompts, **kwargs: Any) -> pd.DataFrame:
    """``Session.map``: ``amap`` on holynb's loop thread; an interrupt raises
    ``MapInterrupted`` with the finished rows."""
    from holynb._loop import default_loop

    run = _make_run(session, prompts, **kwargs)
    try:
        return default_loop().run(run.arun())
    except KeyboardInterrupt:
        frame = run.frame()
        where = (
            f" and in the checkpoint {str(run.checkpoint.path)!r}: run the same call again to "
            "continue"
            if run.checkpoint is not None
            else "; pass checkpoint='run.sqlite' to keep them across runs"
        )
        raise MapInterrupted(
            f"map interrupted: {len(frame)} of {len(run.requests)} items finished. They are in "
            f"this exception's .frame{where}.",
            frame=frame,
        ) from None
