"""Reports: ``condsim report RUN_DIR... --out report.html``.

Writes one self-contained HTML file (plots and image thumbnails inlined as base64 data URIs,
inline CSS, no JavaScript, nothing fetched), the PNG of every plot next to it and
``report.md`` (tables + image links, for papers and READMEs).

Each benchmark is drawn by a :class:`View` found in a registry (:func:`register_view`,
:func:`view_for`), never by branching on benchmark names: a view turns runs into comparison
columns (:class:`Estimate`), plot specifications (:mod:`condsim.results.plots`) and failure
cases (:mod:`condsim.results.failures`). Built in: LRVS-F (recall@K vs distractors curves,
bands = mean ± std over folds), a per-task view for GeneCIS and every benchmark whose
``metrics["tasks"][task]`` hold ``recall``/``per_query`` (CIRR, MIT-States, ... when they
follow GeneCIS' layout), and a headline-only fallback.

Significance vs a reference run (the first run of each benchmark, or ``reference=``): the
rows of :func:`condsim.metrics.significance.compare` for the pair, paired as the benchmark's
registered ``pairing`` says (the same object ``condsim compare`` prints: a paired bootstrap
over the queries both runs scored, stratified for averages over groups, or paired per-fold
differences for LRVS-F), otherwise (runs that cannot be paired, unknown benchmarks) whether
the two 95% intervals overlap (:func:`condsim.metrics.significance.ci_overlap`, marked †).
Every table says which one it used; the report computes no statistic itself.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import numpy as np

from condsim.errors import DataError, PairingError
from condsim.io import atomic_write_many
from condsim.metrics import significance as sig
from condsim.metrics.significance import Comparison, ComparisonRow
from condsim.results import failures as fail
from condsim.results.leaderboard import (
    DISPLAY_HEADERS,
    Run,
    display_cells,
    leaderboard_rows,
    load_runs,
    protocol_variant,
    variant_fields,
)
from condsim.results.markdown import md_table
from condsim.results.plots import BarPlot, CurvePlot, Plot, Series, render_png
from condsim.results.run_result import headline_value

logger = logging.getLogger(__name__)

DEFAULT_MAX_FAILURES = 6
THUMB_SIZE = 112

__all__ = [
    "Cell", "ComparisonRow", "Estimate", "PairComparisons", "View", "VIEWS", "build_report",
    "compare", "load_runs", "register_view", "view_for",
]


# --- estimates and comparisons ---------------------------------------------------------------

#: a column's place in a :class:`~condsim.metrics.significance.Comparison`: ``(per-query key,
#: group)``; group ``None`` is the average row (LRVS-F: ``("recall", "R@K +n")``)
Cell = tuple[str, str | None]


@dataclass(frozen=True)
class Estimate:
    """One number of one run (a fraction), its shown interval and what it pairs on.

    ``interval`` is ``"std"`` (``low``/``high`` = mean ∓ std over folds), ``"ci"`` (a 95%
    bootstrap CI) or ``"none"``. ``paired`` names the row of the two runs'
    :func:`condsim.metrics.significance.compare` this column is (:data:`Cell`); two columns
    with equal ``paired`` are compared by that row, others by the overlap of their intervals.
    The report computes no statistic itself.
    """

    value: float
    low: float
    high: float
    interval: str
    paired: Cell | None = None

    def text(self) -> str:
        """Percent text: ``"74.49 ± 1.23"``, ``"41.2 [38.1, 44.3]"`` or ``"12.00"``."""
        v = self.value * 100
        if self.interval == "std":
            return f"{v:.2f} ± {(self.high - self.low) * 50:.2f}"
        if self.interval == "ci":
            return f"{v:.2f} [{self.low * 100:.2f}, {self.high * 100:.2f}]"
        return f"{v:.2f}"

    def interval95(self) -> tuple[float, float]:
        """A 95% interval: the CI, or mean ± 1.96 std for fold spreads
        (:func:`condsim.metrics.significance.std_interval95`)."""
        if self.interval == "std":
            return sig.std_interval95(self.value, (self.high - self.low) / 2)
        return self.low, self.high


#: how each comparison was made, by ``ComparisonRow.method`` (from the significance module)
METHODS = sig.METHODS


def compare(ref: Estimate, other: Estimate) -> ComparisonRow | None:
    """``other`` vs ``ref`` when the runs cannot be paired: the overlap of their 95% intervals
    (:func:`condsim.metrics.significance.ci_overlap`); ``None`` when either has none."""
    if ref.interval == "none" or other.interval == "none":
        return None
    return sig.ci_overlap((ref.value, *ref.interval95()), (other.value, *other.interval95()))


def _pairing(benchmark: str) -> Any:
    """The benchmark's registered pairing, ``None`` for a benchmark condsim does not know."""
    from condsim.registry import find_benchmark

    spec = find_benchmark(benchmark)
    return getattr(spec, "pairing", None)


class PairComparisons:
    """The :class:`~condsim.metrics.significance.Comparison` s of one (reference, other) pair,
    one per per-query key the columns ask for, computed once each; ``None`` when the runs
    cannot be paired on that key (then the columns fall back to CI overlap)."""

    def __init__(self, ref: Run, other: Run, pairing: Any) -> None:
        self.ref, self.other, self.pairing = ref.result, other.result, pairing
        self.by_key: dict[str, Comparison | None] = {}

    def comparison(self, key: str) -> Comparison | None:
        if self.pairing is None:
            return None
        if key not in self.by_key:
            try:
                self.by_key[key] = sig.compare(self.ref, self.other, self.pairing, key=key)
            except PairingError as exc:
                logger.debug("%s vs %s: not paired (%s)", self.ref.model.get("name"),
                             self.other.model.get("name"), exc)
                self.by_key[key] = None
        return self.by_key[key]

    def row(self, ref: Estimate, other: Estimate) -> ComparisonRow | None:
        """The paired row of a column, else the CI overlap of the two estimates."""
        if ref.paired is not None and ref.paired == other.paired:
            cmp = self.comparison(ref.paired[0])
            row = cmp.row(ref.paired[1]) if cmp else None
            if row is not None:
                return row
        return compare(ref, other)


# --- views -----------------------------------------------------------------------------------


def _no_failures(run: Run, case: dict[str, Any]) -> dict[str, Any] | None:
    return None


@dataclass(frozen=True)
class View:
    """How one benchmark's runs appear in a report.

    ``columns(run)``: ordered comparison-table columns ``{title: Estimate}``;
    ``plots(runs)``: plot specifications; ``legacy_failure(run, case)``: converts a failure
    stored by an older condsim into a :data:`~condsim.results.failures.FAILURES_SCHEMA` case
    (or ``None``); ``accepts(run)``: whether an unregistered benchmark fits this view.
    """

    title: str
    columns: Callable[[Run], dict[str, Estimate]]
    plots: Callable[[list[Run]], list[Plot]]
    accepts: Callable[[Run], bool] = lambda run: False
    legacy_failure: Callable[[Run, dict[str, Any]], dict[str, Any] | None] = _no_failures
    notes: str = ""


VIEWS: dict[str, View] = {}
FALLBACK_VIEWS: list[View] = []


def register_view(benchmark: str | None, view: View) -> View:
    """Register ``view`` for ``benchmark``; with ``None`` it becomes a fallback tried (in
    registration order) for benchmarks without their own view."""
    if benchmark is None:
        FALLBACK_VIEWS.append(view)
    else:
        VIEWS[benchmark] = view
    return view


def view_for(run: Run) -> View:
    """The registered view of ``run``'s benchmark, else the first fallback accepting it."""
    view = VIEWS.get(run.result.benchmark)
    if view is not None:
        return view
    for candidate in FALLBACK_VIEWS:
        if candidate.accepts(run):
            return candidate
    raise DataError(f"{run.path}: no report view for benchmark {run.result.benchmark!r}")


def _bad_metrics(run: Run, exc: Exception) -> DataError:
    return DataError(
        f"{run.path}: {run.result.benchmark} results lack the metrics the report needs "
        f"({type(exc).__name__}: {exc}); was it written by an older or newer condsim?")


def _columns(view: View, run: Run) -> dict[str, Estimate]:
    try:
        return view.columns(run)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise _bad_metrics(run, exc) from exc


def _pct(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(float(v) * 100 for v in values)


def _short(n: int) -> str:
    for div, suffix in ((1_000_000, "M"), (1_000, "K")):
        if n >= div and n % (div // 10) == 0:
            return f"{n / div:g}{suffix}"
    return str(n)


# LRVS-F ------------------------------------------------------------------------------------


def _lrvsf_ns(run: Run) -> list[int]:
    return sorted(int(n) for n in run.result.metrics["recall"])


def _lrvsf_ks(run: Run) -> list[str]:
    ks = run.result.protocol.get("ks")
    if ks:
        return [str(k) for k in ks]
    first = run.result.metrics["recall"][str(_lrvsf_ns(run)[0])]
    return sorted(first, key=int)


def _lrvsf_estimate(run: Run, n: int, k: str) -> Estimate:
    cell = run.result.metrics["recall"][str(n)][k]
    mean, std = float(cell["mean"]), float(cell["std"])
    paired = ("recall", f"R@{k} +{n:,}") if cell.get("folds") else None
    return Estimate(mean, mean - std, mean + std, "std", paired)


def _lrvsf_columns(run: Run) -> dict[str, Estimate]:
    ns, ks = _lrvsf_ns(run), _lrvsf_ks(run)
    top = ns[-1]
    cols = {f"R@{k} +{_short(top)}": _lrvsf_estimate(run, top, k) for k in ks}
    for n in reversed(ns[:-1]):
        cols[f"R@{ks[0]} +{_short(n)}"] = _lrvsf_estimate(run, n, ks[0])
    return cols


def _lrvsf_plots(runs: list[Run]) -> list[Plot]:
    """One figure per K: recall@K (%) vs distractors, band = mean ± std over folds."""
    ks = list(dict.fromkeys(k for run in runs for k in _lrvsf_ks(run)))
    plots: list[Plot] = []
    for k in ks:
        series = []
        for run in runs:
            ns = [n for n in _lrvsf_ns(run) if k in run.result.metrics["recall"][str(n)]]
            if not ns:
                continue
            cells = [run.result.metrics["recall"][str(n)][k] for n in ns]
            mean = np.array([c["mean"] for c in cells])
            std = np.array([c["std"] for c in cells])
            series.append(Series(run.label, _pct(mean), _pct(mean - std), _pct(mean + std),
                                 tuple(float(n) for n in ns)))
        n_folds = {run.result.protocol.get("n_folds") for run in runs}
        folds = f"{n_folds.pop()} folds" if len(n_folds) == 1 else "folds"
        plots.append(CurvePlot(
            name=f"lrvsf_recall_at_{k}", title=f"LRVS-F: R@{k} vs gallery distractors",
            xlabel="distractors added to the gallery", ylabel=f"R@{k} (%)",
            series=tuple(series), band=f"band: mean ± std over {folds}"))
    return plots


def _lrvsf_legacy_failure(run: Run, case: dict[str, Any]) -> dict[str, Any] | None:
    """Failures stored by condsim <= 0.1 (rows of products.parquet)."""
    if "query_row" not in case:
        return None
    products = Path(run.result.extra.get("config", {}).get("data_root", "")) / "products.parquet"
    return {"schema": fail.FAILURES_SCHEMA, "group": None, "query_id": case["query_row"],
            "query": {"image": fail.parquet_ref(products, "COMPLEX_IMG", case["query_row"]),
                      "condition": case.get("condition", "")},
            "target": fail.parquet_ref(products, "SIMPLE_IMG", case["target_row"]),
            "target_rank": case.get("rank"), "gallery_size": None,
            "top": [{"image": fail.parquet_ref(products, "SIMPLE_IMG", r), "score": None}
                    for r in case.get("top_rows", [])]}


register_view("lrvsf", View(
    title="LRVS-Fashion", columns=_lrvsf_columns, plots=_lrvsf_plots,
    legacy_failure=_lrvsf_legacy_failure,
    notes="Recall@K over the 20 bootstrap folds of products (mean ± std, ddof = 1) for each "
    "number of distractors drawn into the gallery. Failures are ranked among the products' "
    "own targets (no distractors)."))


# Per-task benchmarks (GeneCIS layout) ------------------------------------------------------


def _tasks(run: Run) -> dict[str, Any]:
    return run.result.metrics["tasks"]


def _task_estimate(run: Run, task: str, k: str = "1") -> Estimate:
    m = _tasks(run)[task]
    r = m["recall"][k]
    paired = (k, task) if (m.get("per_query") or {}).get(k) is not None else None
    return Estimate(float(r["mean"]), float(r["ci_low"]), float(r["ci_high"]), "ci", paired)


def _average_estimate(run: Run) -> Estimate:
    tasks = [_task_estimate(run, t) for t in _tasks(run)]
    avg = run.result.metrics.get("average_recall_at_1") or run.result.headline
    value = headline_value(avg, str(run.path))
    paired = len(tasks) > 1 and all(t.paired for t in tasks)
    return Estimate(
        value, float(avg.get("ci_low", value)), float(avg.get("ci_high", value)),
        "ci" if "ci_low" in avg else "none", ("1", None) if paired else None)


def _task_columns(run: Run) -> dict[str, Estimate]:
    cols = {f"R@1 {task}": _task_estimate(run, task) for task in _tasks(run)}
    cols["average R@1"] = _average_estimate(run)
    return cols


def _task_plots(runs: list[Run]) -> list[Plot]:
    """R@1 per task (and the average) with 95% bootstrap CIs; dashed marks = chance."""
    tasks = list(dict.fromkeys(t for run in runs for t in _tasks(run)))
    series = []
    for run in runs:
        ests = [_task_estimate(run, t) if t in _tasks(run) else None for t in tasks]
        ests.append(_average_estimate(run))
        series.append(Series(
            run.label, _pct([e.value if e else math.nan for e in ests]),
            _pct([e.low if e else math.nan for e in ests]),
            _pct([e.high if e else math.nan for e in ests])))
    chance = []
    for t in tasks:
        values = [_tasks(r)[t].get("chance_recall_at_1") for r in runs if t in _tasks(r)]
        values = [v for v in values if v is not None]
        chance.append(float(values[0]) * 100 if values else math.nan)
    finite = [c for c in chance if math.isfinite(c)]
    chance.append(float(np.mean(finite)) if len(finite) == len(tasks) else math.nan)
    bench = runs[0].result.benchmark
    title = VIEWS[bench].title if bench in VIEWS else bench
    return [BarPlot(name=f"{bench}_recall_at_1", title=f"{title}: R@1 per task",
                    ylabel="R@1 (%)", groups=(*tasks, "average"), series=tuple(series),
                    interval="error bars: 95% bootstrap CI over queries",
                    reference=tuple(chance))]


def _has_tasks(run: Run) -> bool:
    tasks = run.result.metrics.get("tasks")
    return isinstance(tasks, dict) and bool(tasks) and all(
        isinstance(m, dict) and "1" in m.get("recall", {}) for m in tasks.values())


TASK_VIEW = View(
    title="per-task retrieval", columns=_task_columns, plots=_task_plots, accepts=_has_tasks,
    notes="R@K per task: tie-safe expected recall over each query's own gallery, 95% "
    "percentile bootstrap CI over queries; average = mean of the task R@1s.")

register_view("genecis", View(
    title="GeneCIS", columns=_task_columns, plots=_task_plots, notes=TASK_VIEW.notes))
register_view(None, TASK_VIEW)


# Any benchmark reporting {"mean", "ci_low", "ci_high"} leaves (CIRR, CIRCO, FashionIQ, ...)


MAX_CI_COLUMNS = 16
FAMILY_NAMES = {"recall": "R", "recall_subset": "Rsubset", "map": "mAP"}
SKIP_KEYS = {"per_query", "query_ids", "condition_reliance"}  # reliance: its own panel


def _ci_leaves(node: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], dict]]:
    """``(path, {"mean", "ci_low", "ci_high"})`` of every interval in ``metrics``, in order."""
    if not isinstance(node, dict):
        return []
    if {"mean", "ci_low", "ci_high"} <= set(node):
        return [(path, node)]
    return [leaf for k, v in node.items() if k not in SKIP_KEYS
            for leaf in _ci_leaves(v, (*path, str(k)))]


def _leaf_title(path: tuple[str, ...]) -> str:
    """``("recall", "1")`` -> ``"R@1"``; ``("categories", "dress", "recall", "10")`` ->
    ``"dress R@10"``; ``("average_recall_at_10",)`` -> ``"average R@10"``."""
    *head, last = path
    if head and last.isdigit():
        family = FAMILY_NAMES.get(head[-1], head[-1])
        context = [p for p in head[:-1] if p not in ("categories", "tasks")]
        return " ".join([*context, f"{family}@{last}"])
    for family, short in sorted(FAMILY_NAMES.items(), key=lambda kv: -len(kv[0])):
        if f"{family}_at_" in last:
            prefix, k = last.split(f"{family}_at_", 1)
            return " ".join([*head, f"{prefix.rstrip('_')} {short}@{k}".strip()])
    return " ".join(path)


GROUP_KEYS = ("categories", "tasks")


def _ci_cell(r: Any, path: tuple[str, ...]) -> Cell | None:
    """Where a metric's per-query values are, as a :data:`Cell`: ``("recall", "1")`` ->
    ``("recall_at_1", <benchmark>)``; ``("categories", "dress", "recall", "10")`` ->
    ``("recall_at_10", "dress")``; ``("average_recall_at_10",)`` -> ``("recall_at_10",
    None)`` (the average row); ``None`` when the run stores no such values."""
    if len(path) == 2:
        key, group, block = "_at_".join(path), r.benchmark, r.metrics
    elif len(path) == 4 and path[0] in GROUP_KEYS:
        key, group, block = "_at_".join(path[2:]), path[1], r.metrics[path[0]][path[1]]
    elif len(path) == 1 and path[0].startswith("average_"):
        key, group = path[0][len("average_"):], None
        blocks = [b for g in GROUP_KEYS for b in (r.metrics.get(g) or {}).values()]
        has = len(blocks) > 1 and all(key in (b.get("per_query") or {}) for b in blocks)
        return (key, group) if has else None
    else:
        return None
    return (key, group) if key in (block.get("per_query") or {}) else None


def _ci_columns(run: Run) -> dict[str, Estimate]:
    r = run.result
    return {_leaf_title(path): Estimate(float(leaf["mean"]), float(leaf["ci_low"]),
                                        float(leaf["ci_high"]), "ci", _ci_cell(r, path))
            for path, leaf in _ci_leaves(r.metrics)[:MAX_CI_COLUMNS]}


def _ci_plots(runs: list[Run]) -> list[Plot]:
    """Every interval metric as a bar group (one bar per run) with its 95% CI."""
    cols = [_ci_columns(run) for run in runs]
    groups = list(dict.fromkeys(t for c in cols for t in c))
    series = tuple(Series(
        run.label, _pct([c[g].value if g in c else math.nan for g in groups]),
        _pct([c[g].low if g in c else math.nan for g in groups]),
        _pct([c[g].high if g in c else math.nan for g in groups]))
        for run, c in zip(runs, cols, strict=True))
    bench = runs[0].result.benchmark
    return [BarPlot(name=f"{bench}_metrics", title=f"{bench}: metrics with 95% CIs",
                    ylabel="%", groups=tuple(groups), series=series,
                    interval="error bars: 95% bootstrap CI over queries")]


CI_VIEW = register_view(None, View(
    title="", columns=_ci_columns, plots=_ci_plots,
    accepts=lambda run: bool(_ci_leaves(run.result.metrics)),
    notes="Every metric the run reports with a 95% bootstrap CI over queries."))


# Any benchmark: the headline alone ---------------------------------------------------------


def _headline_estimate(run: Run) -> Estimate:
    h = run.result.headline
    v = headline_value(h, str(run.path))
    if "ci_low" in h:
        return Estimate(v, float(h["ci_low"]), float(h["ci_high"]), "ci")
    if "std" in h:
        return Estimate(v, v - float(h["std"]), v + float(h["std"]), "std")
    return Estimate(v, v, v, "none")


register_view(None, View(
    title="", columns=lambda run: {run.result.headline.get("name", "headline"):
                                   _headline_estimate(run)},
    plots=lambda runs: [], accepts=lambda run: True,
    notes="No view is registered for this benchmark: headline metric only."))


# --- report assembly -------------------------------------------------------------------------


@dataclass
class ComparisonTable:
    """One benchmark's comparison: rows of cells ``(estimate text, comparison or None)``."""

    columns: list[str]
    rows: list[tuple[Run, list[tuple[Estimate | None, ComparisonRow | None]]]]
    reference: Run
    methods: set[str] = field(default_factory=set)


def _matches(run: Run, reference: str) -> bool:
    return reference in run.label or reference in str(run.path.parent)


def comparison_table(runs: list[Run], view: View, reference: str | None = None
                     ) -> ComparisonTable:
    """Columns of every run of one benchmark, each compared with the reference run: the one
    whose label or run folder contains ``reference`` (default: the first run)."""
    ref = runs[0]
    if reference:
        matches = [r for r in runs if _matches(r, reference)]
        if matches:
            ref = matches[0]
        else:
            logger.warning("--reference %r matches no %s run; comparing with %s", reference,
                           ref.result.benchmark, ref.label)
    cols = {id(r): _columns(view, r) for r in runs}
    titles = list(dict.fromkeys(t for r in runs for t in cols[id(r)]))
    table = ComparisonTable(titles, [], ref)
    pairing = _pairing(ref.result.benchmark)
    for run in runs:
        pair = PairComparisons(ref, run, pairing) if run is not ref else None
        cells: list[tuple[Estimate | None, ComparisonRow | None]] = []
        for t in titles:
            est, base = cols[id(run)].get(t), cols[id(ref)].get(t)
            comp = pair.row(base, est) if pair and est and base else None
            if comp:
                table.methods.add(comp.method)
            cells.append((est, comp))
        table.rows.append((run, cells))
    return table


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


class Thumbnails:
    """Data-URI JPEG thumbnails of failure refs, each image decoded once per report."""

    def __init__(self, size: int = THUMB_SIZE) -> None:
        self.size = size
        self._memo: dict[str, str | None] = {}
        self.missing = 0

    def __call__(self, ref: dict[str, Any]) -> str | None:
        key = json.dumps(ref, sort_keys=True)
        if key not in self._memo:
            try:
                img = fail.thumbnail(ref, self.size)
                buf = io.BytesIO()
                img.save(buf, format="JPEG", quality=82)
                self._memo[key] = ("data:image/jpeg;base64,"
                                   + base64.b64encode(buf.getvalue()).decode("ascii"))
            except (DataError, KeyError, TypeError, ValueError, OSError) as exc:
                # data moved or deleted since the run, or a malformed ref
                logger.warning("failure gallery: %s", exc)
                self._memo[key] = None
                self.missing += 1
        return self._memo[key]


def run_failures(run: Run, view: View) -> list[dict[str, Any]]:
    """The run's recorded failure cases in :data:`FAILURES_SCHEMA` form (older layouts are
    converted by the view; unreadable entries are skipped with a warning)."""
    stored = run.result.extra.get("failures") or []
    if not isinstance(stored, list):
        logger.warning("%s: extra.failures is not a list; ignored", run.path)
        return []
    cases = []
    for case in stored:
        try:
            converted = case if fail.is_case(case) else view.legacy_failure(run, case)
        except (KeyError, TypeError, ValueError):
            converted = None
        if not _valid_case(converted):
            logger.warning("%s: failure entry of unknown layout ignored", run.path)
            continue
        cases.append(converted)
    return cases


def _valid_case(case: Any) -> bool:
    return (isinstance(case, dict) and isinstance(case.get("query"), dict)
            and isinstance(case["query"].get("image"), dict)
            and isinstance(case.get("target"), dict) and isinstance(case.get("top", []), list)
            and all(isinstance(t, dict) and isinstance(t.get("image"), dict)
                    for t in case.get("top", [])))


def _img(uri: str | None, cls: str, caption: str) -> str:
    inner = (f'<img src="{uri}" alt="{_esc(caption)}">' if uri
             else '<div class="missing">image unavailable</div>')
    return f'<figure class="thumb {cls}">{inner}<figcaption>{_esc(caption)}</figcaption></figure>'


def _case_html(case: dict[str, Any], thumbs: Thumbnails) -> str:
    q = case["query"]
    rank, size, ties = case.get("target_rank"), case.get("gallery_size"), case.get("n_ties")
    where = ("true target ranked below the results shown" if not rank else
             f"true target at rank {rank}" + (f" of {size}" if size else "")
             + (f" (tied with {ties})" if ties else ""))
    wrong = "".join(
        _img(thumbs(t["image"]), "wrong",
             f"#{i + 1}" + (f" · {t['score']:.3f}" if t.get("score") is not None else ""))
        for i, t in enumerate(case.get("top", [])))
    group = f'<span class="group">{_esc(case["group"])}</span> ' if case.get("group") else ""
    return (f'<div class="case"><div class="case-head">{group}query '
            f'{_esc(case.get("query_id", ""))} · {_esc(where)}</div>'
            f'<div class="strip">{_img(thumbs(q["image"]), "query", "query")}'
            f'<div class="cond">{_esc(q.get("condition", ""))}</div>'
            f'<div class="arrow">→</div>{wrong}<div class="sep"></div>'
            f'{_img(thumbs(case["target"]), "target", "true target")}</div></div>')


def _gallery_html(runs: list[Run], view: View, thumbs: Thumbnails, max_failures: int) -> str:
    """Runs best headline first; only the best run's gallery is expanded (the page stays
    short, the others open with a click, no JavaScript)."""
    ranked = sorted(runs, key=lambda r: -headline_value(r.result.headline, str(r.path)))
    parts, opened = [], False
    for run in ranked:
        cases = run_failures(run, view)
        if not cases:
            parts.append(f"<details><summary>{_esc(run.label)} <span class='note'>no failures "
                         "recorded (none kept by the run, or it predates failure recording)"
                         "</span></summary></details>")
            continue
        shown = cases[:max_failures]
        parts.append(f"<details{'' if opened else ' open'}><summary>{_esc(run.label)} "
                     f"<span class='note'>{len(shown)} of {len(cases)} recorded failures"
                     f"</span></summary><div class='cases'>"
                     f"{''.join(_case_html(c, thumbs) for c in shown)}</div></details>")
        opened = True
    return "".join(parts)


def _table_html(table: ComparisonTable) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in ["model", *table.columns])
    body = []
    for run, cells in table.rows:
        is_ref = run is table.reference
        tds = [f'<td class="model">{_esc(run.label)}'
               + (' <span class="ref">reference</span>' if is_ref else "") + "</td>"]
        for est, comp in cells:
            if est is None:
                tds.append("<td>–</td>")
                continue
            mark, sub, tip = "", "", ""
            if comp is not None:
                cls = {1: "up", -1: "down"}.get(comp.verdict, "ns")
                mark = f' <span class="{cls}">{comp.mark()}</span>' if comp.mark() else ""
                sub = f"<br><small>{_esc(comp.text())}</small>"
                tip = f' title="{_esc(METHODS[comp.method])}"'
            tds.append(f"<td{tip}>{_esc(est.text())}{mark}{sub}</td>")
        body.append(f"<tr{' class=ref-row' if is_ref else ''}>{''.join(tds)}</tr>")
    return f'<div class="scroll"><table class="cmp"><tr>{head}</tr>{"".join(body)}</table></div>'


def _ordered(methods: set[str]) -> list[str]:
    return [m for m in METHODS if m in methods]


def _methods_html(table: ComparisonTable) -> str:
    if not table.methods:
        return ""
    items = "".join(f"<li>{_esc(METHODS[m])}</li>" for m in _ordered(table.methods))
    return (f"<p class='note'>▲/▼: significantly higher/lower than "
            f"<b>{_esc(table.reference.label)}</b> (reference); the small line is the "
            f"difference in points with its 95% interval. Tests used:</p><ul class='note'>"
            f"{items}</ul>")


def _protocol_notes(runs: list[Run]) -> str:
    keys = ("protocol_version", "conditioning", "folds", "n_distractors_available", "crop")
    differ = [k for k in keys if len({json.dumps(r.result.protocol.get(k)) for r in runs}) > 1]
    if not differ:
        return ""
    return (f"<p class='warn'>These runs differ in protocol ({_esc(', '.join(differ))}); "
            "compare with care.</p>")


#: columns of the "does it read the condition?" panel
RELIANCE_HEADERS = ("model", "headline", "drop, shuffled [CI]", "drop, empty [CI]",
                    "top-1 changed % (shuffled / empty)")
RELIANCE_NOTE = ("Headline drop (original − perturbed, points) when the conditions are shuffled "
                 "among the queries (a seeded derangement) or emptied, with its 95% interval "
                 "(paired bootstrap over queries; LRVS-F: paired folds); top-1 changed: share "
                 "of queries whose best candidate changes. A model that ignores the condition "
                 "shows 0.")


def _drop_text(entry: dict[str, Any]) -> str:
    if "skipped" in entry:
        return "n/a"
    d = entry["drop"]
    mark = " ✓" if d.get("significant") else ""
    return (f"{d['mean'] * 100:+.2f} [{d['ci_low'] * 100:+.2f}, {d['ci_high'] * 100:+.2f}]"
            f"{mark}")


def reliance_rows(runs: list[Run]) -> list[list[str]]:
    """The "does it read the condition?" rows (:data:`RELIANCE_HEADERS`) of the runs holding
    ``metrics["condition_reliance"]`` (schema ``condsim.condition_reliance/1``); ✓ marks a
    drop whose interval excludes 0."""
    rows = []
    for run in runs:
        rel = run.result.metrics.get("condition_reliance")
        if not isinstance(rel, dict):
            continue
        top1 = " / ".join("n/a" if "skipped" in rel[k] else f"{rel[k]['top1_changed'] * 100:.1f}"
                          for k in ("shuffled", "empty"))
        rows.append([run.label, f"{rel['original']['mean'] * 100:.2f}",
                     _drop_text(rel["shuffled"]), _drop_text(rel["empty"]), top1])
    return rows


def _reliance_html(runs: list[Run]) -> str:
    rows = reliance_rows(runs)
    if not rows:
        return ""
    head = "".join(f"<th>{_esc(h)}</th>" for h in RELIANCE_HEADERS)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return (f"<h3>Does it read the condition?</h3><p class='note'>{_esc(RELIANCE_NOTE)}</p>"
            f'<div class="scroll"><table class="cmp"><tr>{head}</tr>{body}</table></div>')


def _reliance_markdown(runs: list[Run]) -> list[str]:
    rows = reliance_rows(runs)
    if not rows:
        return []
    return ["### Does it read the condition?", "", RELIANCE_NOTE, "",
            md_table(list(RELIANCE_HEADERS), rows, ["l"] + ["r"] * 4), ""]


def _markdown_table(table: ComparisonTable) -> str:
    rows = []
    for run, cells in table.rows:
        row = [run.label + (" (reference)" if run is table.reference else "")]
        for est, comp in cells:
            text = est.text() if est else "–"
            row.append(f"{text} {comp.mark()}".strip() if comp else text)
        rows.append(row)
    return md_table(["model", *table.columns], rows, ["l"] + ["r"] * len(table.columns))


def _markdown(sections: list[tuple[str, str, ComparisonTable, list[str], list[Run]]],
              runs: list[Run]) -> str:
    out = ["# condsim report", "",
           f"{len(runs)} run(s); values in %. Intervals: ± std over folds (LRVS-F) or [95% "
           "bootstrap CI] over queries.", ""]
    for title, notes, table, pngs, group in sections:
        out += [f"## {title}", "", notes, "", _markdown_table(table)]
        out += _reliance_markdown(group)
        if table.methods:
            out += [f"▲/▼ = significantly higher/lower than {table.reference.label}; "
                    + "; ".join(METHODS[m] for m in _ordered(table.methods)) + ".", ""]
        out += [f"![{Path(p).stem}]({p})" for p in pngs] + [""]
    out += ["## Runs", "", md_table(DISPLAY_HEADERS,
                                     [display_cells(r) for r in leaderboard_rows(runs)])]
    return "\n".join(out)


def build_report(
    paths: Sequence[str | Path], out_html: str | Path, *, reference: str | None = None,
    max_failures: int = DEFAULT_MAX_FAILURES, thumb_size: int = THUMB_SIZE,
) -> dict[str, Path]:
    """Write the report of the runs under ``paths``.

    Returns the written files: ``"html"``, ``"markdown"`` (``report.md`` beside the HTML) and
    one entry per plot (``<plot name>`` -> PNG beside the HTML). ``reference`` picks the run
    each benchmark's others are compared with (substring of its label or folder);
    ``max_failures`` bounds the gallery per run.

    The report goes into ``out_html``'s folder, which may exist and hold other files: the
    report's own files (the HTML, ``report.md``, the PNGs) replace those of an earlier
    report, nothing else is touched. Nothing is written until the whole report is built, and
    then all files or none (:func:`_write_all`): a failing report leaves no partial output.
    """
    out_html = Path(out_html)
    if out_html.suffix.lower() not in (".html", ".htm"):
        raise DataError(f"--out {out_html}: the report is an HTML file (give a .html name)")
    runs = load_runs(paths)
    if reference and not any(_matches(r, reference) for r in runs):
        raise DataError(f"--reference {reference!r} matches no run; runs: "
                        f"{', '.join(r.label for r in runs)}")
    out_dir = out_html.parent
    files: dict[str, tuple[Path, bytes]] = {}  # written only once the whole report is built
    thumbs = Thumbnails(thumb_size)
    body, nav, md_sections = [], [], []
    # one section per benchmark and protocol variant (e.g. LRVS-F with category conditions
    # and with captions): runs of different variants are never compared with each other
    groups: dict[tuple[str, str], list[Run]] = {}
    order = list(VIEWS)  # registered benchmarks first, in registration order, then A-Z
    for run in sorted(runs, key=lambda r: (r.result.benchmark not in VIEWS,
                                           order.index(r.result.benchmark)
                                           if r.result.benchmark in VIEWS else 0,
                                           r.result.benchmark, protocol_variant(r.result))):
        groups.setdefault((run.result.benchmark, protocol_variant(run.result)), []).append(run)
    variants_of = Counter(bench for bench, _ in groups)
    for (bench, variant), group in groups.items():
        view = view_for(group[0])
        described = group[0].result.protocol.get("description")
        title = view.title if bench in VIEWS else (
            str(described) if described else bench) + (f" ({view.title})" if view.title else "")
        suffix = ""
        if variants_of[bench] > 1:  # several variants: name them (titles, anchors, PNGs)
            fields = ", ".join(f.replace("_", " ") for f in variant_fields(bench))
            title += f" · {fields}: {variant}"
            suffix = f"_{variant}"
        table = comparison_table(group, view, reference)
        try:
            plots = [replace(p, name=p.name + suffix) for p in view.plots(group)]
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise _bad_metrics(group[0], exc) from exc
        figures, pngs = [], []
        for plot in plots:
            png = render_png(plot)
            files[plot.name] = (out_dir / f"{plot.name}.png", png)
            pngs.append(f"{plot.name}.png")
            figures.append(f'<figure class="plot"><img src="{_png_uri(png)}" '
                           f'alt="{_esc(plot.title)}"><figcaption>{_esc(plot.title)} '
                           f'({_esc(plot.name)}.png)</figcaption></figure>')
        anchor = f"b-{_esc(bench + suffix)}"
        nav.append(f'<a href="#{anchor}">{_esc(title)}</a>')
        body.append(
            f'<section id="{anchor}"><h2>{_esc(title)} <span class="note">{len(group)} '
            f"run(s)</span></h2><p class='note'>{_esc(view.notes)}</p>"
            f"{_protocol_notes(group)}<h3>Comparison</h3>{_table_html(table)}"
            f"{_methods_html(table)}{_reliance_html(group)}"
            + (f"<h3>Plots</h3><div class='plots'>{''.join(figures)}</div>" if figures else "")
            + "<h3>Failure gallery</h3><p class='note'>query image + condition → the wrong "
            "results ranked highest (red, with scores) · the true target (green). Runs by "
            "headline, best first; click a run to expand its cases.</p>"
            + _gallery_html(group, view, thumbs, max_failures) + "</section>")
        md_sections.append((title, view.notes, table, pngs, group))

    summary = "".join(
        "<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in display_cells(row)) + "</tr>"
        for row in leaderboard_rows(runs))
    template = Template(resources.files("condsim").joinpath("assets/report.html")
                        .read_text(encoding="utf-8"))
    from condsim import __version__

    page = template.substitute(
        generated=_esc(datetime.now(timezone.utc).isoformat(timespec="seconds")),
        version=_esc(__version__), n_runs=len(runs), nav=" · ".join(nav),
        summary_head="".join(f"<th>{_esc(h)}</th>" for h in DISPLAY_HEADERS),
        summary_rows=summary, sections="".join(body))
    files["markdown"] = (out_dir / "report.md", _markdown(md_sections, runs).encode("utf-8"))
    files["html"] = (out_html, page.encode("utf-8"))  # last: its presence means "complete"
    written = atomic_write_many(files)
    if thumbs.missing:
        logger.warning("failure gallery: %d image(s) could not be loaded", thumbs.missing)
    logger.info("report: %s (%d runs, %d plots)", out_html, len(runs),
                len(written) - 2)
    return written
