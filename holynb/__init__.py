"""holynb: a Jupyter-first toolkit for OpenAI-compatible LLM APIs.

>>> import holynb
>>> s = holynb.Session(model="gpt-4.1")
>>> s.chat("Say hi").text

Public names are re-exported here; the modules behind them load on first use, so
``import holynb`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from holynb.errors import show_short as _show_short_warnings

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "Session": "holynb.session",
    "ChatStream": "holynb.chat_stream",
    "AsyncChatStream": "holynb.chat_stream",
    "ChatResult": "holynb.results",
    "Usage": "holynb.results",
    "CostEstimate": "holynb.results",
    "PriceTable": "holynb.prices",
    "ModelPrice": "holynb.prices",
    "CallRecord": "holynb.ledger",
    "Timeout": "holynb._config",
    "RetryPolicy": "holynb._config",
    "Limits": "holynb._config",
    "Secret": "holynb._config",
    "LocalServer": "holynb.server",
    "local_session": "holynb.demo",
    "local_server": "holynb.demo",
    "extract_json": "holynb.jsonx",
    "extract_json_detailed": "holynb.jsonx",
    "JSONExtraction": "holynb.jsonx",
    "run_sandboxed": "holynb.sandbox",
    "CodeInterpreter": "holynb.interpreter",
    "ExecutionResult": "holynb.execution",
    "ExecutionError": "holynb.execution",
    "SandboxLimits": "holynb.sandbox",
    "RunManyResult": "holynb.execution",
    "result_card_html": "holynb.execution",
    "arun_sandboxed": "holynb.sandbox",
    "SandboxResult": "holynb.sandbox",
    "BatchJob": "holynb.batch_jobs",
    "batch_jsonl": "holynb.batch_files",
    "validate_batch_jsonl": "holynb.batch_files",
    "side_by_side": "holynb.sidebyside",
    "ImagePreset": "holynb.images",
}
_ERRORS = (
    "HolynbError",
    "HolynbWarning",
    "ConfigurationError",
    "MissingAPIKeyError",
    "APIError",
    "APIConnectionError",
    "APITimeoutError",
    "APIStatusError",
    "BadRequestError",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "ConflictError",
    "RateLimitError",
    "ServerError",
    "StreamError",
    "StreamWarning",
    "APIResponseError",
    "BudgetExceededError",
    "BatchError",
    "BatchNotSupportedError",
    "ImageError",
    "JSONExtractionError",
    "PromptError",
    "SchemaValidationError",
    "MapInterrupted",
)
_EXPORTS.update(dict.fromkeys(_ERRORS, "holynb.errors"))

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncChatStream",
    "AuthenticationError",
    "BadRequestError",
    "BatchError",
    "BatchJob",
    "BatchNotSupportedError",
    "BudgetExceededError",
    "CallRecord",
    "ChatResult",
    "ChatStream",
    "CodeInterpreter",
    "ConfigurationError",
    "ConflictError",
    "CostEstimate",
    "ExecutionError",
    "ExecutionResult",
    "HolynbError",
    "HolynbWarning",
    "ImageError",
    "ImagePreset",
    "JSONExtraction",
    "JSONExtractionError",
    "Limits",
    "LocalServer",
    "MapInterrupted",
    "MissingAPIKeyError",
    "ModelPrice",
    "NotFoundError",
    "PermissionDeniedError",
    "PriceTable",
    "PromptError",
    "RateLimitError",
    "RetryPolicy",
    "RunManyResult",
    "SandboxLimits",
    "SandboxResult",
    "SchemaValidationError",
    "Secret",
    "ServerError",
    "Session",
    "StreamError",
    "StreamWarning",
    "Timeout",
    "Usage",
    "__version__",
    "arun_sandboxed",
    "batch_jsonl",
    "extract_json",
    "extract_json_detailed",
    "local_server",
    "local_session",
    "result_card_html",
    "run_sandboxed",
    "side_by_side",
    "validate_batch_jsonl",
]

if TYPE_CHECKING:
    from holynb._config import Limits, RetryPolicy, Secret, Timeout
    from holynb.batch_files import batch_jsonl, validate_batch_jsonl
    from holynb.batch_jobs import BatchJob
    from holynb.chat_stream import AsyncChatStream, ChatStream
    from holynb.demo import local_server, local_session
    from holynb.errors import (
        APIConnectionError,
        APIError,
        APIResponseError,
        APIStatusError,
        APITimeoutError,
        AuthenticationError,
        BadRequestError,
        BatchError,
        BatchNotSupportedError,
        BudgetExceededError,
        ConfigurationError,
        ConflictError,
        HolynbError,
        HolynbWarning,
        ImageError,
        JSONExtractionError,
        MapInterrupted,
        MissingAPIKeyError,
        NotFoundError,
        PermissionDeniedError,
        PromptError,
        RateLimitError,
        SchemaValidationError,
        ServerError,
        StreamError,
        StreamWarning,
    )
    from holynb.images import ImagePreset
    from holynb.interpreter import (
        CodeInterpreter,
        ExecutionError,
        ExecutionResult,
        RunManyResult,
        SandboxLimits,
        result_card_html,
    )
    from holynb.jsonx import JSONExtraction, extract_json, extract_json_detailed
    from holynb.ledger import CallRecord
    from holynb.prices import ModelPrice, PriceTable
    from holynb.results import ChatResult, CostEstimate, Usage
    from holynb.sandbox import SandboxResult, arun_sandboxed, run_sandboxed
    from holynb.server import LocalServer
    from holynb.session import Session
    from holynb.sidebyside import side_by_side


# holynb's warnings (UnknownPriceWarning, BudgetWarning, ...) show as one short line in a cell
_show_short_warnings()


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None and not name.startswith("_"):
        try:  # a submodule used as an attribute: holynb.demo.local_server() without an import
            return importlib.import_module(f"holynb.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"holynb.{name}":
                raise
    if module is None:
        raise AttributeError(f"module 'holynb' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext holynb``: register the magics, and load the HTTP stack and the widget
    libraries in a background thread so the first ``%%llm`` cell does not wait for them."""
    import threading

    from holynb.magics import register

    register(ipython)
    threading.Thread(target=_prewarm, name="holynb-prewarm", daemon=True).start()


def _prewarm() -> None:
    for module in ("holynb._client", "holynb.display", "holynb.render", "ipywidgets"):
        try:
            importlib.import_module(module)
        except Exception:
            return
