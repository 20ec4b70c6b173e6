"""condsim: exact, fast, reproducible conditional image similarity benchmarks and training."""

from __future__ import annotations

import importlib
from typing import Any

from condsim.errors import CondsimError, DataError
from condsim.registry import create_model, list_models, register_model

__version__ = "0.1.0"

__all__ = [
    "CondsimError",
    "DataError",
    "__version__",
    "create_model",
    "evaluate",
    "list_models",
    "register_model",
]

#: public names defined in upper layers, loaded by name on first access (PEP 562), so the
#: package root (the bottom layer, imported by every module) imports nothing above it
_LAZY = {"evaluate": "condsim.benchmarks.run"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
