"""The code interpreter: a model says what code would print, as a checked, structured result.

The model is asked (by a precise system prompt) to answer ONLY a JSON object
``{"success", "output", "error": {"name", "message"} | null, "execution_time_ms"}``. What it
claims is not trusted blindly:

- JSON mode (``response_format={"type": "json_object"}``) is requested; an endpoint that
  rejects it (HTTP 400/422 naming ``response_format``) is asked again without, and that is
  remembered per (base URL, model) for the interpreter's lifetime; Anthropic's format has no
  JSON mode, so there the system prompt and the reply reader do it alone;
- the reply is read with :func:`holynb.extract_json_detailed` (fences, prose, Python literals,
  trailing commas, cut-off JSON); when nothing readable comes out, the model gets ONE repair
  round-trip (its own reply plus the parse error), then the next fallback model is tried;
- with ``verify=True`` the same code also runs here, in
  :func:`holynb.interpreter.sandbox.arun_sandboxed`, and ``agrees`` says whether the claimed
  output matches the real one.

What the local sandbox protects against: code that runs forever (wall-clock timeout), eats
memory (a per-process memory limit), floods output (a cap on what is read back), forks without
end (a process limit for non-root users; the whole process group, and where user namespaces
work the whole PID namespace, is killed at the end, so nothing is left behind), or reads API
keys from the environment (it gets PATH and LANG only). Where user namespaces work it also has
no network and its own ``/proc``.

What it does NOT protect against: it is not a security boundary. The code runs as your user
and can read and write every file you can; without user namespaces it can read your processes'
environment through ``/proc/<pid>/environ`` (so it refuses to run while a key is set, unless
``SandboxLimits(allow_unisolated=True)``), use the network and leave behind processes that call
``setsid()``; as root the process limit does nothing; memory
and CPU limits bind each process, not the tree. Verify only code you would run yourself, and use
a container or a VM for hostile code. Details: :mod:`holynb.interpreter.sandbox`.

>>> ci = holynb.CodeInterpreter(session, verify=True)
>>> r = ci.run("print(sum(range(10)))")
>>> r.output, r.success, r.agrees, r.cost_usd
('45\\n', True, True, 0.00002)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from holynb._loop import default_loop
from holynb.calls.call import Call
from holynb.calls.caller import caller_of
from holynb.calls.probe import JSON_OBJECT
from holynb.errors import (
    APIError,
    AuthenticationError,
    BudgetExceededError,
    ConfigurationError,
    HolynbError,
    plain_message,
)
from holynb.interpreter.execution import (
    ExecutionError,
    ExecutionResult,
    RunManyResult,
    result_card_html,
    same_output,
    sum_costs,
)
from holynb.interpreter.protocol import (
    REPAIR_PROMPT,
    SYSTEM_PROMPT,
    Claim,
    SandboxLimits,
    code_message,
    read_reply,
    sandbox_error,
)

if TYPE_CHECKING:
    from holynb.calls.caller import Core
    from holynb.interpreter.sandbox import SandboxResult
    from holynb.results import ChatResult

# result_card_html stays importable from here for magics.py; the other result types are
# imported from holynb.interpreter.execution / holynb.interpreter.protocol, where they live.
__all__ = ["CodeInterpreter", "result_card_html"]


JSON_MODE = {"type": JSON_OBJECT}  # the response_format of JSON mode


# -- the interpreter ---------------------------------------------------------------------------


@dataclass
class _Run:
    """What one run collected on its way: requests, costs, notes."""

    attempts: int = 0
    costs: list[float | None] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Asked:
    claim: Claim | None
    model: str | None
    raw: str
    failure: ExecutionError | None
    repaired_by_model: bool = False


class CodeInterpreter:
    """Ask a model to execute code and return a structured :class:`ExecutionResult`.

    ``model`` (default: the session's) is tried first, then each of ``fallbacks``; or give the
    whole order as ``models=[...]``. A model that fails (an API error after the session's
    retries) or answers twice without readable JSON is skipped for the next one; a 401 or a
    spent budget stops at once, since every model shares the key and the budget.
    ``verify=True`` also runs the code locally under ``limits`` (Python only).
    ``json_mode`` None probes ``response_format={"type": "json_object"}``; True always sends
    it, False never. ``concurrency`` bounds ``run_many``. ``extra_body`` goes into every request
    (e.g. ``{"seed": 1}``); ledger rows get ``kind="interpret"`` and ``tag``.

    Nothing but bad arguments raises: a run that gets no answer returns a result with
    ``answered`` False and ``error`` naming the API error (e.g. ``ServerError``).

    >>> ci = holynb.CodeInterpreter(session, model="gpt-4.1", fallbacks=["claude-sonnet-4"])
    >>> r = ci.run("import math; print(math.factorial(20))")
    >>> r.output, r.model, r.attempts
    >>> await ci.arun("print('hi')")
    """

    def __init__(
        self,
        session: Core,
        model: str | None = None,
        *,
        language: str = "python",
        verify: bool = False,
        fallbacks: Sequence[str] = (),
        models: Sequence[str] | None = None,
        limits: SandboxLimits | None = None,
        concurrency: int = 8,
        json_mode: bool | None = None,
        temperature: float | None = 0.0,
        max_tokens: int | None = None,
        system_prompt: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        tag: str | None = None,
    ) -> None:
        if models is not None and (model is not None or fallbacks):
            raise ConfigurationError(
                "Give either models=[...] (the whole order) or model= with fallbacks=, not both."
            )
        order = (
            list(models)
            if models is not None
            else [model or caller_of(session).settings.model, *fallbacks]
        )
        if not order or not all(isinstance(m, str) and m for m in order):
            raise ConfigurationError(f"models must be non-empty model names, got {order!r}.")
        if verify and language.lower() not in ("python", "python3", "py"):
            raise ConfigurationError(
                f"verify=True runs the code here with Python; {language!r} code cannot be "
                "verified. Use verify=False for other languages."
            )
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an int >= 1, got {concurrency!r}.")
        self.caller = caller_of(session)
        self.models: list[str] = list(dict.fromkeys(order))
        self.language = language
        self.verify = verify
        self.limits = limits or SandboxLimits()
        self.concurrency = concurrency
        self.json_mode = json_mode
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.system_prompt = system_prompt or SYSTEM_PROMPT.replace("{language}", language)
        self.extra_body = dict(extra_body or {})
        self.tag = tag
        self.last_batch: RunManyResult | None = None
        # (base_url, model) -> whether it accepts response_format json_object

    def __repr__(self) -> str:
        verify = ", verify=True" if self.verify else ""
        return f"CodeInterpreter(models={self.models!r}, language={self.language!r}{verify})"

    # -- one snippet ---------------------------------------------------------------------------

    def run(self, code: str, *, tag: str | None = None) -> ExecutionResult:
        """Run ``code`` through the model (and locally, with ``verify=True``); sync."""
        return default_loop().run(self.arun(code, tag=tag))

    async def arun(self, code: str, *, tag: str | None = None) -> ExecutionResult:
        """:meth:`run`, async. The model call and the local run go concurrently."""
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, got {type(code).__name__}.")
        started = time.perf_counter()
        run = _Run()
        tag = tag if tag is not None else self.tag
        local: SandboxResult | None = None
        if self.verify:
            asked, local = await asyncio.gather(self._ask(code, tag, run), self.limits.run(code))
        else:
            asked = await self._ask(code, tag, run)
        return self._result(code, asked, local, run, started)

    def _result(
        self,
        code: str,
        asked: _Asked,
        local: SandboxResult | None,
        run: _Run,
        started: float,
    ) -> ExecutionResult:
        claim = asked.claim
        fields: dict[str, Any] = {}
        if local is not None:
            problem = sandbox_error(local)
            stopped = local.killed_reason is not None
            fields = {
                "verified_output": local.stdout,
                "verified_error": None if stopped else problem,
                "verify_error": problem if stopped else None,
                "agrees": (
                    None
                    if stopped or claim is None
                    else claim.success == local.success and same_output(claim.output, local.stdout)
                ),
            }
        return ExecutionResult(
            success=claim.success if claim else False,
            output=claim.output if claim else "",
            error=claim.error if claim else asked.failure,
            execution_time_ms=claim.execution_time_ms if claim else None,
            model=asked.model,
            raw=asked.raw,
            parse_repaired=bool(claim and (claim.repaired or asked.repaired_by_model)),
            attempts=run.attempts,
            cost_usd=sum_costs(run.costs),
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            code=code,
            notes=tuple(run.notes),
            **fields,
        )

    async def _ask(self, code: str, tag: str | None, run: _Run) -> _Asked:
        """Each model in turn until one answers readable JSON (after at most one repair)."""
        messages: list[dict[str, Any]] = [
            {"role": "user", "content": code_message(code, self.language)}
        ]
        failure: ExecutionError | None = None
        raw = ""
        for model in self.models:
            try:
                reply = await self._call(model, messages, tag, run)
                raw = reply.text
                claim, problem = read_reply(raw)
                if claim is not None:
                    return _Asked(claim, model, raw, None)
                run.notes.append(f"{model}: unreadable reply, asked it to repair: {problem}")
                repair = [
                    *messages,
                    {"role": "assistant", "content": raw},
                    {"role": "user", "content": REPAIR_PROMPT.format(problem=problem)},
                ]
                reply = await self._call(model, repair, tag, run)
                raw = reply.text
                claim, problem = read_reply(raw)
                if claim is not None:
                    return _Asked(claim, model, raw, None, repaired_by_model=True)
                failure = ExecutionError(
                    "JSONExtractionError",
                    f"{model} answered twice without a readable JSON object: {problem}",
                )
                run.notes.append(f"{model}: still unreadable after the repair: {problem}")
            except (AuthenticationError, BudgetExceededError) as err:
                failure = _api_failure(model, err)
                run.notes.append(f"{model}: {_describe(err)}; not trying other models")
                break
            except APIError as err:
                failure = _api_failure(model, err)
                run.notes.append(f"{model}: {_describe(err)}")
        return _Asked(None, None, raw, failure)

    async def _call(
        self, model: str, messages: list[dict[str, Any]], tag: str | None, run: _Run
    ) -> ChatResult:
        """One request, in JSON mode where the endpoint takes it: the session's probe finds
        out with the first request per (endpoint, model) and remembers; a refusal is retried
        once without it."""
        caller = self.caller
        params: dict[str, Any] = {"extra_body": dict(self.extra_body)} if self.extra_body else {}
        json_mode = self.json_mode
        if caller.settings.api == "anthropic":
            json_mode = False  # no response_format there: the prompt and extract_json do it

        def call_of(extra: dict[str, Any]) -> Call:
            body = caller.body(messages, model, self.system_prompt, self.temperature,
                               self.max_tokens, {**params, **extra})  # fmt: skip
            return Call(body=body, kind="interpret", tag=tag)

        def dropped(why: str) -> None:
            run.attempts += 1
            run.notes.append(f"{model}: response_format rejected; asking without JSON mode")

        plain = call_of({})
        if json_mode is False:
            call = plain
        elif json_mode is True:
            call = call_of({"response_format": JSON_MODE})
        else:
            call = call_of({"response_format": JSON_MODE}).but(
                probe=JSON_OBJECT, fallback=plain, on_fallback=dropped
            )
        run.attempts += 1
        reply = await caller.complete(call)
        run.costs.append(reply.cost_usd)
        if reply.finish_reason == "length":
            run.notes.append(f"{model}: the reply was cut at max_tokens")
        return reply

    # -- many snippets -------------------------------------------------------------------------

    def run_many(
        self,
        snippets: Iterable[str],
        *,
        concurrency: int | None = None,
        progress: bool = True,
        tag: str | None = None,
    ) -> RunManyResult:
        """Run every snippet, at most ``concurrency`` at once; results in input order.

        A snippet that fails (an API error, no readable answer) becomes a result with
        ``success`` False and ``error`` naming what went wrong; the batch goes on. A progress
        bar shows unless ``progress=False``. On an interrupt the
        results so far are in ``interpreter.last_batch`` (the rest marked ``Interrupted``).

        >>> results = ci.run_many([f"print({i} ** 2)" for i in range(100)], concurrency=8)
        >>> results.to_frame()[["success", "output", "model", "cost_usd"]]
        """
        items = list(snippets)
        bar = _progress_bar(len(items), progress)  # made here: widgets belong to this thread
        try:
            return default_loop().run(self._arun_many(items, concurrency, bar, tag))
        finally:
            bar.close()

    async def arun_many(
        self,
        snippets: Iterable[str],
        *,
        concurrency: int | None = None,
        progress: bool = True,
        tag: str | None = None,
    ) -> RunManyResult:
        """:meth:`run_many`, async."""
        items = list(snippets)
        bar = _progress_bar(len(items), progress)
        try:
            return await self._arun_many(items, concurrency, bar, tag)
        finally:
            bar.close()

    async def _arun_many(
        self, items: list[str], concurrency: int | None, bar: Any, tag: str | None
    ) -> RunManyResult:
        limit = self.concurrency if concurrency is None else concurrency
        if not isinstance(limit, int) or limit < 1:
            raise ConfigurationError(f"concurrency must be an int >= 1, got {limit!r}.")
        if not self.caller.is_local:
            self.caller.settings.require_key()  # fail once, not once per snippet
        slots: list[ExecutionResult | None] = [None] * len(items)
        gate = asyncio.Semaphore(limit)
        failed = 0

        async def one(i: int, code: str) -> None:
            nonlocal failed
            async with gate:
                try:
                    result = await self.arun(code, tag=tag)
                except Exception as err:  # kept as this snippet's result; the batch goes on
                    error = ExecutionError(type(err).__name__, str(err))
                    result = ExecutionResult(False, "", error, None, None, code=str(code))
            slots[i] = result
            if not result.success:
                failed += 1
                bar.set_postfix(failed=failed, refresh=False)
            bar.update(1)

        try:
            await asyncio.gather(*(one(i, code) for i, code in enumerate(items)))
        finally:
            interrupted = ExecutionError("Interrupted", "the batch was stopped before this ran")
            done = RunManyResult(
                r if r is not None else ExecutionResult(False, "", interrupted, None, None, code=c)
                for r, c in zip(slots, items, strict=True)
            )
            self.last_batch = done
        return done


def _describe(err: HolynbError) -> str:
    message = plain_message(err.message) if isinstance(err, APIError) else str(err)
    return f"{type(err).__name__}: {message}"


def _api_failure(model: str, err: HolynbError) -> ExecutionError:
    message = plain_message(err.message) if isinstance(err, APIError) else str(err)
    return ExecutionError(type(err).__name__, f"{message} (model {model})")


def _progress_bar(total: int, enabled: bool) -> Any:
    from holynb.progress import progress_bar

    return progress_bar(total=total, desc="interpret", unit="snippet", disable=not enabled)
