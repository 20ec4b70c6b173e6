"""Benchmark metadata as data (mteb-style)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class BenchmarkMeta:
    name: str
    description: str
    main_score: str
    split: str
    protocol_version: str
    reference: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FunctionBenchmark:
    """A benchmark whose protocol is one ``evaluate(model, cfg, progress=...)`` function;
    :func:`register_function_benchmark` makes one per benchmark (no per-benchmark class)."""

    meta: BenchmarkMeta
    evaluate: Any

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    def run(self, model: Any, *, progress: Any = None) -> Any:
        from condsim.progress import no_progress

        return type(self).evaluate(model, self.cfg, progress=progress or no_progress)


def register_function_benchmark(name: str, meta: BenchmarkMeta, evaluate: Any) -> type:
    """Register ``evaluate`` as benchmark ``name`` (see :func:`condsim.registry.get_benchmark`)."""
    from condsim.registry import register_benchmark

    cls = type(f"{name.title()}Benchmark", (FunctionBenchmark,),
               {"meta": meta, "evaluate": staticmethod(evaluate)})
    return register_benchmark(name)(cls)
