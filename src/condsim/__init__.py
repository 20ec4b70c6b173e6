"""condsim: exact, fast, reproducible conditional image similarity benchmarks and training."""

from condsim.benchmarks.run import evaluate
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
