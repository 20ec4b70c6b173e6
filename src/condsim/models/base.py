"""Base class for pixel-level encoders and the overlapped decode/encode pipeline.

A :class:`PixelEncoder` splits encoding into a picklable CPU step (``preprocessor``: bytes ->
``(3, H, W)`` float32) that runs in DataLoader worker processes, and a tensor step on the
device (``encode_image_pixels`` / ``encode_query_pixels``). Worker decoding overlaps the
model's forward pass.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from condsim.data.images import ImageDecodeError
from condsim.errors import ModelError
from condsim.models.preprocess import ImagePreprocessor
from condsim.types import ImageLike, ModelMeta, as_float32_rows

logger = logging.getLogger(__name__)


def module_digest(module: torch.nn.Module) -> str:
    """Digest of a module's weights: part of the cache identity of trained models, so that
    embeddings of different weights never share cache entries."""
    import hashlib

    h = hashlib.blake2b(digest_size=8)
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class PixelEncoder(ABC):
    """A :class:`~condsim.types.ConditionalEncoder` with a separable preprocessing step."""

    meta: ModelMeta
    preprocessor: ImagePreprocessor
    device: torch.device

    @abstractmethod
    def encode_image_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Target embeddings of preprocessed images ``(B, 3, H, W)`` -> ``(B, D)``."""

    @abstractmethod
    def encode_query_pixels(
        self, pixels: torch.Tensor, conditions: Sequence[str]
    ) -> torch.Tensor:
        """Query embeddings of preprocessed images with their conditions -> ``(B, D)``."""

    def check_conditions(self, conditions: Sequence[str], kind: str | None) -> None:
        if kind is not None and kind not in self.meta.conditions:
            raise ModelError(
                f"model {self.meta.name} does not support {kind!r} conditions "
                f"(supports: {', '.join(self.meta.conditions) or 'none'})"
            )

    def _pixels(self, images: Sequence[ImageLike]) -> torch.Tensor:
        arr = np.stack([self.preprocessor(im) for im in images])
        return torch.from_numpy(arr)

    @torch.inference_mode()
    def encode_targets(self, images: Sequence[ImageLike]) -> torch.Tensor:
        if len(images) == 0:
            return torch.zeros((0, self.meta.embedding_dim))
        return self.encode_image_pixels(self._pixels(images).to(self.device)).float().cpu()

    @torch.inference_mode()
    def encode_queries(
        self, images: Sequence[ImageLike], conditions: Sequence[str]
    ) -> torch.Tensor:
        if len(images) != len(conditions):
            raise ModelError(f"{len(images)} images but {len(conditions)} conditions")
        if len(images) == 0:
            return torch.zeros((0, self.meta.embedding_dim))
        pixels = self._pixels(images).to(self.device)
        return self.encode_query_pixels(pixels, list(conditions)).float().cpu()


class _DecodeDataset(Dataset):
    """Decodes + resizes item ``i`` to uint8 pixels (normalisation happens batched on the
    device); corrupt images yield zeros and ``ok=False``."""

    def __init__(self, images: Sequence[Any], preprocessor: ImagePreprocessor) -> None:
        self.images = images
        self.pre = preprocessor

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[np.ndarray, bool, str]:
        try:
            return self.pre.to_uint8(self.images[i]), True, ""
        except ImageDecodeError as exc:
            shape = (self.pre.crop_h, self.pre.crop_w, 3)
            return np.zeros(shape, np.uint8), False, str(exc)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _collate(
    batch: list[tuple[np.ndarray, bool, str]],
) -> tuple[torch.Tensor, list[bool], list[str]]:
    return (
        torch.from_numpy(np.stack([b[0] for b in batch])),
        [b[1] for b in batch],
        [b[2] for b in batch],
    )


@dataclass
class EncodeResult:
    """Embeddings of the decodable images (rows aligned with ``ok``'s True entries)."""

    embeddings: np.ndarray
    ok: np.ndarray
    errors: dict[int, str]


def encode_images(
    model: Any,
    images: Sequence[Any],
    conditions: Sequence[str] | None = None,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: Callable[[int], None] | None = None,
    what: str = "images",
) -> EncodeResult:
    """Encode ``images`` (targets, or queries when ``conditions`` is given).

    For a :class:`PixelEncoder`, decoding runs in ``num_workers`` processes overlapped with the
    forward pass; undecodable images are skipped (``ok[i] = False``, reason in ``errors``).
    Any other :class:`~condsim.types.ConditionalEncoder` gets lists of decoded PIL images.
    Embeddings are checked for shape and NaN/inf (:class:`~condsim.errors.EmbeddingError`).
    """
    n = len(images)
    dim = model.meta.embedding_dim
    if conditions is not None and len(conditions) != n:
        raise ModelError(f"{n} images but {len(conditions)} conditions")
    out = np.empty((n, dim), np.float32)
    ok = np.ones(n, bool)
    errors: dict[int, str] = {}
    if isinstance(model, PixelEncoder):
        loader = DataLoader(
            _DecodeDataset(images, model.preprocessor),
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=_collate,
            worker_init_fn=_worker_init if num_workers else None,
            prefetch_factor=4 if num_workers else None,
            persistent_workers=False,
        )
        start = 0
        with torch.inference_mode():
            for pixels, oks, errs in loader:
                b = len(oks)
                keep = [i for i, flag in enumerate(oks) if flag]
                for i, flag in enumerate(oks):
                    if not flag:
                        ok[start + i] = False
                        errors[start + i] = errs[i]
                if keep:
                    px = model.preprocessor.normalize(
                        pixels[keep].to(model.device, non_blocking=True))
                    if conditions is None:
                        emb = model.encode_image_pixels(px)
                    else:
                        emb = model.encode_query_pixels(
                            px, [conditions[start + i] for i in keep]
                        )
                    rows = as_float32_rows(emb, len(keep), dim, what)
                    out[[start + i for i in keep]] = rows
                start += b
                if progress is not None:
                    progress(b)
    else:
        from condsim.data.images import decode_image

        for start in range(0, n, batch_size):
            chunk = list(range(start, min(n, start + batch_size)))
            decoded = []
            for i in chunk:
                try:
                    decoded.append((i, decode_image(images[i], f"{what}[{i}]")))
                except ImageDecodeError as exc:
                    ok[i] = False
                    errors[i] = str(exc)
            if decoded:
                idx = [i for i, _ in decoded]
                imgs = [im for _, im in decoded]
                with torch.inference_mode():
                    if conditions is None:
                        emb = model.encode_targets(imgs)
                    else:
                        emb = model.encode_queries(imgs, [conditions[i] for i in idx])
                out[idx] = as_float32_rows(emb, len(idx), dim, what)
            if progress is not None:
                progress(len(chunk))
    if errors:
        logger.warning("%s: %d of %d images could not be decoded (skipped)", what, len(errors), n)
    return EncodeResult(out[ok], ok, errors)
