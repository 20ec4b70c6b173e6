"""Paired significance of two runs of one benchmark: the one place ``condsim compare`` and
``condsim report`` take their statistics from.

* :func:`resampled_means`: seeded bootstrap means (the engine of every CI);
* :func:`paired_comparison`: per group (GeneCIS task, FashionIQ category, or the whole
  benchmark) a paired bootstrap over the queries both runs scored, and with several groups a
  stratified one of the average over groups;
* :func:`paired_fold_comparison`: paired per-fold differences (LRVS-F).

Where the per-query or per-fold values live is the benchmark's ``pairing``
(:class:`condsim.benchmarks.spec.Pairing`), passed in by the caller.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from condsim.errors import DataError


def resampled_means(x: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """``n_resamples`` means of ``x`` resampled with replacement
    (``numpy.random.default_rng(seed).integers(0, n, (B, n))``, drawn in chunks)."""
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    means = np.empty(n_resamples, dtype=np.float64)
    chunk = max(1, int(2_000_000 // max(n, 1)))
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = x[idx].mean(axis=1)
    return means


def per_query_groups(result: Any, pairing: Any
                     ) -> tuple[str, dict[str, tuple[list[Any] | None, np.ndarray]]]:
    """``(metric label, {group: (query ids or None, per-query values)})`` of a run, where
    its benchmark's ``pairing`` (:class:`condsim.benchmarks.spec.Pairing`) says they are."""
    label, groups_key, pq_key = pairing.label, pairing.group_key, pairing.key
    blocks = (result.metrics.get(groups_key, {}) if groups_key
              else {result.benchmark: result.metrics})
    out = {}
    for group, m in blocks.items():
        values = (m.get("per_query") or {}).get(pq_key)
        if values is None:
            raise DataError(f"{result.benchmark} run of {result.model.get('name')}: no per-query "
                            f"{label} for {group} (written by an older condsim?)")
        out[group] = (m.get("query_ids"), np.asarray(values, np.float64))
    return label, out


def _pair(group: str, a: tuple[list[Any] | None, np.ndarray],
          b: tuple[list[Any] | None, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Values of the queries both runs evaluated, in the same order (by query id)."""
    (ids_a, va), (ids_b, vb) = a, b
    if ids_a is None or ids_b is None:
        if va.shape != vb.shape:
            raise DataError(f"{group}: runs without query ids must have the same queries")
        return va, vb
    pos_b = {str(q): i for i, q in enumerate(ids_b)}
    rows = [(i, pos_b[str(q)]) for i, q in enumerate(ids_a) if str(q) in pos_b]
    if not rows:
        raise DataError(f"{group}: the two runs share no query; cannot pair them")
    ia, ib = (np.array(c) for c in zip(*rows, strict=True))
    return va[ia], vb[ib]


def _row(group: str, label: str, a: np.ndarray, b: np.ndarray, diffs: np.ndarray, *,
         n_resamples: int, seed: int, threshold: float, level: float = 0.95) -> dict[str, Any]:
    """One comparison row from the observed means and resampled mean differences ``diffs``."""
    al = (1.0 - level) / 2.0
    low, high = (float(v) for v in np.quantile(diffs, [al, 1.0 - al]))
    le = (np.count_nonzero(diffs <= 0) + 1) / (n_resamples + 1)
    ge = (np.count_nonzero(diffs >= 0) + 1) / (n_resamples + 1)
    diff = float(b - a)
    significant = low > 0 or high < 0
    return {
        "group": group, "metric": label, "a": float(a), "b": float(b), "diff": diff,
        "ci_low": low, "ci_high": high, "p_value": min(1.0, 2.0 * min(le, ge)),
        "significant": significant, "exceeds_threshold": abs(diff) > threshold,
        "n_resamples": n_resamples, "seed": seed, "level": level,
    }


def paired_comparison(a: Any, b: Any, pairing: Any, *, seed: int = 0,
                      n_resamples: int = 2000, threshold: float = 0.002) -> dict[str, Any]:
    """Paired bootstrap of ``B - A`` per group (GeneCIS task, FashionIQ category, or the whole
    benchmark) and, with several groups, of the average over groups (GeneCIS' headline).

    Per group, with ``d_i = b_i - a_i`` over the queries both runs evaluated (matched by query
    id): resample queries with replacement (``numpy.random.default_rng(seed + 101 g)``), the
    CI is the percentile interval of resampled ``mean(d)``, the two-sided p-value
    ``min(1, 2 min(P(d_b <= 0), P(d_b >= 0)))`` with the ``(count + 1) / (n + 1)`` correction.
    The average row resamples each group independently with the same draws and averages the
    group means. ``significant``: the CI excludes 0; ``exceeds_threshold``: ``|diff| >
    threshold`` (GeneCIS: gains above 0.2% average R@1 are called significant).
    """
    if a.benchmark != b.benchmark:
        raise DataError(f"cannot compare a {a.benchmark} run with a {b.benchmark} run")
    if pairing.kind == "folds":
        return paired_fold_comparison(a, b, pairing, threshold=threshold)
    label, ga = per_query_groups(a, pairing)
    _, gb = per_query_groups(b, pairing)
    common = [g for g in ga if g in gb]
    if not common:
        raise DataError(f"the two {a.benchmark} runs share no group (task/category)")
    rows, resampled, means_a, means_b = [], [], [], []
    for gi, group in enumerate(common):
        va, vb = _pair(group, ga[group], gb[group])
        d = resampled_means(vb - va, n_resamples, seed + 101 * gi)
        rows.append({**_row(group, label, va.mean(), vb.mean(), d, n_resamples=n_resamples,
                            seed=seed + 101 * gi, threshold=threshold), "n": int(va.size)})
        resampled.append(d)
        means_a.append(va.mean())
        means_b.append(vb.mean())
    average = None
    if len(common) > 1:
        average = {**_row(f"average {label}", label, np.mean(means_a), np.mean(means_b),
                          np.mean(resampled, axis=0), n_resamples=n_resamples, seed=seed,
                          threshold=threshold), "n": int(sum(r["n"] for r in rows))}
    differing = {k: [a.protocol.get(k), b.protocol.get(k)]
                 for k in sorted(set(a.protocol) | set(b.protocol))
                 if k not in ("encoder_passes",) and a.protocol.get(k) != b.protocol.get(k)}
    return {"schema": "condsim.compare/1", "benchmark": a.benchmark,
            "model_a": a.model.get("name"), "model_b": b.model.get("name"),
            "metric": label, "method": f"paired bootstrap, seed {seed}",
            "threshold": threshold, "groups": rows, "average": average,
            "protocol_differences": differing}


def paired_fold_comparison(a: Any, b: Any, pairing: Any, *, threshold: float = 0.002
                           ) -> dict[str, Any]:
    """``B - A`` for two LRVS-F runs, per distractor count at every K both hold.

    The runs must share folds, seed and distractor pool, so fold ``f`` of both runs scores
    the same queries against the same drawn gallery: ``d_f = b_f - a_f``. The folds are
    bootstrap replicates of the test set, so the spread of ``d_f`` estimates the sampling
    error of ``mean(d)``: 95% interval ``mean(d) ± 1.96 sd(d)`` (``ddof = 1``), two-sided
    p-value ``2 (1 - Phi(|mean(d)| / sd(d)))`` (normal approximation; ``sd = 0`` gives 0 or
    1). ``significant``: the interval excludes 0; ``exceeds_threshold``: ``|mean(d)| >
    threshold``."""
    from math import erf, sqrt

    differing = [k for k in pairing.must_agree if a.protocol.get(k) != b.protocol.get(k)]
    if differing or a.seed != b.seed:
        values = [(k, a.protocol.get(k), b.protocol.get(k)) for k in differing]
        raise DataError(
            f"{a.benchmark} runs can only be paired when {', '.join(pairing.must_agree)} agree; "
            "these "
            f"differ in {differing or ['seed']}: {values or [(a.seed, b.seed)]}")
    for run in (a, b):
        if not isinstance(run.metrics.get("recall"), dict):
            raise DataError(f"LRVS-F results of {run.model.get('name')} hold no per-fold "
                            "recall to pair")
    rows = []
    for n, per_k in a.metrics["recall"].items():
        for k, cell_a in per_k.items():
            cell_b = b.metrics["recall"].get(n, {}).get(k)
            if cell_b is None:
                continue
            d = np.asarray(cell_b["folds"], np.float64) - np.asarray(cell_a["folds"], np.float64)
            mean = float(d.mean())
            sd = float(d.std(ddof=1)) if d.size > 1 else 0.0
            z = abs(mean) / sd if sd > 0 else (np.inf if mean else 0.0)
            p = 1.0 - erf(z / sqrt(2.0)) if np.isfinite(z) else 0.0
            rows.append({"group": f"R@{k} +{int(n):,}", "n": int(d.size),
                         "a": float(np.mean(cell_a["folds"])),
                         "b": float(np.mean(cell_b["folds"])), "diff": mean,
                         "ci_low": mean - 1.96 * sd, "ci_high": mean + 1.96 * sd,
                         "p_value": float(p), "significant": bool(abs(mean) > 1.96 * sd),
                         "exceeds_threshold": bool(abs(mean) > threshold)})
    if not rows:
        raise DataError("the two LRVS-F runs share no distractor count and K")
    return {"schema": "condsim.compare/1", "benchmark": a.benchmark,
            "model_a": a.model.get("name"), "model_b": b.model.get("name"),
            "metric": pairing.label, "method": "paired folds", "threshold": threshold,
            "groups": rows,
            "average": None, "protocol_differences": {}}
