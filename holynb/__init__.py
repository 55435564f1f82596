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

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "Session": "holynb.session",
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
    "extract_json": "holynb.jsonx",
    "extract_json_detailed": "holynb.jsonx",
    "JSONExtraction": "holynb.jsonx",
    "run_sandboxed": "holynb.sandbox",
    "CodeInterpreter": "holynb.interpreter",
    "ExecutionResult": "holynb.execution",
    "ExecutionError": "holynb.execution",
    "SandboxLimits": "holynb.interpret_protocol",
    "RunManyResult": "holynb.execution",
    "result_card_html": "holynb.execution",
    "arun_sandboxed": "holynb.sandbox",
    "SandboxResult": "holynb.sandbox",
    "BatchJob": "holynb.batch_jobs",
    "batch_jsonl": "holynb.batch_files",
    "validate_batch_jsonl": "holynb.batch_files",
    "ImagePreset": "holynb.images",
}
_ERRORS = (
    "HolynbError",
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
)
_EXPORTS.update(dict.fromkeys(_ERRORS, "holynb.errors"))

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "BatchError",
    "BatchJob",
    "BatchNotSupportedError",
    "BudgetExceededError",
    "CallRecord",
    "ChatResult",
    "CodeInterpreter",
    "ConfigurationError",
    "ConflictError",
    "CostEstimate",
    "ExecutionError",
    "ExecutionResult",
    "HolynbError",
    "ImageError",
    "ImagePreset",
    "JSONExtraction",
    "JSONExtractionError",
    "Limits",
    "LocalServer",
    "MissingAPIKeyError",
    "ModelPrice",
    "NotFoundError",
    "PermissionDeniedError",
    "PriceTable",
    "RateLimitError",
    "RetryPolicy",
    "RunManyResult",
    "SandboxLimits",
    "SandboxResult",
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
    "local_session",
    "result_card_html",
    "run_sandboxed",
    "validate_batch_jsonl",
]

if TYPE_CHECKING:
    from holynb._config import Limits, RetryPolicy, Secret, Timeout
    from holynb.batch_files import batch_jsonl, validate_batch_jsonl
    from holynb.batch_jobs import BatchJob
    from holynb.demo import local_session
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
        ImageError,
        JSONExtractionError,
        MissingAPIKeyError,
        NotFoundError,
        PermissionDeniedError,
        RateLimitError,
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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
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
