"""The code interpreter: a model says what code would print, as a checked, structured result.

The model is asked (by a precise system prompt) to answer ONLY a JSON object
``{"success", "output", "error": {"name", "message"} | null, "execution_time_ms"}``. What it
claims is not trusted blindly:

- JSON mode (``response_format={"type": "json_object"}``) is requested; an endpoint that
  rejects it (HTTP 400/422 naming ``response_format``) is asked again without, and that is
  remembered per (base URL, model) for the interpreter's lifetime;
- the reply is read with :func:`holynb.extract_json_detailed` (fences, prose, Python literals,
  trailing commas, cut-off JSON); when nothing readable comes out, the model gets ONE repair
  round-trip (its own reply plus the parse error), then the next fallback model is tried;
- with ``verify=True`` the same code also runs here, in :func:`holynb.sandbox.arun_sandboxed`,
  and ``agrees`` says whether the claimed output matches the real one.

What the local sandbox protects against: code that runs forever (wall-clock timeout), eats
memory (a per-process memory limit), floods output (a cap on what is read back), forks without
end (a process limit for non-root users; the whole process group, and where user namespaces
work the whole PID namespace, is killed at the end, so nothing is left behind), or reads API
keys from the environment (it gets PATH and LANG only). Where user namespaces work it also has
no network.

What it does NOT protect against: it is not a security boundary. The code runs as your user
and can read and write every file you can; without user namespaces it can use the network and
leave behind processes that call ``setsid()``; as root the process limit does nothing; memory
and CPU limits bind each process, not the tree. Verify only code you would run yourself, and use
a container or a VM for hostile code. Details: :mod:`holynb.sandbox`.

>>> ci = holynb.CodeInterpreter(session, verify=True)
>>> r = ci.run("print(sum(range(10)))")
>>> r.output, r.success, r.agrees, r.cost_usd
('45\\n', True, True, 0.00002)
"""

from __future__ import annotations

import asyncio
import html
import json
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from holynb._loop import default_loop
from holynb.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    ConfigurationError,
    HolynbError,
    JSONExtractionError,
)

if TYPE_CHECKING:
    import pandas as pd

    from holynb.results import ChatResult
    from holynb.sandbox import SandboxResult
    from holynb.session import Session

__all__ = [
    "SYSTEM_PROMPT",
    "CodeInterpreter",
    "ExecutionError",
    "ExecutionResult",
    "RunManyResult",
    "SandboxLimits",
    "code_from_messages",
    "code_message",
    "result_card_html",
    "same_output",
    "sandbox_error",
]

SYSTEM_PROMPT = """\
You are a code execution engine. The user sends {language} code in a fenced block. Work out \
exactly what running it as a script would do, then reply with ONLY one JSON object (no prose, \
no code fences) with exactly these keys:
"success": true if the code ran to the end, false if it stopped with an uncaught exception;
"output": everything the code wrote to standard output before it ended, exactly, as one string \
("" if nothing);
"error": null if success is true, otherwise {"name": "<exception class, e.g. \
ZeroDivisionError>", "message": "<the exception message>"};
"execution_time_ms": how long the run takes in milliseconds, as a number.
Example: {"success": true, "output": "4\\n", "error": null, "execution_time_ms": 0.2}"""

REPAIR_PROMPT = (
    "Your reply could not be read as the JSON object I asked for: {problem} Reply again with "
    "ONLY that JSON object, with the keys success, output, error and execution_time_ms: no "
    "prose, no code fences."
)

_KEYS = frozenset({"success", "output", "error", "execution_time_ms"})
_CARD_OUTPUT_CHARS = 20_000


# -- results -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExecutionError:
    """An exception by class name and message, e.g. ``ExecutionError("ZeroDivisionError",
    "division by zero")``; ``str()`` gives ``"ZeroDivisionError: division by zero"``."""

    name: str
    message: str = ""

    def __str__(self) -> str:
        return f"{self.name}: {self.message}" if self.message else self.name

    @classmethod
    def parse(cls, text: str) -> ExecutionError:
        """``"Name: message"`` (as tracebacks end) split into its parts.

        >>> ExecutionError.parse("ValueError: bad")
        ExecutionError(name='ValueError', message='bad')
        """
        m = _ERROR_LINE_RE.match(text.strip())
        if m:
            return cls(m.group(1), (m.group(2) or "").strip())
        return cls("Error", text.strip())


_ERROR_LINE_RE = re.compile(r"^([A-Za-z_][\w.]*)(?::\s*(.*))?$", re.S)


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    """What a model claimed about running some code, and (``verify=True``) what really happened.

    Claimed by the model: ``success``, ``output`` (stdout), ``error`` (an
    :class:`ExecutionError` or None) and ``execution_time_ms``. About the call: ``model`` (the one
    whose answer was used; None when no model gave one), ``raw`` (its reply), ``parse_repaired``
    (the JSON needed fixing, locally or by the repair round-trip), ``attempts`` (requests sent,
    across the JSON-mode probe, repairs and fallbacks), ``cost_usd`` (their sum; None when a
    price is unknown), ``latency_ms`` (wall time of the whole run) and ``notes`` (what went wrong
    on the way, e.g. a model that failed).

    Verified locally: ``verified_output`` (real stdout), ``verified_error`` (the exception the
    code really raised), ``verify_error`` (set when the sandbox itself stopped the code: time,
    memory or output limit; there is then nothing fair to compare) and ``agrees`` (claimed and
    real success match and so do the outputs, compared by :func:`same_output`; None when not
    verified, not answered, or stopped by the sandbox).

    >>> r = ci.run("1/0")
    >>> r.success, str(r.error)
    (False, 'ZeroDivisionError: division by zero')
    """

    success: bool
    output: str
    error: ExecutionError | None
    execution_time_ms: float | None
    model: str | None
    raw: str = field(default="", repr=False)
    parse_repaired: bool = False
    attempts: int = 0
    cost_usd: float | None = 0.0
    latency_ms: float = 0.0
    code: str = field(default="", repr=False)
    verified_output: str | None = None
    verified_error: ExecutionError | None = None
    verify_error: ExecutionError | None = None
    agrees: bool | None = None
    notes: tuple[str, ...] = ()

    @property
    def answered(self) -> bool:
        """Whether a model's answer was used (False: every model failed; see ``error``)."""
        return self.model is not None

    @property
    def verified(self) -> bool:
        """Whether the code was also run locally."""
        return self.verified_output is not None or self.verify_error is not None

    def summary(self) -> str:
        """One line: outcome, model, claimed time, agreement, cost, attempts.

        >>> ci.run("print(1)").summary()
        'success · local/python · 41.2 ms claimed · agrees · $0.000000 · 1 attempt'
        """
        if not self.answered:
            head = f"no answer ({self.error})" if self.error else "no answer"
        elif self.success:
            head = "success"
        else:
            head = f"failed: {self.error}" if self.error else "failed"
        parts = [head]
        if self.model:
            parts.append(self.model)
        if self.execution_time_ms is not None:
            parts.append(f"{self.execution_time_ms:.1f} ms claimed")
        if self.verified:
            parts.append(_agreement(self))
        parts.append("cost unknown" if self.cost_usd is None else f"${self.cost_usd:.6f}")
        parts.append(f"{self.attempts} attempt{'s' if self.attempts != 1 else ''}")
        if self.parse_repaired:
            parts.append("JSON repaired")
        return " · ".join(parts)

    def __str__(self) -> str:
        lines = [self.summary()]
        if self.output:
            lines += ["--- output (claimed) ---", self.output.rstrip("\n")]
        if self.verified and self.agrees is False and self.verified_output is not None:
            lines += ["--- output (real) ---", self.verified_output.rstrip("\n")]
        if self.verified_error is not None and self.agrees is False:
            lines.append(f"real error: {self.verified_error}")
        for note in self.notes:
            lines.append(f"note: {note}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return result_card_html(self)

    def to_dict(self) -> dict[str, Any]:
        """A flat dict (errors as ``"Name: message"`` strings), one row of ``to_frame()``."""
        return {
            "success": self.success,
            "output": self.output,
            "error": None if self.error is None else str(self.error),
            "execution_time_ms": self.execution_time_ms,
            "model": self.model,
            "parse_repaired": self.parse_repaired,
            "attempts": self.attempts,
            "cost_usd": self.cost_usd,
            "latency_ms": self.latency_ms,
            "agrees": self.agrees,
            "verified_output": self.verified_output,
            "verified_error": None if self.verified_error is None else str(self.verified_error),
            "verify_error": None if self.verify_error is None else str(self.verify_error),
            "code": self.code,
            "raw": self.raw,
            "notes": "; ".join(self.notes),
        }


def _agreement(r: ExecutionResult) -> str:
    if r.verify_error is not None:
        return f"not compared: sandbox stopped the code ({r.verify_error.name})"
    if r.agrees is None:
        return "not compared"
    return "agrees" if r.agrees else "DISAGREES with the real run"


class RunManyResult(list[ExecutionResult]):
    """The results of :meth:`CodeInterpreter.run_many`: a list in input order, plus a table.

    >>> results = ci.run_many(snippets)
    >>> results[0].output
    >>> results.to_frame()            # one row per snippet
    >>> results.failed, results.total_cost_usd
    """

    @property
    def failed(self) -> int:
        """How many snippets did not succeed (the code failed, or no model answered)."""
        return sum(1 for r in self if not r.success)

    @property
    def total_cost_usd(self) -> float | None:
        """The summed cost; None when any part of it is unknown."""
        return _sum_costs(r.cost_usd for r in self)

    def to_frame(self) -> pd.DataFrame:
        """A DataFrame, one row per snippet in input order (see ``ExecutionResult.to_dict``)."""
        import pandas as pd

        rows = [r.to_dict() for r in self]
        columns = list(ExecutionResult(False, "", None, None, None).to_dict())
        return pd.DataFrame(rows, columns=columns)

    def _repr_html_(self) -> str:
        cost = self.total_cost_usd
        head = (
            f"{len(self)} snippets · {self.failed} failed · "
            f"{'cost unknown' if cost is None else f'${cost:.6f}'}"
        )
        frame = self.to_frame().drop(columns=["code", "raw"])
        return f"<p>{html.escape(head)}</p>" + frame.to_html(max_rows=20, escape=True)


def same_output(claimed: str, real: str) -> bool:
    """Whether two outputs match once line endings are ``\\n``, trailing spaces and tabs are cut
    from every line and trailing newlines from the whole; anything else must match exactly.

    >>> same_output("42 \\r\\n\\n", "42\\n")
    True
    """
    return _normalise(claimed) == _normalise(real)


def _normalise(text: str) -> str:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip(" \t") for line in lines).rstrip("\n")


# -- the prompt protocol (shared with the local server's local/python model) -------------------


def code_message(code: str, language: str = "python") -> str:
    """The user message carrying ``code``: a fence longer than any backtick run inside it.

    >>> print(code_message("print(1)"))
    Execute this python code and reply with the JSON object only.
    <BLANKLINE>
    ```python
    print(1)
    ```
    """
    longest = max((len(run) for run in re.findall(r"`+", code)), default=0)
    fence = "`" * max(3, longest + 1)
    body = code if code.endswith("\n") else code + "\n"
    return (
        f"Execute this {language} code and reply with the JSON object only.\n\n"
        f"{fence}{language}\n{body}{fence}"
    )


_FENCE_RE = re.compile(r"^(`{3,})([\w+.-]*)[ \t]*\n(.*?)\n?^\1[ \t]*$", re.S | re.M)


def code_from_messages(messages: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """``(language, code)`` from the fenced block of the latest user message that has one.

    >>> code_from_messages([{"role": "user", "content": code_message("print(1)")}])
    ('python', 'print(1)')
    """
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = "\n".join(
                p.get("text", "") for p in content if isinstance(p, dict) and "text" in p
            )
        if isinstance(content, str) and (m := _FENCE_RE.search(content)):
            return m.group(2).lower(), m.group(3)
    return None


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """Limits for running code locally (``verify=True``, and the local/python model).

    >>> holynb.CodeInterpreter(session, verify=True, limits=SandboxLimits(timeout_s=5))
    """

    timeout_s: float = 10.0
    memory_mb: int = 512
    max_output_bytes: int = 1_000_000
    cpu_s: float | None = None
    isolate: bool | None = None  # None: namespaces when they work (see holynb.sandbox)

    async def run(self, code: str) -> SandboxResult:
        """Run ``code`` in the sandbox under these limits, off the event loop."""
        from holynb.sandbox import arun_sandboxed

        return await arun_sandboxed(
            code,
            timeout_s=self.timeout_s,
            memory_mb=self.memory_mb,
            max_output_bytes=self.max_output_bytes,
            cpu_s=self.cpu_s,
            isolate=self.isolate,
        )


_STOP_NAMES = {
    "timeout": ("TimeoutError", "stopped by the sandbox after {s:.1f} s (wall-clock limit)"),
    "memory": ("MemoryError", "stopped by the sandbox: memory limit reached"),
    "output": ("OutputLimitExceeded", "stopped by the sandbox: too much output (it was cut)"),
    "cpu": ("CPUTimeLimitExceeded", "stopped by the sandbox: CPU time limit reached"),
    "signal": ("KilledBySignal", "the process died from signal {sig}"),
}


def sandbox_error(result: SandboxResult) -> ExecutionError | None:
    """How a sandboxed run failed, as an ExecutionError: the limit that stopped it, the exception
    it raised, or ``SystemExit`` with a non-zero status; None when it ran to the end.

    >>> sandbox_error(run_sandboxed("while True: pass", timeout_s=1))
    ExecutionError(name='TimeoutError', message='stopped by the sandbox after 1.0 s ...')
    """
    reason = result.killed_reason
    if reason is not None:
        name, template = _STOP_NAMES.get(reason, _STOP_NAMES["signal"])
        sig = -(result.returncode or 0)
        return ExecutionError(name, template.format(s=result.duration_ms / 1000, sig=sig))
    if result.error:
        return ExecutionError.parse(result.error)
    if result.returncode:
        return ExecutionError("SystemExit", str(result.returncode))
    return None


# -- reading a reply ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Claim:
    success: bool
    output: str
    error: ExecutionError | None
    execution_time_ms: float | None
    repaired: bool


def _read_reply(text: str) -> tuple[_Claim | None, str]:
    """The claim in a reply, or None and what was wrong with it (one sentence for the model)."""
    from holynb.jsonx import extract_json_detailed

    try:
        found = extract_json_detailed(text, expect_keys=_KEYS)
    except JSONExtractionError as err:
        return None, str(err).split("\nHint:", 1)[0].strip()
    value = found.value
    if not isinstance(value, dict) or not ({"success", "output", "error"} & value.keys()):
        return None, "the JSON in it has none of the keys success, output and error."
    error = _as_error(value.get("error"))
    claim = _Claim(
        success=_as_bool(value.get("success"), default=error is None),
        output=_as_text(value.get("output")),
        error=error,
        execution_time_ms=_as_ms(value.get("execution_time_ms")),
        repaired=found.repaired,
    )
    return claim, ""


def _as_error(value: Any) -> ExecutionError | None:
    if value is None or value is False:
        return None
    if isinstance(value, dict):
        name = value.get("name") or value.get("type") or "Error"
        message = value.get("message") or value.get("msg") or ""
        return ExecutionError(str(name), str(message))
    text = str(value).strip()
    if text.lower() in ("", "none", "null"):
        return None
    return ExecutionError.parse(text)


def _as_bool(value: Any, default: bool) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, int | float):
        return bool(value)
    return default


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _as_ms(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip().removesuffix("ms").strip()
    try:
        ms = float(value)
    except (TypeError, ValueError):
        return None
    return ms if math.isfinite(ms) else None


def _sum_costs(costs: Iterable[float | None]) -> float | None:
    total = 0.0
    for cost in costs:
        if cost is None:
            return None
        total += cost
    return total


def _rejects_json_mode(err: BadRequestError) -> bool:
    text = f"{err.message} {err.body or ''}".lower()
    return any(word in text for word in ("response_format", "json_object", "json mode"))


# -- the interpreter ---------------------------------------------------------------------------


@dataclass
class _Run:
    """What one run collected on its way: requests, costs, notes."""

    attempts: int = 0
    costs: list[float | None] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Asked:
    claim: _Claim | None
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
        session: Session,
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
        order = list(models) if models is not None else [model or session.model, *fallbacks]
        if not order or not all(isinstance(m, str) and m for m in order):
            raise ConfigurationError(f"models must be non-empty model names, got {order!r}.")
        if verify and language.lower() not in ("python", "python3", "py"):
            raise ConfigurationError(
                f"verify=True runs the code here with Python; {language!r} code cannot be "
                "verified. Use verify=False for other languages."
            )
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an int >= 1, got {concurrency!r}.")
        self.session = session
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
        self._json_support: dict[tuple[str, str], bool] = {}
        self._probe_locks: dict[tuple[int, str, str], asyncio.Lock] = {}

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
            cost_usd=_sum_costs(run.costs),
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
                claim, problem = _read_reply(raw)
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
                claim, problem = _read_reply(raw)
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
        """One request; retried once without JSON mode if the endpoint rejects it."""
        key = (self.session.base_url, model)
        if self.json_mode is None and key not in self._json_support:
            # The first request per (endpoint, model) probes JSON mode; the rest wait for the
            # verdict instead of all being rejected at once.
            lock_key = (id(asyncio.get_running_loop()), *key)
            lock = self._probe_locks.setdefault(lock_key, asyncio.Lock())
            async with lock:
                return await self._send(model, messages, tag, run)
        return await self._send(model, messages, tag, run)

    async def _send(
        self, model: str, messages: list[dict[str, Any]], tag: str | None, run: _Run
    ) -> ChatResult:
        key = (self.session.base_url, model)
        json_mode = self.json_mode if self.json_mode is not None else self._json_support.get(key)
        params = dict(self.extra_body)
        if json_mode is not False:
            params["response_format"] = {"type": "json_object"}
        run.attempts += 1
        try:
            reply = await self.session.achat(
                messages,
                model=model,
                system=self.system_prompt,
                temperature=self.temperature,
                max_tokens=self.max_tokens,
                kind="interpret",
                tag=tag,
                **params,
            )
        except BadRequestError as err:
            if json_mode is None and _rejects_json_mode(err):
                self._json_support[key] = False
                run.notes.append(f"{model}: response_format rejected; asking without JSON mode")
                return await self._send(model, messages, tag, run)
            raise
        run.costs.append(reply.cost_usd)
        if json_mode is None:
            self._json_support[key] = True
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
        bar shows when tqdm is installed (``progress=False`` hides it). On an interrupt the
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
        if not self.session.is_local:
            self.session.settings.require_key()  # fail once, not once per snippet
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
    message = err.message if isinstance(err, APIError) else str(err)
    return f"{type(err).__name__}: {message}"


def _api_failure(model: str, err: HolynbError) -> ExecutionError:
    message = err.message if isinstance(err, APIError) else str(err)
    return ExecutionError(type(err).__name__, f"{message} (model {model})")


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:  # optional: no bar without it
        return _NoBar()
    return tqdm(total=total, desc="interpret", unit="snippet")


# -- the HTML card -----------------------------------------------------------------------------

# Colours that read on light and dark notebook themes alike (text colour is inherited).
_CARD = (
    '<div class="holynb-interpret" style="border:1px solid rgba(127,127,127,0.4);'
    "border-radius:6px;padding:6px 10px;margin:4px 0;font-family:system-ui,sans-serif;"
    'font-size:13px">{body}</div>'
)
_PRE = (
    '<pre style="margin:4px 0;padding:6px;background:rgba(127,127,127,0.1);border-radius:4px;'
    'white-space:pre-wrap;max-height:24em;overflow:auto">{text}</pre>'
)
_LABEL = '<div style="opacity:0.7;font-size:12px;margin-top:4px">{text}</div>'


def result_card_html(result: ExecutionResult) -> str:
    """A compact HTML card for a result: status line, claimed output, error, and, when
    verified, agreement (with the real output when they differ). Every value is escaped; the
    card has no scripts and no event handlers.

    >>> from IPython.display import HTML
    >>> HTML(result_card_html(ci.run("print(2 + 2)")))
    """
    esc = _escape
    if not result.answered:
        colour, mark = "#cf222e", "✗"
    elif result.agrees is False:
        colour, mark = "#bc4c00", "≠"
    elif result.success:
        colour, mark = "#1a7f37", "✓"
    else:
        colour, mark = "#bc4c00", "!"
    head = f'<span style="color:{colour};font-weight:600">{mark}</span> {esc(result.summary())}'
    parts = [f"<div>{head}</div>"]
    if result.output:
        parts.append(_LABEL.format(text="output (claimed)"))
        parts.append(_PRE.format(text=esc(_clip(result.output))))
    if result.error is not None:
        parts.append(
            f'<div style="color:#cf222e;margin-top:4px"><b>{esc(result.error.name)}</b>'
            f"{': ' + esc(result.error.message) if result.error.message else ''}</div>"
        )
    if result.verified and result.agrees is False:
        parts.append(_LABEL.format(text="output (real, run locally)"))
        parts.append(_PRE.format(text=esc(_clip(result.verified_output or ""))))
        if result.verified_error is not None:
            parts.append(_LABEL.format(text=f"real error: {esc(str(result.verified_error))}"))
    if result.verify_error is not None:
        parts.append(_LABEL.format(text=f"local run: {esc(str(result.verify_error))}"))
    for note in result.notes:
        parts.append(_LABEL.format(text=esc(note)))
    return _CARD.format(body="".join(parts))


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


def _clip(text: str) -> str:
    if len(text) <= _CARD_OUTPUT_CHARS:
        return text
    return text[:_CARD_OUTPUT_CHARS] + f"\n… ({len(text) - _CARD_OUTPUT_CHARS:,} more characters)"
