"""holynb: a Jupyter-first toolkit for OpenAI-compatible LLM APIs.

>>> import holynb
>>> s = holynb.Session(model="gpt-4.1")
>>> s.chat("Say hi").text

Public names are re-exported here; the modules behind them load on first use, so
``import holynb`` stays fast. ``holynb.__version__`` comes from the installed package's
metadata (the version is written only in pyproject.toml).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from holynb.errors import show_short as _show_short_warnings

# The public API: each name and the module it is imported from. This table is the one list;
# `__all__` is built from it, the TYPE_CHECKING imports below repeat it for type checkers, and
# tests/test_exports.py fails (printing the corrected table) when any of them drift.
_EXPORTS: dict[str, str] = {
    "Limits": "holynb._config",
    "RetryPolicy": "holynb._config",
    "Secret": "holynb._config",
    "Timeout": "holynb._config",
    "batch_jsonl": "holynb.batch.files",
    "validate_batch_jsonl": "holynb.batch.files",
    "BatchJob": "holynb.batch.jobs",
    "AsyncChatStream": "holynb.chat_stream",
    "ChatStream": "holynb.chat_stream",
    "cost_summary": "holynb.formatting",
    "local_server": "holynb.offline",
    "local_session": "holynb.offline",
    "APIConnectionError": "holynb.errors",
    "APIError": "holynb.errors",
    "APIResponseError": "holynb.errors",
    "APIStatusError": "holynb.errors",
    "APITimeoutError": "holynb.errors",
    "AuthenticationError": "holynb.errors",
    "BadRequestError": "holynb.errors",
    "BatchError": "holynb.errors",
    "BatchNotSupportedError": "holynb.errors",
    "BudgetExceededError": "holynb.errors",
    "ConfigurationError": "holynb.errors",
    "ConflictError": "holynb.errors",
    "HolynbError": "holynb.errors",
    "HolynbWarning": "holynb.errors",
    "ImageError": "holynb.errors",
    "JSONExtractionError": "holynb.errors",
    "MapInterrupted": "holynb.errors",
    "MissingAPIKeyError": "holynb.errors",
    "NotFoundError": "holynb.errors",
    "PermissionDeniedError": "holynb.errors",
    "PromptError": "holynb.errors",
    "RateLimitError": "holynb.errors",
    "SchemaValidationError": "holynb.errors",
    "ServerError": "holynb.errors",
    "StoreError": "holynb.errors",
    "StoreWarning": "holynb.errors",
    "StreamError": "holynb.errors",
    "StreamWarning": "holynb.errors",
    "ExecutionError": "holynb.interpreter.execution",
    "ExecutionResult": "holynb.interpreter.execution",
    "result_card_html": "holynb.interpreter.execution",
    "RunManyResult": "holynb.interpreter.execution",
    "ImagePreset": "holynb.images",
    "CodeInterpreter": "holynb.interpreter.code_interpreter",
    "extract_json": "holynb.jsonx",
    "extract_json_detailed": "holynb.jsonx",
    "JSONExtraction": "holynb.jsonx",
    "CallRecord": "holynb.ledger",
    "ModelPrice": "holynb.prices",
    "PriceTable": "holynb.prices",
    "ChatResult": "holynb.results",
    "CostEstimate": "holynb.results",
    "Usage": "holynb.results",
    "arun_sandboxed": "holynb.interpreter.sandbox",
    "run_sandboxed": "holynb.interpreter.sandbox",
    "SandboxLimits": "holynb.interpreter.sandbox",
    "SandboxResult": "holynb.interpreter.sandbox",
    "LocalServer": "holynb.server",
    "Session": "holynb.session",
    "side_by_side": "holynb.notebook.side_by_side",
    "budgets": "holynb.team.budgets",
    "set_budget": "holynb.team.budgets",
}

__all__ = ["__version__", *_EXPORTS]


if TYPE_CHECKING:  # the same table, spelled out for type checkers and IDEs (`X as X` re-exports)
    from holynb._config import (
        Limits as Limits,
        RetryPolicy as RetryPolicy,
        Secret as Secret,
        Timeout as Timeout,
    )
    from holynb.batch.files import (
        batch_jsonl as batch_jsonl,
        validate_batch_jsonl as validate_batch_jsonl,
    )
    from holynb.batch.jobs import BatchJob as BatchJob
    from holynb.chat_stream import AsyncChatStream as AsyncChatStream, ChatStream as ChatStream
    from holynb.errors import (
        APIConnectionError as APIConnectionError,
        APIError as APIError,
        APIResponseError as APIResponseError,
        APIStatusError as APIStatusError,
        APITimeoutError as APITimeoutError,
        AuthenticationError as AuthenticationError,
        BadRequestError as BadRequestError,
        BatchError as BatchError,
        BatchNotSupportedError as BatchNotSupportedError,
        BudgetExceededError as BudgetExceededError,
        ConfigurationError as ConfigurationError,
        ConflictError as ConflictError,
        HolynbError as HolynbError,
        HolynbWarning as HolynbWarning,
        ImageError as ImageError,
        JSONExtractionError as JSONExtractionError,
        MapInterrupted as MapInterrupted,
        MissingAPIKeyError as MissingAPIKeyError,
        NotFoundError as NotFoundError,
        PermissionDeniedError as PermissionDeniedError,
        PromptError as PromptError,
        RateLimitError as RateLimitError,
        SchemaValidationError as SchemaValidationError,
        ServerError as ServerError,
        StoreError as StoreError,
        StoreWarning as StoreWarning,
        StreamError as StreamError,
        StreamWarning as StreamWarning,
    )
    from holynb.formatting import cost_summary as cost_summary
    from holynb.images import ImagePreset as ImagePreset
    from holynb.interpreter.code_interpreter import CodeInterpreter as CodeInterpreter
    from holynb.interpreter.execution import (
        ExecutionError as ExecutionError,
        ExecutionResult as ExecutionResult,
        RunManyResult as RunManyResult,
        result_card_html as result_card_html,
    )
    from holynb.interpreter.sandbox import (
        SandboxLimits as SandboxLimits,
        SandboxResult as SandboxResult,
        arun_sandboxed as arun_sandboxed,
        run_sandboxed as run_sandboxed,
    )
    from holynb.jsonx import (
        JSONExtraction as JSONExtraction,
        extract_json as extract_json,
        extract_json_detailed as extract_json_detailed,
    )
    from holynb.ledger import CallRecord as CallRecord
    from holynb.notebook.side_by_side import side_by_side as side_by_side
    from holynb.offline import local_server as local_server, local_session as local_session
    from holynb.prices import ModelPrice as ModelPrice, PriceTable as PriceTable
    from holynb.results import (
        ChatResult as ChatResult,
        CostEstimate as CostEstimate,
        Usage as Usage,
    )
    from holynb.server import LocalServer as LocalServer
    from holynb.session import Session as Session
    from holynb.team.budgets import budgets as budgets, set_budget as set_budget


# holynb's warnings (UnknownPriceWarning, BudgetWarning, ...) show as one short line in a cell
_show_short_warnings()


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from holynb._version import version

        globals()["__version__"] = value = version()
        return value
    module = _EXPORTS.get(name)
    if module is None and not name.startswith("_"):
        try:  # a submodule used as an attribute: holynb.offline.local_server() without an import
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
    return sorted(set(globals()) | set(__all__))


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext holynb``: register the magics, and load the HTTP stack and the widget
    libraries in a background thread so the first ``%%llm`` cell does not wait for them."""
    import threading

    from holynb.notebook.magics import register

    register(ipython)
    threading.Thread(target=_prewarm, name="holynb-prewarm", daemon=True).start()


def _prewarm() -> None:
    for module in ("holynb._client", "holynb.notebook.display", "holynb.render", "ipywidgets"):
        try:
            importlib.import_module(module)
        except Exception:
            return
