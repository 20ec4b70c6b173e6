"""Paired significance of two runs of one benchmark: the one place ``condsim compare`` and
``condsim report`` take their statistics from.

* :func:`resampled_means`: seeded bootstrap means (the engine of every CI);
* :func:`paired_bootstrap`: one group's paired bootstrap of ``mean(b - a)``;
* :func:`stratified_paired_bootstrap`: several groups (GeneCIS tasks, FashionIQ categories),
  each paired, plus the average over groups with every group resampled independently;
* :func:`paired_folds`: paired per-fold differences (LRVS-F);
* :func:`ci_overlap`: the fallback when two runs cannot be paired (marked ``†``);
* :func:`compare`: two :class:`~condsim.results.run_result.RunResult` s of one benchmark ->
  a typed :class:`Comparison` (rows of :class:`ComparisonRow`), whose :meth:`Comparison.
  to_dict` is the ``condsim.compare/1`` JSON.

Where the per-query or per-fold values live is the benchmark's ``pairing``
(:class:`condsim.benchmarks.spec.Pairing`, duck-typed here as :class:`PairingLike`), passed
in by the caller: this module never imports ``condsim.benchmarks``, ``condsim.results`` or
``condsim.cli``. Runs that cannot be paired raise :class:`~condsim.errors.PairingError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from condsim.errors import DataError, PairingError

SCHEMA = "condsim.compare/1"
#: defaults shared by ``condsim compare`` and ``condsim report``
DEFAULT_SEED = 0
DEFAULT_RESAMPLES = 2000
DEFAULT_THRESHOLD = 0.002  # GeneCIS paper: gains above 0.2% average R@1 are meaningful
LEVEL = 0.95
#: two-sided 95% normal quantile, ``Phi^{-1}(0.975)``: turns a fold std into a 95% interval
Z95 = 1.959963984540054
#: the ``1.96`` of the paired-fold interval ``mean(d) ± 1.96 sd(d)`` (``condsim.compare/1``)
FOLD_Z = 1.96
#: per-group seed offset: group ``g`` of a stratified bootstrap draws with ``seed + 101 g``
GROUP_SEED_STEP = 101

#: what each ``ComparisonRow.method`` means (the report prints these under its tables)
METHODS: dict[str, str] = {
    "paired-bootstrap": "paired bootstrap over the queries both runs scored, matched by query "
    f"id (condsim.metrics.significance, {DEFAULT_RESAMPLES} resamples, seed "
    f"{DEFAULT_SEED}): the 95% CI of the difference excludes 0",
    "stratified-paired-bootstrap": "paired bootstrap of the group-averaged difference, each "
    f"group's queries resampled independently ({DEFAULT_RESAMPLES} resamples, seed "
    f"{DEFAULT_SEED} + {GROUP_SEED_STEP}·group): the 95% CI excludes 0",
    "paired-folds": "paired per-fold differences (same folds and distractor draws; folds are "
    "bootstrap replicates): mean ± 1.96 sd of the differences excludes 0",
    "ci-overlap": "† no paired values (different queries, folds, seeds or data): the two 95% "
    "intervals do not overlap (conservative)",
}


class PairingLike(Protocol):
    """What :func:`compare` reads of a :class:`condsim.benchmarks.spec.Pairing`."""

    kind: str  # "queries" | "folds"
    label: str
    key: str
    group_key: str | None
    must_agree: tuple[str, ...]
    per_group_agree: str | None


# --- rows and comparisons -------------------------------------------------------------------


def _num(x: float) -> float | None:
    """JSON-safe float (NaN -> ``None``)."""
    return None if isinstance(x, float) and math.isnan(x) else x


@dataclass(frozen=True)
class ComparisonRow:
    """``B - A`` of one metric on one group (a task, a category, a distractor count and K, the
    whole benchmark or the average over groups).

    ``a``/``b``: the two runs' values (fractions) on the paired units; ``diff = b - a``;
    ``[ci_low, ci_high]``: 95% interval of ``diff`` (NaN for ``ci-overlap``); ``p_value``:
    two-sided (NaN for ``ci-overlap``); ``significant``: the interval excludes 0 (for
    ``ci-overlap``: the runs' own 95% intervals do not overlap); ``exceeds_threshold``:
    ``|diff| > threshold``; ``method``: a key of :data:`METHODS`; ``n``: paired units (queries
    or folds; ``None`` for ``ci-overlap``).
    """

    group: str
    metric: str
    n: int | None
    a: float
    b: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    significant: bool
    exceeds_threshold: bool
    method: str
    n_resamples: int | None = None  # bootstrap methods only
    seed: int | None = None
    level: float = LEVEL

    @property
    def verdict(self) -> int:
        """``+1`` significantly higher, ``-1`` significantly lower, ``0`` not significant."""
        if not self.significant:
            return 0
        if math.isnan(self.ci_low):
            return 1 if self.diff > 0 else -1
        return 1 if self.ci_low > 0 else -1

    def mark(self) -> str:
        """``▲``/``▼`` for a significant increase/decrease, ``†`` appended when the verdict
        comes from the CI-overlap fallback; ``""`` when not significant."""
        sign = {1: "▲", -1: "▼"}.get(self.verdict, "")
        return sign + ("†" if sign and self.method == "ci-overlap" else "")

    def text(self) -> str:
        """``"+1.23 [+0.40, +2.10]"`` (points), or ``"+1.23 (95% CIs overlap)"``."""
        if math.isnan(self.ci_low):
            return f"{self.diff * 100:+.2f} (95% CIs {'apart' if self.significant else 'overlap'})"
        return f"{self.diff * 100:+.2f} [{self.ci_low * 100:+.2f}, {self.ci_high * 100:+.2f}]"

    def to_dict(self) -> dict[str, Any]:
        """The row of ``condsim.compare/1`` (``groups[i]`` / ``average``); bootstrap rows also
        carry ``n_resamples``, ``seed`` and ``level``."""
        out: dict[str, Any] = {
            "group": self.group, "metric": self.metric, "n": self.n, "a": self.a, "b": self.b,
            "diff": self.diff, "ci_low": _num(self.ci_low), "ci_high": _num(self.ci_high),
            "p_value": _num(self.p_value), "significant": self.significant,
            "exceeds_threshold": self.exceeds_threshold, "method": self.method}
        if self.n_resamples is not None:
            out.update(n_resamples=self.n_resamples, seed=self.seed, level=self.level)
        return out


@dataclass(frozen=True)
class Comparison:
    """``B - A`` for two runs of one benchmark: one :class:`ComparisonRow` per group, the
    average over groups (several groups only) and the protocol fields that differ."""

    benchmark: str
    model_a: str | None
    model_b: str | None
    metric: str
    method: str  # "paired bootstrap, seed S" | "paired folds"
    threshold: float
    rows: tuple[ComparisonRow, ...]
    average: ComparisonRow | None = None
    protocol_differences: Mapping[str, tuple[Any, Any]] = field(default_factory=dict)

    @property
    def headline(self) -> ComparisonRow:
        """The row that sums the comparison up: the average, else the first row."""
        return self.average or self.rows[0]

    def row(self, group: str | None) -> ComparisonRow | None:
        """The row of ``group`` (``None``: the average row); ``None`` when absent."""
        if group is None:
            return self.average
        return next((r for r in self.rows if r.group == group), None)

    def to_dict(self) -> dict[str, Any]:
        """The ``condsim.compare/1`` JSON of ``condsim compare --out``."""
        return {"schema": SCHEMA, "benchmark": self.benchmark, "model_a": self.model_a,
                "model_b": self.model_b, "metric": self.metric, "method": self.method,
                "threshold": self.threshold, "groups": [r.to_dict() for r in self.rows],
                "average": self.average.to_dict() if self.average else None,
                "protocol_differences": {k: list(v)
                                         for k, v in self.protocol_differences.items()}}


# --- statistics on arrays -------------------------------------------------------------------


def resampled_means(x: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """``n_resamples`` means of ``x`` resampled with replacement: ``m_b = mean(x[I_b])`` with
    ``I_b = numpy.random.default_rng(seed).integers(0, n, (B, n))`` (drawn in chunks of
    rows, so the draws do not depend on the chunk size)."""
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    means = np.empty(n_resamples, dtype=np.float64)
    chunk = max(1, int(2_000_000 // max(n, 1)))
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = x[idx].mean(axis=1)
    return means


def _bootstrap_row(group: str, metric: str, n: int, a: float, b: float, means: np.ndarray, *,
                   method: str, seed: int, threshold: float, level: float) -> ComparisonRow:
    """A row from the observed means ``a``, ``b`` and the resampled differences ``means``:
    percentile CI ``[q_{(1-level)/2}, q_{(1+level)/2}]``, two-sided p-value
    ``min(1, 2 min(P(d_b <= 0), P(d_b >= 0)))`` with ``P(.) = (count + 1) / (B + 1)``."""
    n_resamples = int(means.size)
    al = (1.0 - level) / 2.0
    low, high = (float(v) for v in np.quantile(means, [al, 1.0 - al]))
    le = (np.count_nonzero(means <= 0) + 1) / (n_resamples + 1)
    ge = (np.count_nonzero(means >= 0) + 1) / (n_resamples + 1)
    diff = float(b - a)
    return ComparisonRow(
        group=group, metric=metric, n=int(n), a=float(a), b=float(b), diff=diff, ci_low=low,
        ci_high=high, p_value=float(min(1.0, 2.0 * min(le, ge))),
        significant=bool(low > 0 or high < 0), exceeds_threshold=bool(abs(diff) > threshold),
        method=method, n_resamples=n_resamples, seed=seed, level=level)


def _as_pair(a: Any, b: Any, group: str) -> tuple[np.ndarray, np.ndarray]:
    va = np.asarray(a, dtype=np.float64).ravel()
    vb = np.asarray(b, dtype=np.float64).ravel()
    if va.shape != vb.shape:
        raise PairingError(f"{group or 'paired test'}: needs values of the same units, got "
                           f"{va.size} and {vb.size}")
    if va.size == 0:
        raise PairingError(f"{group or 'paired test'}: no paired values")
    return va, vb


def paired_bootstrap(a: Any, b: Any, *, group: str = "", metric: str = "",
                     seed: int = DEFAULT_SEED, n_resamples: int = DEFAULT_RESAMPLES,
                     threshold: float = DEFAULT_THRESHOLD, level: float = LEVEL
                     ) -> ComparisonRow:
    """Paired bootstrap of ``diff = mean(b_i - a_i)`` over the same items ``i``.

    With ``d_i = b_i - a_i``, resample items with replacement (the same indices for ``a`` and
    ``b``), ``d_b = mean(d[I_b])`` (:func:`resampled_means` with ``seed``); the CI is the
    percentile interval of ``{d_b}``, the p-value ``min(1, 2 min(P(d_b <= 0), P(d_b >= 0)))``
    with the ``(count + 1) / (B + 1)`` correction. ``significant``: the CI excludes 0.
    """
    va, vb = _as_pair(a, b, group)
    means = resampled_means(vb - va, n_resamples, seed)
    return _bootstrap_row(group, metric, va.size, va.mean(), vb.mean(), means,
                          method="paired-bootstrap", seed=seed, threshold=threshold,
                          level=level)


def stratified_paired_bootstrap(
    groups: Mapping[str, tuple[Any, Any]], *, metric: str = "", average_group: str = "average",
    seed: int = DEFAULT_SEED, n_resamples: int = DEFAULT_RESAMPLES,
    threshold: float = DEFAULT_THRESHOLD, level: float = LEVEL,
) -> tuple[list[ComparisonRow], ComparisonRow | None]:
    """Per-group paired bootstraps and, with several groups, the average over groups.

    Group ``g`` (in the given order) is :func:`paired_bootstrap` with seed ``seed + 101 g``.
    The average row is ``diff = (1/G) sum_g mean(d^g)`` with resampled values ``(1/G) sum_g
    d^g_b``: each group's queries resampled independently (the same draws as the group rows),
    so the average is stratified by group (GeneCIS' headline, FashionIQ's average). Returns
    ``(rows, average or None)``.
    """
    if not groups:
        raise PairingError("no group to compare")
    rows, resampled, means_a, means_b = [], [], [], []
    for gi, (group, (a, b)) in enumerate(groups.items()):
        va, vb = _as_pair(a, b, group)
        s = seed + GROUP_SEED_STEP * gi
        d = resampled_means(vb - va, n_resamples, s)
        rows.append(_bootstrap_row(group, metric, va.size, va.mean(), vb.mean(), d,
                                   method="paired-bootstrap", seed=s, threshold=threshold,
                                   level=level))
        resampled.append(d)
        means_a.append(va.mean())
        means_b.append(vb.mean())
    if len(rows) == 1:
        return rows, None
    average = _bootstrap_row(
        average_group, metric, sum(r.n or 0 for r in rows), float(np.mean(means_a)),
        float(np.mean(means_b)), np.mean(resampled, axis=0),
        method="stratified-paired-bootstrap", seed=seed, threshold=threshold, level=level)
    return rows, average


def paired_folds(a: Any, b: Any, *, group: str = "", metric: str = "",
                 threshold: float = DEFAULT_THRESHOLD) -> ComparisonRow:
    """Paired per-fold differences ``d_f = b_f - a_f`` (LRVS-F: fold ``f`` of both runs is the
    same bootstrap replicate of the test set against the same drawn gallery).

    The folds are bootstrap replicates, so ``sd(d)`` (``ddof = 1``) estimates the sampling
    error of ``mean(d)``: interval ``mean(d) ± 1.96 sd(d)``, two-sided p-value ``2 (1 -
    Phi(|mean(d)| / sd(d)))`` (normal approximation; ``sd = 0`` gives 0 for a nonzero mean,
    1 for a zero one). ``significant``: the interval excludes 0. Needs two folds or more.
    """
    va, vb = _as_pair(a, b, group)
    if va.size < 2:
        raise PairingError(f"{group or 'paired folds'}: needs at least 2 folds, got {va.size}")
    d = vb - va
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    z = abs(mean) / sd if sd > 0 else (math.inf if mean else 0.0)
    p = 1.0 - math.erf(z / math.sqrt(2.0)) if math.isfinite(z) else 0.0
    half = FOLD_Z * sd
    return ComparisonRow(
        group=group, metric=metric, n=int(d.size), a=float(va.mean()), b=float(vb.mean()),
        diff=mean, ci_low=mean - half, ci_high=mean + half, p_value=float(p),
        significant=bool(abs(mean) > half), exceeds_threshold=bool(abs(mean) > threshold),
        method="paired-folds")


def std_interval95(mean: float, std: float) -> tuple[float, float]:
    """``mean ± Z95 std``: a 95% interval from the std of bootstrap replicates (LRVS-F folds
    are bootstrap replicates, so their std estimates the standard error)."""
    half = Z95 * std
    return mean - half, mean + half


def ci_overlap(a: tuple[float, float, float], b: tuple[float, float, float], *,
               group: str = "", metric: str = "", threshold: float = DEFAULT_THRESHOLD
               ) -> ComparisonRow:
    """The unpaired fallback: ``a``, ``b`` = ``(value, low95, high95)`` of each run.

    ``diff = b - a``; significantly higher when ``low_b > high_a``, lower when ``high_b <
    low_a`` (non-overlap of the two 95% intervals: conservative, overlapping intervals can
    still differ). No interval of the difference and no p-value (NaN); marked ``†``.
    """
    (va, a_lo, a_hi), (vb, b_lo, b_hi) = a, b
    up, down = b_lo > a_hi, b_hi < a_lo
    return ComparisonRow(
        group=group, metric=metric, n=None, a=float(va), b=float(vb), diff=float(vb - va),
        ci_low=math.nan, ci_high=math.nan, p_value=math.nan, significant=bool(up or down),
        exceeds_threshold=bool(abs(vb - va) > threshold), method="ci-overlap")


# --- runs -----------------------------------------------------------------------------------


def per_query_groups(result: Any, pairing: PairingLike, key: str | None = None
                     ) -> dict[str, tuple[list[Any] | None, np.ndarray]]:
    """``{group: (query ids or None, per-query values)}`` of a run, where its benchmark's
    ``pairing`` says they are: ``metrics[group_key][group]["per_query"][key]`` (groups) or
    ``metrics["per_query"][key]`` (one group, named after the benchmark). ``key`` defaults
    to ``pairing.key``."""
    key = key or pairing.key
    blocks = (result.metrics.get(pairing.group_key) or {} if pairing.group_key
              else {result.benchmark: result.metrics})
    if not isinstance(blocks, dict) or not blocks:
        raise PairingError(f"{result.benchmark} run of {result.model.get('name')}: no "
                           f"{pairing.group_key or 'metrics'} to pair")
    out = {}
    for group, m in blocks.items():
        values = (m.get("per_query") or {}).get(key) if isinstance(m, dict) else None
        if values is None:
            raise PairingError(f"{result.benchmark} run of {result.model.get('name')}: no "
                               f"per-query {key} for {group} (written by an older condsim?)")
        out[str(group)] = (m.get("query_ids"), np.asarray(values, np.float64))
    return out


def _id_order(q: Any) -> tuple[int, Any]:
    """Canonical order of query ids: numbers by value, then everything else by ``str``."""
    if isinstance(q, (int, float, np.integer, np.floating)) and not isinstance(q, bool):
        return (0, float(q))
    return (1, str(q))


def pair_by_id(group: str, a: tuple[list[Any] | None, np.ndarray],
               b: tuple[list[Any] | None, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Values of the queries both runs evaluated, matched by query id (``str(id)``) and put
    in the canonical id order (numbers by value, then strings), so neither run's storage
    order changes any statistic; without ids, position ``i`` of both runs (then the counts
    must agree)."""
    (ids_a, va), (ids_b, vb) = a, b
    if ids_a is None or ids_b is None:
        if va.shape != vb.shape:
            raise PairingError(f"{group}: runs without query ids must have the same queries")
        return va, vb
    if len(ids_a) != va.size or len(ids_b) != vb.size:
        raise PairingError(f"{group}: query_ids and per-query values differ in length")
    pos_b = {str(q): i for i, q in enumerate(ids_b)}
    shared = sorted((q for q in ids_a if str(q) in pos_b), key=_id_order)
    if not shared:
        raise PairingError(f"{group}: the two runs share no query; cannot pair them")
    pos_a = {str(q): i for i, q in enumerate(ids_a)}
    ia = np.array([pos_a[str(q)] for q in shared])
    ib = np.array([pos_b[str(q)] for q in shared])
    return va[ia], vb[ib]


def _models(a: Any, b: Any) -> tuple[str | None, str | None]:
    return a.model.get("name"), b.model.get("name")


def _protocol_differences(a: Any, b: Any) -> dict[str, tuple[Any, Any]]:
    return {k: (a.protocol.get(k), b.protocol.get(k))
            for k in sorted(set(a.protocol) | set(b.protocol))
            if k not in ("encoder_passes",) and a.protocol.get(k) != b.protocol.get(k)}


def query_comparison(a: Any, b: Any, pairing: PairingLike, *, key: str | None = None,
                     seed: int = DEFAULT_SEED, n_resamples: int = DEFAULT_RESAMPLES,
                     threshold: float = DEFAULT_THRESHOLD) -> Comparison:
    """Paired bootstrap of ``B - A`` per group over the queries both runs scored (matched by
    id, :func:`pair_by_id`) and, with several groups, of the average over groups
    (:func:`stratified_paired_bootstrap`, groups in ``A``'s order). ``key``: the per-query
    values to pair (default ``pairing.key``, the benchmark's headline)."""
    key = key or pairing.key
    label = pairing.label if key == pairing.key else key
    ga, gb = per_query_groups(a, pairing, key), per_query_groups(b, pairing, key)
    common = [g for g in ga if g in gb]
    if not common:
        raise PairingError(f"the two {a.benchmark} runs share no group (task/category)")
    groups = {g: pair_by_id(g, ga[g], gb[g]) for g in common}
    rows, average = stratified_paired_bootstrap(
        groups, metric=label, average_group=f"average {label}", seed=seed,
        n_resamples=n_resamples, threshold=threshold)
    return Comparison(a.benchmark, *_models(a, b), metric=label,
                      method=f"paired bootstrap, seed {seed}", threshold=threshold,
                      rows=tuple(rows), average=average,
                      protocol_differences=_protocol_differences(a, b))


def _check_group_digests(a: Any, b: Any, key: str | None) -> None:
    """Refuse to pair runs whose per-group draws differ (``protocol[key][group]``, e.g.
    LRVS-F's draw digest per distractor count), naming the first group that differs."""
    if key is None:
        return
    da, db = a.protocol.get(key), b.protocol.get(key)
    if da is None and db is None and a.protocol.get("n_dists") == b.protocol.get("n_dists"):
        return  # older runs without digests: the same counts in the same order drew alike
    if not isinstance(da, dict) or not isinstance(db, dict):
        raise PairingError(f"{a.benchmark}: only one of the runs records {key!r} (written by "
                           "different condsim versions); rerun the older one to compare")
    for group in sorted(set(da) & set(db), key=str):
        if da[group] != db[group]:
            raise PairingError(f"{a.benchmark}: the two runs drew different galleries for "
                               f"{group} ({key} differ); they cannot be paired. Rerun with the "
                               "same seed and distractor files")


def fold_comparison(a: Any, b: Any, pairing: PairingLike, *,
                    threshold: float = DEFAULT_THRESHOLD) -> Comparison:
    """:func:`paired_folds` of two LRVS-F runs per distractor count ``n`` and K both hold
    (rows ``"R@K +n"``, ``metrics["recall"][n][K]["folds"]``). The runs must share the
    pairing's ``must_agree`` protocol fields and the seed, so fold ``f`` of both scores the
    same queries against the same drawn gallery."""
    differing = [k for k in pairing.must_agree if a.protocol.get(k) != b.protocol.get(k)]
    if differing or a.seed != b.seed:
        values = [(k, a.protocol.get(k), b.protocol.get(k)) for k in differing]
        raise PairingError(
            f"{a.benchmark} runs can only be paired when {', '.join(pairing.must_agree)} "
            f"agree; these differ in {differing or ['seed']}: {values or [(a.seed, b.seed)]}")
    for run in (a, b):
        if not isinstance(run.metrics.get("recall"), dict):
            raise PairingError(f"{run.benchmark} results of {run.model.get('name')} hold no "
                               "per-fold recall to pair")
    _check_group_digests(a, b, getattr(pairing, "per_group_agree", None))
    rows = []
    for n, per_k in a.metrics["recall"].items():
        for k, cell_a in per_k.items():
            cell_b = b.metrics["recall"].get(n, {}).get(k)
            if cell_b is None or "folds" not in cell_a or "folds" not in cell_b:
                continue
            rows.append(paired_folds(cell_a["folds"], cell_b["folds"],
                                     group=f"R@{k} +{int(n):,}", metric=pairing.label,
                                     threshold=threshold))
    if not rows:
        raise PairingError(f"the two {a.benchmark} runs share no distractor count and K with "
                           "per-fold values")
    return Comparison(a.benchmark, *_models(a, b), metric=pairing.label, method="paired folds",
                      threshold=threshold, rows=tuple(rows))


def compare(a: Any, b: Any, pairing: PairingLike, *, key: str | None = None,
            seed: int = DEFAULT_SEED, n_resamples: int = DEFAULT_RESAMPLES,
            threshold: float = DEFAULT_THRESHOLD) -> Comparison:
    """``B - A`` for two runs of one benchmark, paired as ``pairing`` says: per-fold
    differences (``kind="folds"``, :func:`fold_comparison`) or a paired bootstrap over
    queries (:func:`query_comparison`). Raises :class:`~condsim.errors.DataError` for runs of
    different benchmarks and :class:`~condsim.errors.PairingError` for runs that cannot be
    paired (the report then falls back to :func:`ci_overlap`)."""
    if a.benchmark != b.benchmark:
        raise DataError(f"cannot compare a {a.benchmark} run with a {b.benchmark} run")
    if pairing.kind == "folds":
        return fold_comparison(a, b, pairing, threshold=threshold)
    if pairing.kind != "queries":
        raise PairingError(f"{a.benchmark}: unknown pairing kind {pairing.kind!r}")
    return query_comparison(a, b, pairing, key=key, seed=seed, n_resamples=n_resamples,
                            threshold=threshold)


def paired_comparison(a: Any, b: Any, pairing: PairingLike, *, seed: int = DEFAULT_SEED,
                      n_resamples: int = DEFAULT_RESAMPLES,
                      threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """``compare(a, b, pairing, ...).to_dict()``: the ``condsim.compare/1`` JSON."""
    return compare(a, b, pairing, seed=seed, n_resamples=n_resamples,
                   threshold=threshold).to_dict()


__all__ = [
    "DEFAULT_RESAMPLES", "DEFAULT_SEED", "DEFAULT_THRESHOLD", "FOLD_Z", "LEVEL", "METHODS",
    "SCHEMA", "Z95", "Comparison", "ComparisonRow", "PairingLike", "ci_overlap", "compare",
    "fold_comparison", "pair_by_id", "paired_bootstrap", "paired_comparison", "paired_folds",
    "per_query_groups", "query_comparison", "resampled_means", "std_interval95",
    "stratified_paired_bootstrap",
]
