"""Shared parts of the composed-retrieval benchmarks (GeneCIS, CIRR, MIT-States, ...):
encode each unique image (or crop, or (image, condition) query) once through the cache,
and summarise per-query recalls with seeded bootstrap CIs."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from condsim.cache.encode import encode_cached, query_namespace
from condsim.cache.store import KEY_DTYPE, EmbeddingCache, condition_salt
from condsim.data.crops import ImageRef
from condsim.io import file_digest
from condsim.metrics.bootstrap import bootstrap_ci
from condsim.metrics.significance import resampled_means

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
    refs: Sequence[ImageRef], digests: FileDigests, conditions: Sequence[str] | None = None,
    *, namespace: str = "",
) -> np.ndarray:
    """Cache keys: digest of (file content digest, crop mode + box, [query namespace,]
    condition); see :func:`~condsim.cache.store.condition_salt`."""
    keys = np.empty(len(refs), dtype=KEY_DTYPE)
    for i, ref in enumerate(refs):
        h = hashlib.blake2b(digests(ref.path).encode(), digest_size=16)
        if ref.bbox is not None:
            h.update(f"|{ref.crop_mode}|{ref.bbox}".encode())
        if conditions is not None:
            h.update(condition_salt(conditions[i], namespace))
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


def encode_unique(
    model: Any, cache: EmbeddingCache, refs: Sequence[ImageRef], digests: FileDigests,
    conditions: Sequence[str] | None = None, *, batch_size: int = 64, num_workers: int = 0,
    progress: Callable[[int], None] | None = None, what: str = "images",
) -> tuple[np.ndarray, dict[int, str], int]:
    """Embeddings of ``refs`` (queries when ``conditions`` is given), each encoded at most
    once and only when not cached. Returns ``(embeddings, errors, n_encoded_now)``; rows of
    undecodable items are NaN and listed in ``errors``."""
    keys = ref_keys(refs, digests, conditions, namespace=query_namespace(model))
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
    means = np.mean([resampled_means(np.asarray(c, np.float64), n_resamples, seed + 101 * i)
                     for i, c in enumerate(columns)], axis=0)
    a = (1 - level) / 2
    low, high = np.quantile(means, [a, 1 - a])
    return {"mean": float(np.mean([np.mean(c) for c in columns])), "ci_low": float(low),
            "ci_high": float(high)}


