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
on. ``OUT/suite.json`` lists every (model, run) with its status and headline. Under
``torchrun`` every rank runs the suite in step (rank 0 decides which runs are kept), each
run's work is shared by the ranks, and rank 0 alone writes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from condsim.errors import CondsimError, ConfigError, DataError
from condsim.io import atomic_write_text
from condsim.progress import ProgressFactory, no_progress

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SuiteRun:
    """One benchmark run of a suite: its name (the output folder) and its config."""

    benchmark: str
    name: str
    config: Any


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
    from condsim.registry import get_benchmark

    runs: list[SuiteRun] = []
    for i, entry in enumerate(raw):
        where = f"{p} run {i + 1}"
        if not isinstance(entry, dict) or "benchmark" not in entry:
            raise DataError(f"{where}: expected a mapping with a 'benchmark' key")
        fields = dict(entry)
        bench = str(fields.pop("benchmark"))
        try:
            spec = get_benchmark(bench)
        except CondsimError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        name = str(fields.pop("name", ""))
        cfg = spec.make_config(f"{where} ({bench})", **fields)
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
    from condsim.registry import get_benchmark

    return get_benchmark(run.benchmark).variant_of(run.config)


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
    from condsim.benchmarks.run import run_benchmark
    from condsim.distributed import maybe_init_distributed
    from condsim.results.run_result import load_result

    maybe_init_distributed()  # under torchrun: every run shared by the ranks, rank 0 writes
    out = Path(out_dir)
    rows: list[dict[str, Any]] = []
    for model_name in models:
        model = None
        for run in runs:
            folder = out / model_slug(model_name) / run.name
            row: dict[str, Any] = {"model": model_name, "run": run.name,
                                   "benchmark": run.benchmark, "folder": str(folder)}
            if _kept(folder):
                row.update(status="kept", headline=load_result(folder).headline)
                rows.append(row)
                continue
            cfg = run.config
            updates = {}
            if cache_dir is not None and getattr(cfg, "cache_dir", None) is None:
                updates["cache_dir"] = cache_dir
            if num_workers is not None and hasattr(cfg, "num_workers"):
                updates["num_workers"] = num_workers
            cfg = dataclasses.replace(cfg, **updates)  # re-checked by the config
            try:
                if model is None:
                    model = make_model(model_name)
                result = run_benchmark(model, cfg, folder, progress=progress)
                row.update(status="done", headline=result.headline)
            except CondsimError as exc:
                logger.error("%s on %s failed: %s", model_name, run.name, exc)
                row.update(status="failed", error=str(exc))
            rows.append(row)
            _write_summary(out, rows)
    _write_summary(out, rows)
    return rows


def _kept(folder: Path) -> bool:
    """Whether the run in ``folder`` is finished (``results.json``): rank 0's answer on
    every rank under ``torchrun``, so that the ranks run the same runs in step."""
    from condsim.distributed import all_gather_objects

    return bool(all_gather_objects((folder / "results.json").is_file())[0])


def _write_summary(out: Path, rows: list[dict[str, Any]]) -> None:
    """``OUT/suite.json`` (rank 0 only under ``torchrun``)."""
    from condsim.distributed import is_main_process

    if not is_main_process():
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "suite.json", json.dumps(rows, indent=2, allow_nan=False))
