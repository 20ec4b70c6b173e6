"""Runs on disk and the leaderboard: one row per run (model, benchmark, headline metric with
its interval, seed, protocol version, date), sortable, written as markdown, CSV or JSON.

Values are percentages (the headline fraction x 100), the same in every output format.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from condsim.errors import DataError
from condsim.io import atomic_write_text
from condsim.results.markdown import md_table
from condsim.results.run_result import RunResult, headline_value, load_result

logger = logging.getLogger(__name__)

LEADERBOARD_SCHEMA = "condsim.leaderboard/1"
MAX_RUNS = 10_000


@dataclass(frozen=True)
class Run:
    """A loaded ``results.json``: where it is, what it holds and how the report names it."""

    path: Path
    result: RunResult
    label: str


def _find_results(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if (path / "results.json").is_file():
        return [path / "results.json"]
    if path.is_dir():
        found = sorted(path.rglob("results.json"))
        if not found:
            raise DataError(f"{path}: no results.json in it or in its sub-folders; give run "
                            "directories written by `condsim eval ... --out DIR`")
        if len(found) > MAX_RUNS:
            raise DataError(f"{path}: {len(found)} results.json files (more than {MAX_RUNS})")
        return found
    raise DataError(f"{path}: no such run directory or results.json")


def _labels(results: Sequence[tuple[Path, RunResult]]) -> list[str]:
    """Model names, made unique per benchmark with the run folder name when they clash."""
    names = [(r.benchmark, r.model.get("name", "?")) for _, r in results]
    return [f"{name} ({path.parent.name})" if names.count((bench, name)) > 1 else name
            for (bench, name), (path, _) in zip(names, results, strict=True)]


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Every run under ``paths``: run directories, ``results.json`` files, or folders searched
    recursively for ``results.json``. Raises :class:`DataError` naming the bad path or file
    (missing, not JSON, unknown schema)."""
    if not paths:
        raise DataError("no run directories given")
    files: list[Path] = []
    for p in map(Path, paths):
        files += [f for f in _find_results(p) if f not in files]
    results = [(f, load_result(f)) for f in files]
    return [Run(f, r, label) for (f, r), label in zip(results, _labels(results), strict=True)]


# --- rows ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeaderboardRow:
    """One run. ``std_pct`` (spread over folds) or ``ci_low_pct``/``ci_high_pct``
    (bootstrap CI) is set, depending on what the benchmark reports."""

    model: str
    benchmark: str
    metric: str
    value_pct: float
    std_pct: float | None
    ci_low_pct: float | None
    ci_high_pct: float | None
    seed: int
    protocol: str
    date: str
    run: str

    @property
    def headline(self) -> str:
        """``"74.49 ± 1.23"`` or ``"41.20 [38.10, 44.30]"``."""
        if self.ci_low_pct is not None and self.ci_high_pct is not None:
            return f"{self.value_pct:.2f} [{self.ci_low_pct:.2f}, {self.ci_high_pct:.2f}]"
        if self.std_pct is not None:
            return f"{self.value_pct:.2f} ± {self.std_pct:.2f}"
        return f"{self.value_pct:.2f}"


COLUMNS = tuple(LeaderboardRow.__dataclass_fields__)
SORT_ALIASES = {"value": "value_pct", "headline": "value_pct", "std": "std_pct",
                "ci_low": "ci_low_pct", "ci_high": "ci_high_pct", "name": "model"}
DESCENDING = {"value_pct", "ci_low_pct", "ci_high_pct", "date"}  # best / newest first
DEFAULT_SORT = "benchmark,value"


def _pct(x: Any) -> float | None:
    return None if x is None else round(float(x) * 100, 4)


def variant_fields(benchmark: str) -> tuple[str, ...]:
    """The config fields that are protocol variants of ``benchmark`` (its spec's
    ``variants``): runs that differ in them are different protocols, never compared."""
    from condsim.registry import find_benchmark

    spec = find_benchmark(benchmark)
    return tuple(spec.variants) if spec is not None else ()


def protocol_variant(result: Any) -> str:
    """The values of the benchmark's variant fields in a run (its protocol, else its recorded
    config), joined by ``-``; ``""`` without variant fields."""
    from condsim.registry import find_benchmark

    spec = find_benchmark(result.benchmark)
    if spec is None:
        return ""
    config = (result.extra or {}).get("config") or {}
    return spec.variant_of({**config, **result.protocol})


def leaderboard_row(run: Run) -> LeaderboardRow:
    r = run.result
    h = r.headline
    proto = r.protocol
    variant = protocol_variant(r)
    return LeaderboardRow(
        model=r.model.get("name", "?"), benchmark=r.benchmark, metric=str(h.get("name", "?")),
        value_pct=_pct(headline_value(h, str(run.path))),  # type: ignore[arg-type]
        std_pct=_pct(h.get("std")), ci_low_pct=_pct(h.get("ci_low")),
        ci_high_pct=_pct(h.get("ci_high")), seed=r.seed,
        protocol=f"{proto.get('name', r.benchmark)}/v{proto.get('protocol_version', '?')}"
        + (f" {variant}" if variant else ""),
        date=r.created, run=str(run.path.parent),
    )


def sort_rows(rows: list[LeaderboardRow], sort: str = DEFAULT_SORT,
              reverse: bool = False) -> list[LeaderboardRow]:
    """Sort by the comma-separated columns of ``sort`` (first = primary). Numbers and dates
    sort best/newest first, text A-Z; ``reverse`` flips every column. Missing values last."""
    columns = [SORT_ALIASES.get(c.strip(), c.strip()) for c in sort.split(",") if c.strip()]
    bad = [c for c in columns if c not in COLUMNS]
    if bad or not columns:
        raise DataError(f"cannot sort by {sort!r}; columns: {', '.join(COLUMNS)} "
                        f"(aliases: {', '.join(SORT_ALIASES)})")
    out = list(rows)
    for column in reversed(columns):  # stable sorts, least significant key first
        descending = (column in DESCENDING) != reverse
        present = [r for r in out if getattr(r, column) is not None]
        missing = [r for r in out if getattr(r, column) is None]
        out = sorted(present, key=lambda r, c=column: getattr(r, c),
                     reverse=descending) + missing
    return out


def leaderboard_rows(runs: Sequence[Run], sort: str = DEFAULT_SORT,
                     reverse: bool = False) -> list[LeaderboardRow]:
    """The leaderboard of ``runs`` sorted by ``sort`` (see :func:`sort_rows`)."""
    return sort_rows([leaderboard_row(r) for r in runs], sort, reverse)


# --- output formats ------------------------------------------------------------------------

DISPLAY_HEADERS = ("model", "benchmark", "metric", "headline (%)", "seed", "protocol", "date",
                   "run")


def display_cells(row: LeaderboardRow) -> list[str]:
    """The row as printed (and in markdown): the headline with its interval in one cell, the
    date to the minute and the run's folder name (CSV/JSON keep the full values)."""
    return [row.model, row.benchmark, row.metric, row.headline, str(row.seed), row.protocol,
            row.date[:16].replace("T", " "), Path(row.run).name]


def to_markdown(rows: Sequence[LeaderboardRow]) -> str:
    return md_table(DISPLAY_HEADERS, [display_cells(r) for r in rows],
                    ["l", "l", "l", "r", "r", "l", "l", "l"])


def to_csv(rows: Sequence[LeaderboardRow]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(asdict(r) for r in rows)
    return buf.getvalue()


def to_json(rows: Sequence[LeaderboardRow]) -> str:
    return json.dumps({"schema": LEADERBOARD_SCHEMA, "unit": "percent",
                       "rows": [asdict(r) for r in rows]}, indent=2) + "\n"


WRITERS: dict[str, Callable[[Sequence[LeaderboardRow]], str]] = {
    ".md": to_markdown,
    ".csv": to_csv,
    ".json": to_json,
}


def write_leaderboard(rows: Sequence[LeaderboardRow], out: str | Path) -> Path:
    """Write ``rows`` to ``out`` in the format its suffix names (atomically)."""
    out = Path(out)
    writer = WRITERS.get(out.suffix.lower())
    if writer is None:
        raise DataError(f"--out {out}: unknown format {out.suffix!r}; use one of "
                        f"{', '.join(WRITERS)}")
    return atomic_write_text(out, writer(rows))
