"""The cache's front door: encode only what the cache does not hold yet."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from condsim.cache.store import EmbeddingCache, item_keys
from condsim.errors import EmbeddingError, InvalidArgumentError
from condsim.models.base import encode_images
from condsim.types import as_float32_rows


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
    target_keys: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[int, str]]:
    """Cache rows of ``images`` (queries when ``conditions`` is given), ``-1`` where an image
    cannot be decoded; the second value maps those positions to the reason.

    Images whose key (digest of bytes [+ condition], see :func:`item_keys`; pass ``keys``
    when the images are not raw bytes, e.g. crops) is cached are not encoded again. New
    embeddings are appended every ``chunk`` images, so a killed run resumes where it stopped.

    Queries of a model that :attr:`~condsim.models.base.PixelEncoder.composes_from_targets`
    are built from the *target* embeddings of their images (cached, or encoded and cached
    first) and their conditions, so an image that is also a gallery item, or the reference
    of many queries, goes through the image tower once. With explicit ``keys`` this needs
    the images' target keys too (``target_keys``); without them queries are encoded directly.

    Bad arguments (``batch_size``/``chunk`` < 1, ``num_workers`` < 0, ``keys`` or
    ``conditions`` not one per image) raise :class:`~condsim.errors.InvalidArgumentError`
    before the cache is touched. Only rows the encoder produced are cached: an encoder that
    returns a wrong shape or NaN/inf raises :class:`~condsim.errors.EmbeddingError` before
    its chunk is written (earlier chunks are already cached, and valid).
    """
    _check_args(len(images), conditions, batch_size, num_workers, chunk, keys, target_keys,
                what)
    if keys is None:
        keys = item_keys(images, conditions)
        if conditions is not None:
            target_keys = item_keys(images)
    rows = cache.lookup(keys)
    # each missing key is encoded once, however often it repeats in ``images``
    missing = np.flatnonzero(rows < 0)
    _, first = np.unique(keys[missing], return_index=True)
    missing = missing[np.sort(first)]
    if progress is not None:
        progress(len(images) - missing.size)
    compose = (conditions is not None and target_keys is not None
               and bool(getattr(model, "composes_from_targets", False)))
    errors: dict[int, str] = {}
    for start in range(0, missing.size, chunk):
        sel = missing[start:start + chunk]
        if compose and conditions is not None and target_keys is not None:
            ok, emb, errs = _compose_queries(
                model, cache, [images[i] for i in sel], [conditions[i] for i in sel],
                target_keys[sel], batch_size=batch_size, num_workers=num_workers,
                progress=progress, what=what)
        else:
            ok, emb, errs = _encode_accounted(
                model, [images[i] for i in sel],
                None if conditions is None else [conditions[i] for i in sel],
                batch_size=batch_size, num_workers=num_workers, progress=progress, what=what,
            )
        for j, msg in errs.items():
            errors[int(sel[j])] = msg
        cache.append(keys[sel[ok]], emb, what=what)
    if missing.size:
        rows = cache.lookup(keys)
    if errors and (rows < 0).sum() > len(errors):  # repeats of an undecodable item
        failed = {keys[i]: msg for i, msg in errors.items()}
        errors.update({int(i): failed.get(keys[i], "not encoded")
                       for i in np.flatnonzero(rows < 0)})
    return rows, errors


def _check_args(n: int, conditions: Sequence[str] | None, batch_size: int, num_workers: int,
                chunk: int, keys: np.ndarray | None, target_keys: np.ndarray | None,
                what: str) -> None:
    """Raise :class:`InvalidArgumentError` for arguments that would make rows go missing."""
    for name, value, low in (("batch_size", batch_size, 1), ("chunk", chunk, 1),
                             ("num_workers", num_workers, 0)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise InvalidArgumentError(f"{what}: {name} must be an integer >= {low}, got "
                                       f"{value!r}; nothing was encoded or cached")
    for name, seq in (("conditions", conditions), ("keys", keys),
                      ("target_keys", target_keys)):
        if seq is not None and len(seq) != n:
            raise InvalidArgumentError(f"{what}: {len(seq)} {name} for {n} images")


def _encode_accounted(
    model: Any, images: list[Any], conditions: list[str] | None, *, progress:
    Callable[[int], None] | None, what: str, **encode: Any,
) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """:func:`encode_images`, checking that every image was accounted for (encoded or
    reported undecodable: ``encode_images`` reports progress once per image) and that there
    is one embedding per encoded image, so no unwritten row can reach the cache."""
    seen = 0

    def count(k: int) -> None:
        nonlocal seen
        seen += k
        if progress is not None:
            progress(k)

    res = encode_images(model, images, conditions, progress=count, what=what, **encode)
    ok = np.asarray(res.ok, bool)
    n = len(images)
    if seen != n or ok.shape != (n,) or len(res.embeddings) != int(ok.sum()) or \
            set(res.errors) != set(np.flatnonzero(~ok).tolist()):
        raise EmbeddingError(
            f"{what}: the encoder accounted for {seen} of {n} images ({int(ok.sum())} ok, "
            f"{len(res.errors)} failed, {len(res.embeddings)} embeddings); nothing of this "
            "chunk was cached")
    return ok, res.embeddings, res.errors


def _compose_queries(
    model: Any, cache: EmbeddingCache, images: list[Any], conditions: list[str],
    target_keys: np.ndarray, **encode: Any,
) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """(ok mask, query embeddings of the ok items, errors) from cached target embeddings."""
    t_rows, errors = encode_cached(model, cache, images, None, keys=target_keys, **encode)
    ok = t_rows >= 0
    targets = torch.from_numpy(np.ascontiguousarray(cache.read(t_rows[ok])))
    picked = [c for c, good in zip(conditions, ok, strict=True) if good]
    if not picked:
        return ok, np.zeros((0, cache.meta.embedding_dim), np.float32), errors
    emb = as_float32_rows(model.compose_queries(targets, picked), len(picked),
                          cache.meta.embedding_dim, "queries (composed from target embeddings)")
    return ok, emb, errors
