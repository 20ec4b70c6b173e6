"""Core types shared by every layer: model metadata and the encoder protocol."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, Union, runtime_checkable

import numpy as np
import torch
from PIL import Image

#: An image as handed to an encoder: a decoded PIL image or the raw encoded bytes (JPEG/PNG).
ImageLike = Union[Image.Image, bytes]  # noqa: UP007 (a runtime alias, py3.10 compatible)

#: The condition kinds a model may support.
CONDITION_KINDS = ("category", "text")


@dataclass(frozen=True)
class ModelMeta:
    """What identifies a model's embeddings.

    ``preprocessing_id`` is part of the model's identity (as in open_clip): two runs with the
    same weights but different resize/crop/normalisation produce different embeddings and must
    never share cache entries.
    """

    name: str
    embedding_dim: int
    preprocessing_id: str
    conditions: tuple[str, ...] = CONDITION_KINDS
    revision: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    #: Compute precision of the forward pass (``fp32``, or ``bf16``/``fp16`` autocast): reduced
    #: precision changes the embeddings, so it is part of the cache identity.
    precision: str = "fp32"
    #: The embedding space this model *shares* with another model (that model's
    #: :attr:`cache_base`), or ``""`` (its own). A model whose targets are exactly another
    #: model's targets (a textual-inversion adapter over a CLIP) sets it, so that targets cached
    #: by either are reused by both; its queries then need :attr:`query_namespace`.
    cache_space: str = ""
    #: Salt of this model's *query* cache keys (``""``: none, the keys of earlier condsim
    #: versions): models sharing a space keep their queries apart by it (see
    #: :func:`condsim.cache.store.item_keys`).
    query_namespace: str = ""

    @property
    def cache_base(self) -> str:
        """``name@revision#preprocessing``: the space this meta names, before precision."""
        return f"{self.name}@{self.revision or 'none'}#{self.preprocessing_id}"

    @property
    def cache_id(self) -> str:
        """Stable identifier of this model's embedding space (``cache_space``, or name +
        revision + preprocessing; + precision when not fp32)."""
        base = self.cache_space or self.cache_base
        return base if self.precision == "fp32" else f"{base}~{self.precision}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["conditions"] = list(self.conditions)
        for key in ("cache_space", "query_namespace"):  # absent unless set (as before)
            if not data[key]:
                del data[key]
        return data


@runtime_checkable
class ConditionalEncoder(Protocol):
    """Anything that embeds (image, condition) queries and plain target images.

    Scores are inner products between ``encode_queries`` and ``encode_targets`` rows.
    """

    meta: ModelMeta

    def encode_queries(
        self, images: Sequence[ImageLike], conditions: Sequence[str]
    ) -> torch.Tensor:
        """Return a ``(len(images), meta.embedding_dim)`` tensor of query embeddings."""
        ...

    def encode_targets(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """Return a ``(len(images), meta.embedding_dim)`` tensor of target embeddings."""
        ...


def as_float32_rows(x: torch.Tensor | np.ndarray, n: int, dim: int, what: str) -> np.ndarray:
    """Convert model output to a C-contiguous float32 ``(n, dim)`` array, checking it.

    Raises :class:`~condsim.errors.EmbeddingError` on a wrong shape or non-finite values,
    naming ``what`` was being encoded.
    """
    from condsim.errors import EmbeddingError

    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if arr.shape != (n, dim):
        raise EmbeddingError(
            f"{what}: the model returned shape {tuple(arr.shape)}, expected ({n}, {dim})"
        )
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise EmbeddingError(
            f"{what}: the model returned NaN/inf embeddings for {rows.size} of {n} rows "
            f"(first rows: {rows[:5].tolist()}); check the model's dtype/weights"
        )
    return arr
