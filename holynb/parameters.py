"""Which keyword arguments are chat parameters, so a typo is never sent as one.

Extra keyword arguments of ``chat``, ``stream``, ``map``, ``compare`` and ``batch`` go into the
request body. Only the parameters of the chat completions and Messages APIs are taken there; a
misspelt one (``max_token=5``) or a holynb setting in the wrong place (``budget_usd=`` on a
call: a relay that ignores unknown fields would run with no budget) is a ``TypeError`` before
anything is sent, naming the close match. Anything a provider adds goes through
``extra_body={...}``, as in the official SDKs.

>>> check_params({"top_p": 0.9, "extra_body": {"top_k": 3}}, "chat")   # passes
>>> body_params({"top_p": 0.9, "extra_body": {"top_k": 3}})
{'top_p': 0.9, 'top_k': 3}
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

__all__ = [
    "CALL_OPTIONS",
    "CHAT_PARAMETERS",
    "JOB_OPTIONS",
    "SESSION_SETTINGS",
    "body_params",
    "check_params",
]

# The request parameters of OpenAI's chat completions and Anthropic's Messages API (holynb
# translates the OpenAI names: stop -> stop_sequences, user -> metadata.user_id).
CHAT_PARAMETERS = frozenset(
    {
        # chat completions
        "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
        "max_completion_tokens", "max_tokens", "metadata", "modalities", "n",
        "parallel_tool_calls", "prediction", "presence_penalty", "prompt_cache_key",
        "reasoning_effort", "response_format", "safety_identifier", "seed", "service_tier",
        "stop", "store", "stream_options", "temperature", "tool_choice", "tools",
        "top_logprobs", "top_p", "user", "verbosity", "web_search_options",
        # Messages API
        "container", "mcp_servers", "stop_sequences", "thinking", "top_k",
    }
)  # fmt: skip

# holynb's own options of a call, taken with the parameters and never sent as they are:
# prompt_cache="5m" | "1h" marks the prompt's stable prefix for Anthropic's cache.
CALL_OPTIONS = frozenset({"prompt_cache"})
# Options of map, compare and batch: dry_run=True shows what would be sent, sending nothing.
JOB_OPTIONS = frozenset({"dry_run"})
_JOBS = ("map", "compare", "batch")

# Settings of a Session (or of map/batch themselves): never request parameters.
SESSION_SETTINGS = frozenset(
    {
        "api", "api_key", "base_url", "bearer", "budget_usd", "cache", "checkpoint",
        "concurrency", "errors", "image_preset", "images", "log_path", "max_image_bytes",
        "max_retries", "prices", "progress", "retry", "rpm", "schema", "template", "timeout",
        "tpm",
    }
)  # fmt: skip


def check_params(params: Mapping[str, Any], where: str) -> None:
    """Raise ``TypeError`` for a keyword argument that is not a chat parameter (nor
    ``extra_body``), before anything is sent; ``where`` names the method (``"map"``)."""
    unknown = [
        name
        for name in params
        if name not in CHAT_PARAMETERS
        and name not in CALL_OPTIONS
        and name != "extra_body"
        and not (name in JOB_OPTIONS and where in _JOBS)
    ]
    if unknown:
        raise TypeError(_explain(unknown, where))
    extra = params.get("extra_body")
    if extra is not None and not isinstance(extra, Mapping):
        raise TypeError(f"extra_body must be a dict of request fields, got {type(extra).__name__}.")


def body_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` as they go into the request body: ``extra_body``'s fields merged in,
    holynb's own options (``CALL_OPTIONS``, ``JOB_OPTIONS``) left out."""
    out = {k: v for k, v in params.items() if k not in _NOT_SENT}
    out.update(params.get("extra_body") or {})
    return out


_NOT_SENT = CALL_OPTIONS | JOB_OPTIONS | {"extra_body"}


def _explain(unknown: list[str], where: str) -> str:
    name = unknown[0]
    if name in SESSION_SETTINGS:
        why = (
            f"{name} is a Session setting, not a request parameter: "
            f"holynb.Session({name}=...) or session.{name} = ..."
        )
        if name in ("concurrency", "checkpoint", "progress", "template", "schema", "images"):
            why = f"{name} is not taken by {where}(); see help(Session.{where})"
    else:
        close = difflib.get_close_matches(name, sorted(CHAT_PARAMETERS | SESSION_SETTINGS), 1)
        why = f"did you mean {close[0]}?" if close else "it is not a chat parameter"
    more = f" (and {', '.join(unknown[1:])})" if len(unknown) > 1 else ""
    return (
        f"{where}() got an unexpected keyword argument {name!r}{more}: {why}. Nothing was "
        "sent. A provider's own fields go through extra_body={...}."
    )
