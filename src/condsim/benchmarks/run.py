"""Running a registered benchmark: ``condsim.evaluate``, saving results and model cards.

The only entry points the CLI, the suite and the Python API use; each learns about the
benchmark from its :class:`~condsim.benchmarks.spec.BenchmarkSpec`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from condsim.benchmarks.spec import SHARED_FIELDS, BenchmarkSpec
from condsim.errors import ConfigError
from condsim.progress import ProgressFactory, no_progress
from condsim.registry import get_benchmark, list_benchmarks


def spec_for_config(cfg: Any) -> BenchmarkSpec:
    """The registered spec whose config class ``cfg`` is an instance of."""
    for spec in list_benchmarks():
        if type(cfg) is spec.config:
            return spec
    raise ConfigError(f"{type(cfg).__name__} is not the config of a registered benchmark")


def run_benchmark(model: Any, cfg: Any, out_dir: str | Path | None = None, *,
                  progress: ProgressFactory = no_progress) -> Any:
    """Evaluate ``model`` with ``cfg`` (a benchmark's config) and, with ``out_dir``, write
    ``results.json`` and ``model_card.yaml`` there (atomically). Launched by ``torchrun``
    (``WORLD_SIZE > 1``), the process group is started here if the caller has not: the
    ranks share the work, every rank returns the same result and rank 0 alone writes."""
    from condsim.distributed import maybe_init_distributed

    maybe_init_distributed()
    spec = spec_for_config(cfg)
    result = spec.evaluate(model, cfg, progress=progress)
    save_run(spec, result, out_dir)
    return result


def create_encoder(name: str, device: str | None = None, precision: str = "auto") -> Any:
    """The registered model ``name`` on ``device`` with ``precision``: the one place the CLI,
    suites and ``condsim.evaluate`` create models. Without a device, a ``torchrun`` rank on a
    CUDA machine takes its own GPU (``cuda:$LOCAL_RANK``), else the model's default."""
    import os

    import torch

    from condsim.registry import create_model

    if not device and "LOCAL_RANK" in os.environ and torch.cuda.is_available():
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    kwargs: dict[str, Any] = {"precision": precision}
    if device:
        kwargs["device"] = device
    return create_model(name, **kwargs)


def model_from(model: Any, cfg: Any) -> Any:
    """A model object: ``model`` itself, or the registered model of that name created with
    the config's device and precision (:func:`create_encoder`)."""
    if not isinstance(model, str):
        return model
    return create_encoder(model, getattr(cfg, "device", None), getattr(cfg, "precision", "auto"))


def evaluate(model: Any, benchmark: str, out_dir: str | Path | None = None, *,
             progress: ProgressFactory = no_progress, **config: Any) -> Any:
    """Run one benchmark: ``condsim.evaluate("hf:/models/clip", "cirr", root="/data/cirr")``.

    ``model`` is a model name or an encoder object; ``config`` holds the fields of the
    benchmark's config (as in a suite file or the CLI flags of ``condsim eval <benchmark>``;
    lists become tuples), checked before anything runs. Returns the
    :class:`~condsim.results.run_result.RunResult` and, with ``out_dir``, writes
    ``results.json`` and ``model_card.yaml``."""
    spec = get_benchmark(benchmark)
    cfg = spec.make_config(f"condsim.evaluate({benchmark!r})", **config)
    return run_benchmark(model_from(model, cfg), cfg, out_dir, progress=progress)


# --- results files --------------------------------------------------------------------------

_GROUP_KEYS = ("tasks", "categories")
_SKIP_KEYS = ("per_query", "query_ids", "condition_reliance")  # the latter: its own panel


def _metric_entries(node: Any, path: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """``{type, name, value}`` for every ``{"mean": ...}`` leaf under ``node`` (percent)."""
    if not isinstance(node, dict):
        return []
    if "mean" in node and isinstance(node["mean"], (int, float)):
        parts = [p for p in path if p not in _GROUP_KEYS]
        if len(parts) >= 2 and parts[-1].isdigit():  # (..., "recall", "1") -> recall_at_1
            parts = [*parts[:-2], f"{parts[-2]}_at_{parts[-1]}"]
        label = "/".join(parts)
        return [{"type": label, "name": label.replace("_at_", "@").replace("/", " "),
                 "value": round(float(node["mean"]) * 100, 2)}]
    out = []
    for key, child in node.items():
        if key not in _SKIP_KEYS:
            out += _metric_entries(child, (*path, str(key)))
    return out


def generic_model_card(spec: BenchmarkSpec, result: Any) -> dict[str, Any]:
    """HF ``model-index`` YAML dict of a run: every reported mean, in percent with 2
    decimals (CIs stay in ``results.json``)."""
    dataset = {"type": spec.dataset_type, "name": spec.dataset_name,
               "split": result.protocol.get("split", spec.split)}
    return {
        "tags": ["condsim", f"{spec.name}-benchmark"],
        "model-index": [{
            "name": result.model.get("name", "model"),
            "results": [{"task": {"type": "Retrieval"}, "dataset": dataset,
                         "metrics": _metric_entries(result.metrics)}],
        }],
    }


def model_card(result: Any) -> dict[str, Any]:
    """The model card of a run, by its benchmark's spec."""
    spec = get_benchmark(result.benchmark)
    return spec.model_card(result) if spec.model_card else generic_model_card(spec, result)


def save_run(spec: BenchmarkSpec, result: Any, out_dir: str | Path | None) -> None:
    """Write ``results.json`` and ``model_card.yaml`` (atomically) when ``out_dir`` is set;
    under ``torchrun`` only rank 0 writes."""
    from condsim.distributed import is_main_process

    if out_dir is None or not is_main_process():
        return
    from condsim.results.yaml_card import write_yaml

    result.save(Path(out_dir) / "results.json")
    card = spec.model_card(result) if spec.model_card else generic_model_card(spec, result)
    write_yaml(Path(out_dir) / "model_card.yaml", card)


__all__ = ["SHARED_FIELDS", "evaluate", "generic_model_card", "model_card", "model_from",
           "run_benchmark", "save_run", "spec_for_config", "compare_runs", "create_encoder"]


def compare_runs(a: Any, b: Any, *, seed: int = 0, n_resamples: int = 2000,
                 threshold: float = 0.002) -> dict[str, Any]:
    """Paired comparison ``B - A`` of two runs of one benchmark, paired as the benchmark's
    spec says (:func:`condsim.metrics.significance.compare`), as ``condsim.compare/1`` JSON."""
    from condsim.errors import DataError
    from condsim.metrics.significance import compare

    if a.benchmark != b.benchmark:
        raise DataError(f"cannot compare a {a.benchmark} run with a {b.benchmark} run")
    spec = get_benchmark(a.benchmark)
    return compare(a, b, spec.pairing, seed=seed, n_resamples=n_resamples,
                   threshold=threshold).to_dict()
