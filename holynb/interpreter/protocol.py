"""The code interpreter's protocol with a model: the system prompt, how code is sent (a fenced
block), how a reply is read back into a claim, and how sandbox stops are named.

Shared by :mod:`holynb.interpreter.code_interpreter` and the local server's ``local/python``
model, so both sides speak exactly the same format.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from holynb.errors import JSONExtractionError
from holynb.interpreter.execution import ExecutionError
from holynb.interpreter.sandbox import SandboxLimits, SandboxResult

__all__ = [
    "REPAIR_PROMPT",
    "SYSTEM_PROMPT",
    "Claim",
    "SandboxLimits",  # lives in interpreter.sandbox; the interpreter and the server take it here
    "code_from_messages",
    "code_message",
    "read_reply",
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
class Claim:
    success: bool
    output: str
    error: ExecutionError | None
    execution_time_ms: float | None
    repaired: bool


def read_reply(text: str) -> tuple[Claim | None, str]:
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
    claim = Claim(
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
