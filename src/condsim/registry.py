"""One registry for models and one for benchmarks, with did-you-mean errors.

Models are registered either by exact name (``test/tiny-clip``) or by a *scheme prefix*
(``hf:``, ``open_clip:``, ``combine:``) whose factory receives the rest of the name.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from condsim.errors import ModelError

ModelFactory = Callable[..., Any]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: ModelFactory
    description: str
    is_scheme: bool
    dim: int | None = None  # embedding dimension, when fixed (schemes: read from the checkpoint)
    conditions: tuple[str, ...] = ()  # condition kinds the model's queries accept


_MODELS: dict[str, ModelEntry] = {}
_BENCHMARKS: dict[str, Any] = {}

# Modules whose import registers built-in models/benchmarks (imported lazily, never at
# ``import condsim`` time, so importing the package stays cheap and side-effect free).
_BUILTIN_MODEL_MODULES = (
    "condsim.models.clip_hf",
    "condsim.models.tiny",
    "condsim.models.combiner",
    "condsim.models.condvit",
    "condsim.models.open_clip",
    "condsim.models.textual_inversion",
)
#: the package whose modules register the built-in benchmarks: every module in it is
#: imported once (a new benchmark is a new file there, nothing to list)
_BENCHMARK_PACKAGE = "condsim.benchmarks"


def register_model(
    name: str, *, description: str = "", scheme: bool = False, dim: int | None = None,
    conditions: tuple[str, ...] = ("category", "text"),
) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering ``factory`` under ``name``.

    With ``scheme=True``, ``name`` is a prefix such as ``"hf:"`` and the factory is called
    with the remainder of the requested name as its first argument.
    """

    def deco(factory: ModelFactory) -> ModelFactory:
        _MODELS[name] = ModelEntry(name, factory, description or (factory.__doc__ or "").strip()
                                   .split("\n")[0], scheme, dim, conditions)
        return factory

    return deco


def _load_builtins(modules: tuple[str, ...]) -> None:
    for mod in modules:
        importlib.import_module(mod)


_benchmarks_loaded = False


def _load_benchmarks() -> None:
    """Import every module of :data:`_BENCHMARK_PACKAGE` (each registers its spec)."""
    global _benchmarks_loaded
    if _benchmarks_loaded:
        return
    import pkgutil

    package = importlib.import_module(_BENCHMARK_PACKAGE)
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{_BENCHMARK_PACKAGE}.{info.name}")
    _benchmarks_loaded = True


def list_models() -> list[ModelEntry]:
    """All registered models and schemes, sorted by name."""
    _load_builtins(_BUILTIN_MODEL_MODULES)
    return sorted(_MODELS.values(), key=lambda e: e.name)


def did_you_mean(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def create_model(name: str, **kwargs: Any) -> Any:
    """Create the model registered as ``name`` (exact name or ``scheme:rest``).

    ``precision`` (``auto`` | ``fp32`` | ``bf16`` | ``fp16``; default ``auto``: bf16 autocast
    on CUDA, fp32 on CPU) and ``channels_last`` apply to pixel encoders
    (:meth:`~condsim.models.base.PixelEncoder.set_precision`); other kwargs (``device``) go to
    the model's factory. Raises :class:`ModelError` with close matches when ``name`` is unknown.
    """
    precision = kwargs.pop("precision", "auto")
    channels_last = kwargs.pop("channels_last", None)
    _load_builtins(_BUILTIN_MODEL_MODULES)
    model = _create(name, kwargs)
    if hasattr(model, "set_precision"):
        model.set_precision(precision, channels_last)
    return model


def check_model_name(name: str) -> None:
    """Raise :class:`ModelError` (with close matches) unless ``name`` is a registered model
    or starts with a registered scheme; loads nothing (a command submitting a job checks the
    name before it waits in a queue)."""
    _load_builtins(_BUILTIN_MODEL_MODULES)
    _entry(name)


def _entry(name: str) -> tuple[ModelEntry, str | None]:
    """The registry entry of ``name`` and, for a scheme, the rest of the name."""
    if name in _MODELS and not _MODELS[name].is_scheme:
        return _MODELS[name], None
    for entry in sorted(_MODELS.values(), key=lambda e: -len(e.name)):
        if entry.is_scheme and name.startswith(entry.name):
            return entry, name[len(entry.name):]
    names = [e.name for e in _MODELS.values()]
    raise ModelError(
        f"Unknown model {name!r}.{did_you_mean(name, names)} "
        f"Run `condsim models` to list models; schemes: "
        f"{', '.join(e.name + '<...>' for e in _MODELS.values() if e.is_scheme)}"
    )


def _create(name: str, kwargs: dict[str, Any]) -> Any:
    entry, rest = _entry(name)
    return entry.factory(**kwargs) if rest is None else entry.factory(rest, **kwargs)


def register_benchmark(spec: Any) -> Any:
    """Register a :class:`~condsim.benchmarks.spec.BenchmarkSpec` under ``spec.name``;
    a second spec under the same name is refused."""
    if spec.name in _BENCHMARKS and _BENCHMARKS[spec.name] is not spec:
        raise ModelError(f"a benchmark named {spec.name!r} is already registered")
    _BENCHMARKS[spec.name] = spec
    return spec


def get_benchmark(name: str) -> Any:
    """The :class:`~condsim.benchmarks.spec.BenchmarkSpec` named ``name`` (did-you-mean on a
    typo)."""
    spec = find_benchmark(name)
    if spec is None:
        from condsim.errors import ConfigError

        raise ConfigError(
            f"unknown benchmark {name!r}.{did_you_mean(name, list(_BENCHMARKS))} "
            f"Known: {', '.join(sorted(_BENCHMARKS))}"
        )
    return spec


def find_benchmark(name: str) -> Any:
    """The spec named ``name``, or ``None``."""
    _load_benchmarks()
    return _BENCHMARKS.get(name)


def list_benchmarks() -> list[Any]:
    """Every registered :class:`~condsim.benchmarks.spec.BenchmarkSpec`, sorted by name."""
    _load_benchmarks()
    return [_BENCHMARKS[n] for n in sorted(_BENCHMARKS)]
