"""The cache's front door: encode only what the cache does not hold yet."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from condsim.cache.store import EmbeddingCache, item_keys
from condsim.models.base import encode_images


def encode_cached(
    model: Any,
    cache: EmbeddingCache,
    images: Sequence[Any],
    conditions: Sequence[str] | None = None,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: Callable[[int], None] | None = None,
    what: str = "images",
    chunk: int = 8192,
    keys: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[int, str]]:
    """Cache rows of ``images`` (queries when ``conditions`` is given), ``-1`` where an image
    cannot be decoded; the second value maps those positions to the reason.

    Images whose key (digest of bytes [+ condition], see :func:`item_keys`; pass ``keys``
    when the images are not raw bytes, e.g. crops) is cached are not encoded again. New
    embeddings are appended every ``chunk`` images, so a killed run resumes where it stopped.
    """
    if keys is None:
        keys = item_keys(images, conditions)
    rows = cache.lookup(keys)
    missing = np.flatnonzero(rows < 0)
    if progress is not None:
        progress(len(images) - missing.size)
    errors: dict[int, str] = {}
    for start in range(0, missing.size, chunk):
        sel = missing[start:start + chunk]
        res = encode_images(
            model, [images[i] for i in sel],
            None if conditions is None else [conditions[i] for i in sel],
            batch_size=batch_size, num_workers=num_workers, progress=progress, what=what,
        )
        for j, msg in res.errors.items():
            errors[int(sel[j])] = msg
        cache.append(keys[sel[res.ok]], res.embeddings)
    if missing.size:
        rows = cache.lookup(keys)
    return rows, errors
