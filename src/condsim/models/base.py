"""Base class for pixel-level encoders and the overlapped decode/encode pipeline.

A :class:`PixelEncoder` splits encoding into a picklable CPU step (``preprocessor``: bytes ->
``(H, W, 3)`` uint8, normalised later in batches on the device) and a tensor step on the
device (``encode_image_pixels`` / ``encode_query_pixels``). Decoding overlaps the model's
forward pass, in a pool of threads (default: Pillow releases the GIL while it decodes JPEG/PNG
and resizes, so threads scale without pickling pixels between processes) or in DataLoader
worker processes (``worker_type="process"``, for image sources whose decoding holds the GIL).
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
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


PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` is bf16 autocast on a CUDA device that supports it (fp16 on older GPUs) and
    fp32 elsewhere; ``fp16`` is only accepted on CUDA."""
    if precision not in PRECISIONS:
        raise ModelError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise ModelError("fp16 autocast needs a CUDA device; use bf16 or fp32 on CPU")
    return precision


class PixelEncoder(ABC):
    """A :class:`~condsim.types.ConditionalEncoder` with a separable preprocessing step.

    Forward passes run under ``torch.inference_mode`` and, after :meth:`set_precision`, under
    bf16/fp16 autocast with channels-last inputs (the default on CUDA: ``precision="auto"``).
    """

    meta: ModelMeta
    preprocessor: ImagePreprocessor
    device: torch.device
    precision: str = "fp32"
    channels_last: bool = False

    def set_precision(self, precision: str = "auto", channels_last: bool | None = None) -> None:
        """Choose the forward pass's precision (see :func:`resolve_precision`) and memory
        format (``channels_last=None``: on CUDA). Updates ``meta.precision`` (cache identity)."""
        from dataclasses import replace

        self.precision = resolve_precision(precision, self.device)
        self.channels_last = self.device.type == "cuda" if channels_last is None else \
            channels_last
        for value in vars(self).values():
            if isinstance(value, torch.nn.Module) and self.channels_last:
                value.to(memory_format=torch.channels_last)
            elif isinstance(value, PixelEncoder):  # a wrapped backbone (Combiner)
                value.set_precision(precision, channels_last)
        self.meta = replace(self.meta, precision=self.precision)

    def forward_pixels(self, pixels: torch.Tensor,
                       conditions: Sequence[str] | None = None) -> torch.Tensor:
        """Target (``conditions=None``) or query embeddings of normalised pixels on the device,
        in this encoder's precision and memory format; returns float32."""
        if self.channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            if conditions is None:
                emb = self.encode_image_pixels(pixels)
            else:
                emb = self.encode_query_pixels(pixels, conditions)
        return emb.float()

    def autocast(self) -> torch.autocast:
        """The autocast context of this encoder's precision (disabled for fp32)."""
        dtype = _AUTOCAST_DTYPES.get(self.precision)
        return torch.autocast(self.device.type, dtype=dtype or torch.float32,
                              enabled=dtype is not None)

    #: True when a query embedding is a function of the *target* embedding of the same image
    #: and the condition (:meth:`compose_queries`): the embedding cache then builds queries from
    #: cached target embeddings, so the image tower runs once per unique image, whether the
    #: image is a gallery item, a reference, or the reference of many queries.
    composes_from_targets: bool = False

    def compose_queries(self, target_emb: torch.Tensor, conditions: Sequence[str]
                        ) -> torch.Tensor:
        """Query embeddings ``(B, D)`` float32 on the CPU from the target embeddings ``(B, D)``
        of the query images and their conditions (only when :attr:`composes_from_targets`)."""
        raise NotImplementedError(f"{type(self).__name__} does not compose queries")

    #: Non-empty when :meth:`compose_queries` takes the model's *compose inputs* rather than
    #: its target embeddings: ``x = encode_compose_input_pixels(pixels)`` (e.g. the CLIP image
    #: feature before normalisation, which textual-inversion mapping networks take), with the
    #: target embedding a function of it, ``t = target_from_compose_input(x)``. The cache keeps
    #: ``x`` next to the targets under keys derived from the image keys with this tag
    #: (:func:`condsim.cache.store.derived_keys`) and writes both from one image-tower pass.
    compose_input_tag: str = ""

    def encode_compose_input_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Compose inputs ``(B, D)`` of preprocessed images (with :attr:`compose_input_tag`)."""
        raise NotImplementedError(f"{type(self).__name__} has no compose inputs")

    def target_from_compose_input(self, inputs: torch.Tensor) -> torch.Tensor:
        """Target embeddings ``(B, D)`` float32 on the CPU from compose inputs ``(B, D)``."""
        raise NotImplementedError(f"{type(self).__name__} has no compose inputs")

    @abstractmethod
    def encode_image_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Target embeddings of preprocessed images ``(B, 3, H, W)`` -> ``(B, D)``."""

    @abstractmethod
    def encode_query_pixels(
        self, pixels: torch.Tensor, conditions: Sequence[str]
    ) -> torch.Tensor:
        """Query embeddings of preprocessed images with their conditions -> ``(B, D)``."""

    def _pixels(self, images: Sequence[ImageLike]) -> torch.Tensor:
        arr = np.stack([self.preprocessor(im) for im in images])
        return torch.from_numpy(arr)

    @torch.inference_mode()
    def encode_targets(self, images: Sequence[ImageLike]) -> torch.Tensor:
        if len(images) == 0:
            return torch.zeros((0, self.meta.embedding_dim))
        return self.forward_pixels(self._pixels(images).to(self.device)).cpu()

    @torch.inference_mode()
    def encode_queries(
        self, images: Sequence[ImageLike], conditions: Sequence[str]
    ) -> torch.Tensor:
        if len(images) != len(conditions):
            raise ModelError(f"{len(images)} images but {len(conditions)} conditions")
        if len(images) == 0:
            return torch.zeros((0, self.meta.embedding_dim))
        pixels = self._pixels(images).to(self.device)
        return self.forward_pixels(pixels, list(conditions)).cpu()


class ComposeInputView(PixelEncoder):
    """``model`` seen as an encoder whose "targets" are its compose inputs
    (:attr:`PixelEncoder.compose_input_tag`); shares its weights, device, precision and
    cache space."""

    def __init__(self, model: PixelEncoder) -> None:
        self.model = model
        self.meta = model.meta
        self.preprocessor = model.preprocessor
        self.device = model.device
        self.precision = model.precision
        self.channels_last = model.channels_last

    def encode_image_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_compose_input_pixels(pixels)

    def encode_query_pixels(self, pixels: torch.Tensor, conditions: Sequence[str]
                            ) -> torch.Tensor:
        raise NotImplementedError("a compose-input view encodes images only")


def encode_texts_once(encode_texts: Callable[[Sequence[str]], torch.Tensor],
                      texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """``encode_texts(texts)`` with every distinct text encoded once, in batches (conditions
    repeat: a benchmark has far fewer distinct conditions than queries)."""
    distinct = list(dict.fromkeys(texts))
    feats = torch.cat([encode_texts(distinct[i:i + batch_size])
                       for i in range(0, len(distinct), batch_size)])
    where = {t: i for i, t in enumerate(distinct)}
    return feats[torch.tensor([where[t] for t in texts], device=feats.device)]


def require_condition_kind(model: Any, kind: str, benchmark: str) -> None:
    """Fail before any encoding when ``benchmark`` conditions queries with ``kind``
    (``category`` or ``text``) and ``model`` declares it cannot take them. A model that takes
    free text also takes category names (they are text); a model that declares no
    ``meta.conditions`` (a user's wrapper) is not checked."""
    declared = getattr(getattr(model, "meta", None), "conditions", None)
    if declared is None or kind in declared or (kind == "category" and "text" in declared):
        return
    name = getattr(model.meta, "name", type(model).__name__)
    raise ModelError(
        f"{benchmark} conditions its queries with {kind} but model {name} only takes "
        f"{' or '.join(declared) or 'no'} conditions; use a model that takes {kind} conditions "
        "(e.g. a CLIP-style hf:/open_clip: model or a text-conditioned CondViT)"
    )


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


Batch = tuple[torch.Tensor, list[bool], list[str]]


def available_cores() -> int:
    """CPU cores this process may run on."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextmanager
def forward_threads(device: torch.device, decode_workers: int) -> Iterator[None]:
    """Leave the cores to the decode workers: on a CPU device, torch's intra-op threads are
    capped at ``max(1, cores - decode_workers)`` while the pipeline runs (restored after).
    Oversubscribed OpenMP threads spin while the decoders wait for a core; on 2 cores with 2
    decode threads this cap takes the tiny CLIP pipeline from ~1.0x to ~1.7x the naive loop
    (``benchmarks/encode_throughput.py``)."""
    before = torch.get_num_threads()
    if device.type == "cpu" and decode_workers > 0:
        torch.set_num_threads(max(1, min(before, available_cores() - decode_workers)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _thread_batches(images: Sequence[Any], pre: ImagePreprocessor, batch_size: int,
                    workers: int, prefetch: int = 3, normalized: bool = False
                    ) -> Iterator[Batch]:
    """Batches of ``(B, H, W, 3)`` uint8 pixels in order (``normalized``: ``(B, 3, H, W)``
    float32 pixels, normalised by the decode threads), decoded by ``workers`` threads up to
    ``prefetch`` batches ahead of the consumer (``workers=0``: in the calling thread).
    Each batch is split into ``2 * workers`` chunks that decode straight into the batch array.
    Undecodable images give zero pixels and ``ok=False``; any other exception propagates."""
    n = len(images)

    def decode(buf: np.ndarray, oks: list[bool], errs: list[str], lo: int, hi: int,
               base: int) -> None:
        for i in range(lo, hi):
            try:
                if normalized:
                    pre.normalize_into(pre.to_uint8(images[i]), buf[i - base])
                else:
                    buf[i - base] = pre.to_uint8(images[i])
            except ImageDecodeError as exc:
                buf[i - base] = 0
                oks[i - base] = False
                errs[i - base] = str(exc)

    def new_batch(s: int) -> tuple[np.ndarray, list[bool], list[str]]:
        e = min(n, s + batch_size)
        shape = (e - s, 3, pre.crop_h, pre.crop_w) if normalized else (
            e - s, pre.crop_h, pre.crop_w, 3)
        return np.empty(shape, np.float32 if normalized else np.uint8), [True] * (e - s), \
            [""] * (e - s)

    if workers <= 0:
        for s in range(0, n, batch_size):
            buf, oks, errs = new_batch(s)
            decode(buf, oks, errs, s, s + len(oks), s)
            yield torch.from_numpy(buf), oks, errs
        return
    ex = ThreadPoolExecutor(workers, thread_name_prefix="condsim-decode")
    pending: deque[tuple[np.ndarray, list[bool], list[str], list[Future]]] = deque()
    starts = iter(range(0, n, batch_size))

    def submit(s: int) -> None:
        buf, oks, errs = new_batch(s)
        step = max(1, math.ceil(len(oks) / (2 * workers)))
        futs = [ex.submit(decode, buf, oks, errs, lo, min(s + len(oks), lo + step), s)
                for lo in range(s, s + len(oks), step)]
        pending.append((buf, oks, errs, futs))

    try:
        for _ in range(prefetch):
            s = next(starts, None)
            if s is not None:
                submit(s)
        while pending:
            buf, oks, errs, futs = pending.popleft()
            for f in futs:
                f.result()
            s = next(starts, None)
            if s is not None:
                submit(s)
            yield torch.from_numpy(buf), oks, errs
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def _process_batches(images: Sequence[Any], pre: ImagePreprocessor, batch_size: int,
                     workers: int) -> Iterator[Batch]:
    """The same batches from DataLoader worker processes."""
    yield from DataLoader(
        _DecodeDataset(images, pre),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
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
    worker_type: str = "thread",
) -> EncodeResult:
    """Encode ``images`` (targets, or queries when ``conditions`` is given).

    For a :class:`PixelEncoder`, decoding runs in ``num_workers`` threads (``worker_type=
    "thread"``) or processes (``"process"``) overlapped with the forward pass; undecodable
    images are skipped (``ok[i] = False``, reason in ``errors``).
    Any other :class:`~condsim.types.ConditionalEncoder` gets lists of decoded PIL images.
    Embeddings are checked for shape and NaN/inf (:class:`~condsim.errors.EmbeddingError`).
    """
    n = len(images)
    dim = model.meta.embedding_dim
    if conditions is not None and len(conditions) != n:
        raise ModelError(f"{n} images but {len(conditions)} conditions")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        from condsim.errors import InvalidArgumentError

        raise InvalidArgumentError(f"{what}: batch_size must be an integer >= 1, got "
                                   f"{batch_size!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        from condsim.errors import InvalidArgumentError

        raise InvalidArgumentError(f"{what}: num_workers must be an integer >= 0, got "
                                   f"{num_workers!r}")
    out = np.empty((n, dim), np.float32)
    ok = np.ones(n, bool)
    errors: dict[int, str] = {}
    if worker_type not in ("thread", "process"):
        raise ModelError(f"worker_type must be 'thread' or 'process', got {worker_type!r}")
    if isinstance(model, PixelEncoder):
        if worker_type == "thread":
            # on a CPU device the decode threads normalise too (in parallel, GIL released);
            # an accelerator gets 4x smaller uint8 batches and normalises them itself
            loader = _thread_batches(images, model.preprocessor, batch_size, num_workers,
                                     normalized=model.device.type == "cpu")
        else:
            loader = _process_batches(images, model.preprocessor, batch_size, num_workers)
        start = 0
        with torch.inference_mode(), forward_threads(model.device, num_workers):
            for pixels, oks, errs in loader:
                b = len(oks)
                keep = [i for i, flag in enumerate(oks) if flag]
                for i, flag in enumerate(oks):
                    if not flag:
                        ok[start + i] = False
                        errors[start + i] = errs[i]
                if keep:
                    sel = pixels if len(keep) == b else pixels[keep]
                    px = sel if sel.dtype == torch.float32 else model.preprocessor.normalize(
                        sel.to(model.device, non_blocking=True))
                    emb = model.forward_pixels(
                        px, None if conditions is None else [conditions[start + i] for i in keep])
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
