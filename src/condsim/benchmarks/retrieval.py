"""Shared parts of the composed-retrieval benchmarks (GeneCIS, CIRR, MIT-States, ...):
encode each unique image (or crop, or (image, condition) query) once through the cache,
and summarise per-query recalls with seeded bootstrap CIs."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from condsim.cache.encode import encode_cached
from condsim.cache.store import KEY_DTYPE, EmbeddingCache
from condsim.data.crops import ImageRef
from condsim.errors import DataError
from condsim.io import file_digest
from condsim.metrics.bootstrap import _resampled_means, bootstrap_ci

logger = logging.getLogger(__name__)


class FileDigests:
    """blake2b digests of image files, computed once per path."""

    def __init__(self) -> None:
        self._memo: dict[str, str] = {}

    def __call__(self, path: str) -> str:
        if path not in self._memo:
            self._memo[path] = file_digest(path)
        return self._memo[path]


def ref_keys(
    refs: Sequence[ImageRef], digests: FileDigests, conditions: Sequence[str] | None = None
) -> np.ndarray:
    """Cache keys: digest of (file content digest, crop mode + box, condition)."""
    keys = np.empty(len(refs), dtype=KEY_DTYPE)
    for i, ref in enumerate(refs):
        h = hashlib.blake2b(digests(ref.path).encode(), digest_size=16)
        if ref.bbox is not None:
            h.update(f"|{ref.crop_mode}|{ref.bbox}".encode())
        if conditions is not None:
            h.update(b"\0" + conditions[i].encode())
        keys[i] = h.hexdigest().encode()
    return keys


@dataclass
class EncodeCounts:
    """Image-encoder passes: what a per-query loop would do vs what condsim did."""

    per_query_loop: int = 0
    unique_items: int = 0
    encoded_now: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.per_query_loop / max(1, self.unique_items)


def check_files(refs: Sequence[ImageRef], max_missing: int, what: str) -> set[str]:
    """Paths of ``refs`` that do not exist; raises when more than ``max_missing``."""
    missing = sorted({r.path for r in refs if not Path(r.path).is_file()})
    if len(missing) > max_missing:
        raise DataError(
            f"{what}: {len(missing)} image file(s) missing (allowed: {max_missing}), e.g. "
            f"{missing[:3]}; check the image folders or raise --max-missing"
        )
    if missing:
        logger.warning("%s: %d missing image files; their queries are skipped", what,
                       len(missing))
    return set(missing)


def encode_unique(
    model: Any, cache: EmbeddingCache, refs: Sequence[ImageRef], digests: FileDigests,
    conditions: Sequence[str] | None = None, *, batch_size: int = 64, num_workers: int = 0,
    progress: Callable[[int], None] | None = None, what: str = "images",
) -> tuple[np.ndarray, dict[int, str], int]:
    """Embeddings of ``refs`` (queries when ``conditions`` is given), each encoded at most
    once and only when not cached. Returns ``(embeddings, errors, n_encoded_now)``; rows of
    undecodable items are NaN and listed in ``errors``."""
    keys = ref_keys(refs, digests, conditions)
    before = cache.lookup(keys)
    target_keys = ref_keys(refs, digests) if conditions is not None else None
    rows, errors = encode_cached(
        model, cache, list(refs), conditions, keys=keys, target_keys=target_keys,
        batch_size=batch_size, num_workers=num_workers, progress=progress, what=what,
    )
    emb = np.full((len(refs), model.meta.embedding_dim), np.nan, np.float32)
    ok = rows >= 0
    emb[ok] = cache.read(rows[ok])
    return emb, errors, int((before < 0).sum())


def summarize_recalls(
    per_query: np.ndarray, ks: Sequence[int], *, seed: int, n_resamples: int
) -> dict[str, dict[str, float]]:
    """Mean and percentile bootstrap CI (over queries, seeded) of each column of
    ``per_query`` ``(Q, len(ks))``."""
    out = {}
    for j, k in enumerate(ks):
        ci = bootstrap_ci(per_query[:, j], n_resamples=n_resamples, seed=seed + j)
        out[str(k)] = {"mean": ci.mean, "ci_low": ci.low, "ci_high": ci.high}
    return out


def average_ci(
    columns: Sequence[np.ndarray], *, seed: int, n_resamples: int, level: float = 0.95
) -> dict[str, float]:
    """CI of the average over tasks of per-task means, each task resampled independently:
    ``m_b = (1/T) sum_t mean(resample_b(x_t))``, percentile interval of ``{m_b}``."""
    means = np.mean([_resampled_means(np.asarray(c, np.float64), n_resamples, seed + 101 * i)
                     for i, c in enumerate(columns)], axis=0)
    a = (1 - level) / 2
    low, high = np.quantile(means, [a, 1 - a])
    return {"mean": float(np.mean([np.mean(c) for c in columns])), "ci_low": float(low),
            "ci_high": float(high)}


# --- paired comparison of two runs (``condsim compare``) -----------------------------------

# Per benchmark: where the per-query values of the compared metric live.
# ``(metric label, groups key or None, per_query key)``: with a groups key, each group
# (GeneCIS task, FashionIQ category) has its own ``per_query`` and ``query_ids``.
PER_QUERY_LAYOUT: dict[str, tuple[str, str | None, str]] = {
    "genecis": ("R@1", "tasks", "1"),
    "fashioniq": ("R@10", "categories", "recall_at_10"),
    "cirr": ("R@1", None, "recall_at_1"),
    "mitstates": ("R@1", None, "recall_at_1"),
    "circo": ("mAP@10", None, "map_at_10"),
}


def per_query_groups(result: Any) -> tuple[str, dict[str, tuple[list[Any] | None, np.ndarray]]]:
    """``(metric label, {group: (query ids or None, per-query values)})`` of a run."""
    layout = PER_QUERY_LAYOUT.get(result.benchmark)
    if layout is None:
        raise DataError(f"condsim compare pairs per-query values; {result.benchmark!r} runs have "
                        f"none (benchmarks: {', '.join(PER_QUERY_LAYOUT)}); use condsim report")
    label, groups_key, pq_key = layout
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


def paired_comparison(a: Any, b: Any, *, seed: int = 0, n_resamples: int = 2000,
                      threshold: float = 0.002) -> dict[str, Any]:
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
    if a.benchmark == "lrvsf":
        return paired_fold_comparison(a, b, threshold=threshold)
    label, ga = per_query_groups(a)
    _, gb = per_query_groups(b)
    common = [g for g in ga if g in gb]
    if not common:
        raise DataError(f"the two {a.benchmark} runs share no group (task/category)")
    rows, resampled, means_a, means_b = [], [], [], []
    for gi, group in enumerate(common):
        va, vb = _pair(group, ga[group], gb[group])
        d = _resampled_means(vb - va, n_resamples, seed + 101 * gi)
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
            "metric": label, "threshold": threshold, "groups": rows, "average": average,
            "protocol_differences": differing}


#: LRVS-F protocol fields that must agree for two runs' folds to be paired
_LRVSF_PAIRING = ("folds", "seed", "conditioning", "n_distractors_available", "n_products")


def paired_fold_comparison(a: Any, b: Any, *, threshold: float = 0.002) -> dict[str, Any]:
    """``B - A`` for two LRVS-F runs, per distractor count at every K both hold.

    The runs must share folds, seed and distractor pool, so fold ``f`` of both runs scores
    the same queries against the same drawn gallery: ``d_f = b_f - a_f``. The folds are
    bootstrap replicates of the test set, so the spread of ``d_f`` estimates the sampling
    error of ``mean(d)``: 95% interval ``mean(d) ± 1.96 sd(d)`` (``ddof = 1``), two-sided
    p-value ``2 (1 - Phi(|mean(d)| / sd(d)))`` (normal approximation; ``sd = 0`` gives 0 or
    1). ``significant``: the interval excludes 0; ``exceeds_threshold``: ``|mean(d)| >
    threshold``."""
    from math import erf, sqrt

    differing = [k for k in _LRVSF_PAIRING if a.protocol.get(k) != b.protocol.get(k)]
    if differing or a.seed != b.seed:
        values = [(k, a.protocol.get(k), b.protocol.get(k)) for k in differing]
        raise DataError(
            "LRVS-F runs can only be paired when folds, seed and distractors agree; these "
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
    return {"schema": "condsim.compare/1", "benchmark": "lrvsf",
            "model_a": a.model.get("name"), "model_b": b.model.get("name"),
            "metric": "recall (paired folds)", "threshold": threshold, "groups": rows,
            "average": None, "protocol_differences": {}}


# --- results files --------------------------------------------------------------------------

DATASETS: dict[str, dict[str, str]] = {
    "genecis": {"type": "facebookresearch/genecis", "name": "GeneCIS"},
    "cirr": {"type": "Cuberick-Orion/CIRR", "name": "CIRR"},
    "circo": {"type": "miccunifi/CIRCO", "name": "CIRCO"},
    "mitstates": {"type": "mit-states", "name": "MIT-States"},
    "fashioniq": {"type": "XiaoxiaoGuo/fashion-iq", "name": "FashionIQ"},
}
_GROUP_KEYS = ("tasks", "categories")
_SKIP_KEYS = ("per_query", "query_ids")


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


def cir_model_card(result: Any) -> dict[str, Any]:
    """HF ``model-index`` YAML dict of a composed-retrieval run: every reported mean, in
    percent with 2 decimals (CIs stay in ``results.json``)."""
    dataset = {**DATASETS.get(result.benchmark, {"type": result.benchmark,
                                                 "name": result.benchmark}),
               "split": result.protocol.get("split", "")}
    return {
        "tags": ["condsim", f"{result.benchmark}-benchmark"],
        "model-index": [{
            "name": result.model.get("name", "model"),
            "results": [{"task": {"type": "Retrieval"}, "dataset": dataset,
                         "metrics": _metric_entries(result.metrics)}],
        }],
    }


def save_run(result: Any, out_dir: str | Path | None) -> None:
    """Write ``results.json`` and ``model_card.yaml`` (atomically) when ``out_dir`` is set."""
    if out_dir is None:
        return
    from condsim.results.yaml_card import write_yaml

    result.save(Path(out_dir) / "results.json")
    write_yaml(Path(out_dir) / "model_card.yaml", cir_model_card(result))
