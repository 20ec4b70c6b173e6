"""The cache's front door: encode only what the cache does not hold yet."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from condsim.cache.store import EmbeddingCache, derived_keys, item_keys
from condsim.errors import EmbeddingError, InvalidArgumentError
from condsim.models.base import ComposeInputView, encode_images
from condsim.types import as_float32_rows


def query_namespace(model: Any) -> str:
    """The salt of ``model``'s query keys (:attr:`~condsim.types.ModelMeta.query_namespace`,
    ``""`` for models that share no cache space)."""
    return str(getattr(getattr(model, "meta", None), "query_namespace", "") or "")


def compose_input_tag(model: Any) -> str:
    """``model``'s :attr:`~condsim.models.base.PixelEncoder.compose_input_tag` when it composes
    queries from compose inputs, else ``""``."""
    if not getattr(model, "composes_from_targets", False):
        return ""
    return str(getattr(model, "compose_input_tag", "") or "")


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

    A model with a :attr:`~condsim.models.base.PixelEncoder.compose_input_tag` composes from
    its cached compose inputs instead (keys derived from the target keys); its targets are
    computed from the same image-tower pass, so each image still goes through it once.

    Bad arguments (``batch_size``/``chunk`` < 1, ``num_workers`` < 0, ``keys`` or
    ``conditions`` not one per image) raise :class:`~condsim.errors.InvalidArgumentError`
    before the cache is touched. Only rows the encoder produced are cached: an encoder that
    returns a wrong shape or NaN/inf raises :class:`~condsim.errors.EmbeddingError` before
    its chunk is written (earlier chunks are already cached, and valid).
    """
    _check_args(len(images), conditions, batch_size, num_workers, chunk, keys, target_keys,
                what)
    if keys is None:
        keys = item_keys(images, conditions, namespace=query_namespace(model))
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
    via_inputs = conditions is None and bool(compose_input_tag(model))
    for start in range(0, missing.size, chunk):
        sel = missing[start:start + chunk]
        if via_inputs:  # targets written from the compose inputs' image-tower pass
            _, errs = _encode_compose_inputs(
                model, cache, [images[i] for i in sel], keys[sel], batch_size=batch_size,
                num_workers=num_workers, progress=progress, what=what)
            for j, msg in errs.items():
                errors[int(sel[j])] = msg
            continue
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
    """(ok mask, query embeddings of the ok items, errors) from cached target embeddings (or
    compose inputs, see :func:`_encode_compose_inputs`)."""
    if compose_input_tag(model):
        t_rows, errors = _encode_compose_inputs(model, cache, images, target_keys, **encode)
    else:
        t_rows, errors = encode_cached(model, cache, images, None, keys=target_keys, **encode)
    ok = t_rows >= 0
    targets = torch.from_numpy(np.ascontiguousarray(cache.read(t_rows[ok])))
    picked = [c for c, good in zip(conditions, ok, strict=True) if good]
    if not picked:
        return ok, np.zeros((0, cache.meta.embedding_dim), np.float32), errors
    emb = as_float32_rows(model.compose_queries(targets, picked), len(picked),
                          cache.meta.embedding_dim, "queries (composed from target embeddings)")
    return ok, emb, errors


def _encode_compose_inputs(
    model: Any, cache: EmbeddingCache, images: list[Any], target_keys: np.ndarray, **encode: Any,
) -> tuple[np.ndarray, dict[int, str]]:
    """Cache rows of the compose inputs ``x`` of ``images`` (``-1``: undecodable), encoding
    the missing ones (:class:`~condsim.models.base.ComposeInputView`), and the targets
    ``t = model.target_from_compose_input(x)`` of those whose target key is not cached yet:
    one image-tower pass gives both."""
    in_keys = derived_keys(target_keys, compose_input_tag(model))
    rows, errors = encode_cached(ComposeInputView(model), cache, images, None, keys=in_keys,
                                 **encode)
    need = np.flatnonzero((rows >= 0) & (cache.lookup(target_keys) < 0))
    if need.size:
        _, first = np.unique(target_keys[need], return_index=True)
        need = need[np.sort(first)]
        inputs = torch.from_numpy(np.ascontiguousarray(cache.read(rows[need])))
        targets = as_float32_rows(model.target_from_compose_input(inputs), need.size,
                                  cache.meta.embedding_dim, "targets (from compose inputs)")
        cache.append(target_keys[need], targets, what=str(encode.get("what", "images")))
    return rows, errors


def pending_images(model: Any, cache: EmbeddingCache, image_keys: np.ndarray,
                   reference_keys: np.ndarray) -> int:
    """How many of the distinct images ``image_keys`` a run still has to encode when the
    queries' reference images (``reference_keys``, among them) are composed from: those whose
    target is not cached, plus (a model with compose inputs) the references whose compose
    input is not cached."""
    n = int((cache.lookup(image_keys) < 0).sum())
    tag = compose_input_tag(model)
    if tag and len(reference_keys):
        refs = np.unique(reference_keys)
        n += int(((cache.lookup(refs) >= 0)
                  & (cache.lookup(derived_keys(refs, tag)) < 0)).sum())
    return n
