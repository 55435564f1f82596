"""Offline models for the code interpreter: ``local/python`` runs the code it receives for real.

``local/python`` is the other side of :mod:`holynb.interpreter.code_interpreter`'s protocol:
it takes the code from the fenced block of the latest user message that has one, runs it with
:func:`holynb.interpreter.sandbox.arun_sandboxed` (in a worker thread, so the server's loop
keeps serving; 10 s, 512 MB and 100 kB of output by default) and answers the JSON object
``{"success", "output", "error", "execution_time_ms"}``, the time being the sandbox's own.

Like real models it does not always answer bare JSON, even when asked for JSON mode (it ignores
``response_format``, as many OpenAI-compatible servers do): a hash of the code picks plain JSON,
a ```` ```json ```` fence, prose before and after, or a Python dict literal. Comments in the code
steer it, for tests and tutorials:

- ``# holynb: garble``: the first answer is prose with no JSON in it; asked again (the
  conversation holds its earlier reply) it answers proper JSON;
- ``# holynb: lie``: it claims a wrong output (digits shifted by one);
- ``# holynb: wrap=plain|fence|prose|python``: picks the wrapping.

``local/broken`` always answers prose without JSON, for fallback tests.

>>> registry = ModelRegistry()
>>> python = register_python_models(registry)      # local/python and local/broken
>>> python.calls, python.repairs, python.peak_active  # counted on the server side
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from holynb.interpreter.protocol import SandboxLimits, code_from_messages, sandbox_error
from holynb.server.registry import Model, ModelRegistry

__all__ = ["BROKEN_REPLY", "PythonModel", "broken", "python_model", "register_python_models"]

WRAPS = ("plain", "fence", "prose", "python")
BROKEN_REPLY = (
    "I looked at your code carefully. It should run without trouble and print what its print "
    "calls say; the whole thing takes a few milliseconds. Let me know if I can help further!"
)
_GARBLED = (
    "Ran it. Result: success (yes), and it printed what you would expect; it took about "
    "{ms} ms. Anything else?"
)
_MARKER_RE = re.compile(r"#\s*holynb:\s*([\w=-]+)")
_PYTHON_NAMES = ("python", "python3", "py", "")
_DIGITS = str.maketrans("0123456789", "1234567890")


class PythonModel:
    """The ``local/python`` respond function; also counts what it was asked, for tests.

    ``calls`` (requests answered), ``repairs`` (those that were repair round-trips),
    ``active`` and ``peak_active`` (requests being answered at once). ``reset()`` zeroes them.

    >>> server.register_model("local/python-fast", PythonModel(SandboxLimits(timeout_s=2)))

    It runs code from the request, so the server serves it only when code models are enabled
    (``LocalServer(python=True)``, ``holynb serve --enable-python``).
    """

    runs_code = True

    def __init__(self, limits: SandboxLimits | None = None) -> None:
        self.limits = limits or SandboxLimits(timeout_s=10.0, max_output_bytes=100_000)
        self.reset()

    def reset(self) -> None:
        """Zero the counters."""
        self.calls = 0
        self.repairs = 0
        self.active = 0
        self.peak_active = 0

    async def __call__(self, messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
        # Counters change only on the server's loop thread: no lock needed.
        self.calls += 1
        self.active += 1
        self.peak_active = max(self.peak_active, self.active)
        try:
            return await self._answer(messages)
        finally:
            self.active -= 1

    async def _answer(self, messages: list[dict[str, Any]]) -> str:
        repair = any(m.get("role") == "assistant" for m in messages)
        self.repairs += repair
        found = code_from_messages(messages)
        if found is None:
            message = "no fenced code block (```python ... ```) in the user's messages"
            return _plain(_payload(False, "", ("ValueError", message), 0.0))
        language, code = found
        if language not in _PYTHON_NAMES:
            message = f"local/python runs Python only, not {language!r}"
            return _plain(_payload(False, "", ("UnsupportedLanguage", message), 0.0))
        markers = set(_MARKER_RE.findall(code))
        digest = hashlib.blake2b(code.encode(), digest_size=4).digest()
        if "garble" in markers and not repair:
            return _GARBLED.format(ms=digest[0] % 9 + 1)
        result = await self.limits.run(code)
        error = sandbox_error(result)
        output = result.stdout
        if "lie" in markers:
            output = _lie(output)
        payload = _payload(
            error is None,
            output,
            None if error is None else (error.name, error.message),
            result.duration_ms,
        )
        wrap = next((m[5:] for m in markers if m.startswith("wrap=")), None)
        if wrap not in WRAPS:
            wrap = WRAPS[digest[0] % len(WRAPS)]
        return _wrap(payload, "plain" if repair else wrap)


def _payload(
    success: bool, output: str, error: tuple[str, str] | None, ms: float
) -> dict[str, Any]:
    return {
        "success": success,
        "output": output,
        "error": None if error is None else {"name": error[0], "message": error[1]},
        "execution_time_ms": ms,
    }


def _plain(payload: dict[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False)


def _wrap(payload: dict[str, Any], style: str) -> str:
    if style == "fence":
        return f"```json\n{json.dumps(payload, ensure_ascii=False, indent=2)}\n```"
    if style == "prose":
        return (
            f"Here is the result of running your code:\n\n{_plain(payload)}\n\n"
            "Let me know if you want me to explain the output."
        )
    if style == "python":
        return repr(payload)  # True/None and single quotes, as some models write it
    return _plain(payload)


def _lie(output: str) -> str:
    """A wrong but plausible output: every digit shifted by one (or a line added)."""
    shifted = output.translate(_DIGITS)
    return shifted if shifted != output else output + "Done.\n"


def broken(messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    """The ``local/broken`` respond function: always prose, never JSON."""
    return BROKEN_REPLY


def register_python_models(
    registry: ModelRegistry,
    limits: SandboxLimits | None = None,
    *,
    name: str = "local/python",
    broken_name: str = "local/broken",
) -> PythonModel:
    """Register ``local/python`` (running code under ``limits``) and ``local/broken``; return
    the PythonModel, whose counters tests read.

    >>> python = register_python_models(server.models, SandboxLimits(timeout_s=2))
    """
    python = PythonModel(limits)
    registry.register(name, python, runs_code=True)
    registry.register(broken_name, broken, runs_code=True)  # the interpreter's pair: off too
    return python


def python_model(registry: ModelRegistry, name: str = "local/python") -> PythonModel | None:
    """The PythonModel registered as ``name``, if that is one."""
    model: Model | None = registry.get(name)
    respond = model.respond if model is not None else None
    return respond if isinstance(respond, PythonModel) else None
