"""Run models on a suite of benchmarks described in one YAML file (mteb-style).

A suite file lists runs; each names its benchmark, optionally a run name (default: the
benchmark, plus the protocol variant when the file repeats a benchmark), and the fields of
that benchmark's config (the dataclass of ``condsim.benchmarks.<name>``)::

    - benchmark: lrvsf
      data_root: /data/lrvsf-test
      conditioning: category
    - benchmark: lrvsf
      name: lrvsf-text
      data_root: /data/lrvsf-test
      conditioning: text
    - benchmark: genecis
      annotations: /data/genecis
      coco_root: /data/coco/val2017
      vg_roots: [/data/vg/VG_100K, /data/vg/VG_100K_2]
    - benchmark: cirr
      root: /data/cirr

:func:`run_suite` evaluates every model on every run, writing
``OUT/<model>/<run>/results.json``, one model loaded once and one embedding cache shared by
all. The whole file is checked before anything runs. A run whose ``results.json`` exists is
kept (the suite resumes). A run that fails with a clear error is recorded and the others go
on. ``OUT/suite.json`` lists every (model, run) with its status and headline.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from condsim.errors import CondsimError, DataError
from condsim.io import atomic_write_text
from condsim.progress import ProgressFactory, no_progress

logger = logging.getLogger(__name__)


def _benchmarks() -> dict[str, tuple[type, Callable[..., Any]]]:
    from condsim.benchmarks.circo import CircoConfig, evaluate_circo
    from condsim.benchmarks.cirr import CirrConfig, evaluate_cirr
    from condsim.benchmarks.fashioniq import FashionIQConfig, evaluate_fashioniq
    from condsim.benchmarks.genecis import GenecisConfig, evaluate_genecis
    from condsim.benchmarks.lrvsf import LRVSFConfig, evaluate_lrvsf
    from condsim.benchmarks.mitstates import MitStatesConfig, evaluate_mitstates

    return {"lrvsf": (LRVSFConfig, evaluate_lrvsf), "genecis": (GenecisConfig, evaluate_genecis),
            "cirr": (CirrConfig, evaluate_cirr), "circo": (CircoConfig, evaluate_circo),
            "fashioniq": (FashionIQConfig, evaluate_fashioniq),
            "mitstates": (MitStatesConfig, evaluate_mitstates)}


@dataclass(frozen=True)
class SuiteRun:
    """One benchmark run of a suite: its name (the output folder) and its config."""

    benchmark: str
    name: str
    config: Any


def _coerce(cls: type, fields: dict[str, Any], where: str) -> Any:
    """``cls(**fields)`` with YAML lists turned into the tuples the configs hold, and every
    unknown or missing field named."""
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise DataError(f"{where}: unknown field(s) {unknown}; {cls.__name__} takes "
                        f"{sorted(known)}")
    required = [n for n, f in known.items() if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]  # type: ignore[misc]
    missing = [n for n in required if n not in fields]
    if missing:
        raise DataError(f"{where}: missing required field(s) {missing}")
    values = {}
    for name, value in fields.items():
        if isinstance(value, list) and "tuple" in str(hints.get(name, "")):
            value = tuple(value)
        values[name] = value
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: {exc}") from exc


def evaluate(model: Any, benchmark: str, out_dir: str | Path | None = None, *,
             progress: ProgressFactory = no_progress, **config: Any) -> Any:
    """Run one benchmark: ``condsim.evaluate("hf:/models/clip", "cirr", root="/data/cirr")``.

    ``model`` is a model name or an encoder object; ``config`` holds the fields of the
    benchmark's config (as in a suite file; lists become tuples). Returns the
    :class:`~condsim.results.run_result.RunResult` and, with ``out_dir``, writes its
    ``results.json``."""
    benchmarks = _benchmarks()
    if benchmark not in benchmarks:
        from condsim.registry import did_you_mean

        hint = did_you_mean(benchmark, list(benchmarks))
        raise DataError(f"unknown benchmark {benchmark!r}.{hint} "
                        f"Known: {', '.join(sorted(benchmarks))}")
    cls, run = benchmarks[benchmark]
    cfg = _coerce(cls, config, f"condsim.evaluate({benchmark!r})")
    if isinstance(model, str):
        from condsim.registry import create_model

        model = create_model(model)
    return run(model, cfg, out_dir, progress=progress)


def read_suite(path: str | Path) -> list[SuiteRun]:
    """Parse and check a suite file (see the module docstring)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: suite file not found")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise DataError(f"{p}: malformed YAML ({exc})") from exc
    if not isinstance(raw, list) or not raw:
        raise DataError(f"{p}: expected a non-empty list of runs (- benchmark: ... entries)")
    benchmarks = _benchmarks()
    runs: list[SuiteRun] = []
    for i, entry in enumerate(raw):
        where = f"{p} run {i + 1}"
        if not isinstance(entry, dict) or "benchmark" not in entry:
            raise DataError(f"{where}: expected a mapping with a 'benchmark' key")
        fields = dict(entry)
        bench = str(fields.pop("benchmark"))
        if bench not in benchmarks:
            raise DataError(f"{where}: unknown benchmark {bench!r}; known: "
                            f"{', '.join(sorted(benchmarks))}")
        name = str(fields.pop("name", ""))
        cfg = _coerce(benchmarks[bench][0], fields, f"{where} ({bench})")
        runs.append(SuiteRun(bench, name, cfg))
    unnamed: dict[str, int] = {}
    for r in runs:
        if not r.name:
            unnamed[r.benchmark] = unnamed.get(r.benchmark, 0) + 1
    named, seen = [], dict.fromkeys(unnamed, 0)
    for r in runs:
        name = r.name
        if not name:  # the benchmark, or benchmark-variant (-k) when it repeats unnamed
            seen[r.benchmark] += 1
            name = r.benchmark if unnamed[r.benchmark] == 1 else \
                f"{r.benchmark}-{_variant(r) or seen[r.benchmark]}"
        named.append(dataclasses.replace(r, name=name))
    dupes = sorted({r.name for r in named if [x.name for x in named].count(r.name) > 1})
    if dupes:
        raise DataError(f"{p}: several runs are named {dupes}; give each a distinct 'name'")
    return named


def _variant(run: SuiteRun) -> str:
    from condsim.results.leaderboard import VARIANT_KEYS

    key = VARIANT_KEYS.get(run.benchmark)
    return str(getattr(run.config, key, "")) if key else ""


def model_slug(name: str) -> str:
    """A model name as a folder name."""
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name).strip("_")


def run_suite(
    models: Sequence[str], runs: Sequence[SuiteRun], out_dir: str | Path, *,
    make_model: Callable[[str], Any], cache_dir: str | None = None,
    num_workers: int | None = None, progress: ProgressFactory = no_progress,
) -> list[dict[str, Any]]:
    """Evaluate every model on every run (see the module docstring); returns the rows of
    ``suite.json``: model, run, benchmark, status (``done`` / ``kept`` / ``failed``), headline
    or error, and the results folder."""
    from condsim.results.run_result import load_result

    benchmarks = _benchmarks()
    out = Path(out_dir)
    rows: list[dict[str, Any]] = []
    for model_name in models:
        model = None
        for run in runs:
            folder = out / model_slug(model_name) / run.name
            row: dict[str, Any] = {"model": model_name, "run": run.name,
                                   "benchmark": run.benchmark, "folder": str(folder)}
            if (folder / "results.json").is_file():
                row.update(status="kept", headline=load_result(folder).headline)
                rows.append(row)
                continue
            cfg = run.config
            updates = {}
            if cache_dir is not None and getattr(cfg, "cache_dir", None) is None:
                updates["cache_dir"] = cache_dir
            if num_workers is not None and hasattr(cfg, "num_workers"):
                updates["num_workers"] = num_workers
            cfg = dataclasses.replace(cfg, **updates)
            try:
                if model is None:
                    model = make_model(model_name)
                result = benchmarks[run.benchmark][1](model, cfg, folder, progress=progress)
                row.update(status="done", headline=result.headline)
            except CondsimError as exc:
                logger.error("%s on %s failed: %s", model_name, run.name, exc)
                row.update(status="failed", error=str(exc))
            rows.append(row)
            _write_summary(out, rows)
    _write_summary(out, rows)
    return rows


def _write_summary(out: Path, rows: list[dict[str, Any]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "suite.json", json.dumps(rows, indent=2, allow_nan=False))
