"""The offline models the local server serves by default, and the one-model stand-in.

The models themselves live in their own modules (``models``: echo, slow and prose;
``vision``; ``python_model``; ``json_model``); this module only gathers them into registries,
so no model module imports another's registry.
"""

from __future__ import annotations

from holynb.server.json_model import register_json_models
from holynb.server.models import echo, prose
from holynb.server.python_model import register_python_models
from holynb.server.registry import Model, ModelRegistry
from holynb.server.vision import vision

__all__ = ["default_models", "single_model"]


def default_models() -> ModelRegistry:
    """A fresh registry with ``local/echo``, ``local/slow`` (echo with latency and pacing),
    ``local/vision`` (describes the images it got), the code-interpreter models
    ``local/python`` and ``local/broken``, and the structured-answer models ``local/json`` and
    ``local/json-noformat``."""
    registry = ModelRegistry(
        [
            Model("local/echo", echo),
            Model("local/slow", echo, latency_ms=400.0, tokens_per_second=40.0),
            Model("local/vision", vision),
        ]
    )
    register_python_models(registry)
    register_json_models(registry)
    return registry


def single_model(name: str) -> ModelRegistry:
    """A registry serving only ``name``: a stand-in for a user's own endpoint (a relay, vLLM,
    Ollama) that knows one model and no ``local/...`` ones. It answers in prose (``prose``),
    never JSON or code, as a weak model often does."""
    if not name or name.startswith("local/"):
        raise ValueError(f"Pick a model name outside local/..., not {name!r}.")
    return ModelRegistry([Model(name, prose, owned_by="user")])
