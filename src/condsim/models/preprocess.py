"""PIL + numpy image preprocessing (no torchvision), picklable for worker processes.

The preprocessing is part of a model's identity: :attr:`ImagePreprocessor.id` enters the
embedding cache key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from condsim.data.images import decode_image

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ImagePreprocessor:
    """Resize the shortest side to ``resize`` (bicubic by default), centre-crop
    ``crop_h x crop_w``, scale to [0, 1], normalise ``(x - mean) / std``; output ``(3, H, W)``
    float32. ``resize=0`` resizes straight to the crop size (no aspect kept, as SigLIP does).
    ``pad_square >= 0`` first pads the image to a centred square with that grey level (the
    LRVS-F CondViT transform: white square padding, then a plain resize).
    """

    resize: int = 224
    crop_h: int = 224
    crop_w: int = 224
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    resample: int = int(Image.Resampling.BICUBIC)
    pad_square: int = -1
    #: where the centre crop starts: ``floor`` = ``(size - crop) // 2`` (transformers) or
    #: ``round`` = ``int(round((size - crop) / 2))``, half to even (torchvision, open_clip)
    crop_anchor: str = "floor"
    #: ``longest``: fit the whole image inside ``crop_h x crop_w`` keeping its aspect ratio
    #: (size ``round(side / max(h / crop_h, w / crop_w))``), then pad it centred to the crop
    #: size with grey level ``fill`` (open_clip's ``resize_mode="longest"``); ``resize`` unused
    fit: str = ""
    fill: int = 0

    @property
    def id(self) -> str:
        fields = asdict(self)
        fields["long_side"] = "trunc"  # v2: the long side truncated, as transformers does
        for name, default in (("pad_square", -1), ("crop_anchor", "floor"), ("fit", ""),
                              ("fill", 0)):
            if fields[name] == default:  # ids of the plain preprocessing stay as they were
                del fields[name]
        blob = json.dumps(fields, sort_keys=True).encode()
        return "pil-" + hashlib.blake2b(blob, digest_size=6).hexdigest()

    def to_pil(self, image: Any) -> Image.Image:
        """Decode (if needed), resize and crop; returns the RGB crop."""
        img = decode_image(image)
        if self.pad_square >= 0 and img.size[0] != img.size[1]:
            w, h = img.size
            side = max(w, h)
            canvas = Image.new("RGB", (side, side), (self.pad_square,) * 3)
            canvas.paste(img, ((side - w) // 2, (side - h) // 2))
            img = canvas
        if self.fit == "longest":
            return self._fit_longest(img)
        if self.resize <= 0:
            return img.resize((self.crop_w, self.crop_h), self.resample)
        w, h = img.size
        # the long side as transformers' and torchvision's shortest-edge resize compute it:
        # int(size * long / short), truncated (rounding moves the crop by a pixel)
        if w <= h:
            nw, nh = self.resize, int(self.resize * h / w)
        else:
            nw, nh = int(self.resize * w / h), self.resize
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), self.resample)
        if self.crop_anchor == "round":
            left, top = int(round((nw - self.crop_w) / 2)), int(round((nh - self.crop_h) / 2))
        else:
            left, top = (nw - self.crop_w) // 2, (nh - self.crop_h) // 2
        if left < 0 or top < 0:
            canvas = Image.new("RGB", (max(nw, self.crop_w), max(nh, self.crop_h)))
            canvas.paste(img, (max(0, -left), max(0, -top)))
            img, left, top = canvas, max(0, left), max(0, top)
        return img.crop((left, top, left + self.crop_w, top + self.crop_h))

    def _fit_longest(self, img: Image.Image) -> Image.Image:
        """open_clip's ``ResizeKeepRatio(longest=1)`` then ``CenterCropOrPad(fill)``."""
        w, h = img.size
        ratio = max(h / self.crop_h, w / self.crop_w)
        nh, nw = round(h / ratio), round(w / ratio)
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), self.resample)
        if (nw, nh) == (self.crop_w, self.crop_h):
            return img
        canvas = Image.new("RGB", (self.crop_w, self.crop_h), (self.fill,) * 3)
        canvas.paste(img, ((self.crop_w - nw) // 2, (self.crop_h - nh) // 2))
        return canvas

    def to_uint8(self, image: Any) -> np.ndarray:
        """The resized/cropped image as ``(H, W, 3)`` uint8 (what decode workers hand over:
        4x less data than float32)."""
        return np.asarray(self.to_pil(image), dtype=np.uint8)

    def _scale_offset(self) -> tuple[np.ndarray, np.ndarray]:
        scale = np.asarray([1.0 / (255.0 * s) for s in self.std], np.float32)
        offset = np.asarray([m / s for m, s in zip(self.mean, self.std, strict=True)],
                            np.float32)
        return scale, offset

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, 3)`` uint8 -> ``(B, 3, H, W)`` float32:
        ``x * (1 / (255 std)) - mean / std`` as two separate correctly rounded float32
        operations (no fused multiply-add), so every path gives identical bits. The uint8
        batch is made channels-first before the float work (2x faster on CPU than
        normalising an interleaved last axis of 3)."""
        scale, offset = (torch.from_numpy(a).to(batch.device).view(1, 3, 1, 1)
                         for a in self._scale_offset())
        x = batch.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)
        return x.mul_(scale).sub_(offset)

    def normalize_into(self, pixels: np.ndarray, out: np.ndarray) -> None:
        """Normalise one ``(H, W, 3)`` uint8 image into ``out`` (``(3, H, W)`` float32), with
        the same two float32 operations as :meth:`normalize` (numpy releases the GIL here, so
        decode threads can do it in parallel)."""
        scale, offset = self._scale_offset()
        np.multiply(pixels.transpose(2, 0, 1), scale[:, None, None], out=out)
        out -= offset[:, None, None]

    def __call__(self, image: Any) -> np.ndarray:
        """``(3, H, W)`` float32 normalised pixels of one image (same bits as
        :meth:`normalize`)."""
        out = np.empty((3, self.crop_h, self.crop_w), np.float32)
        self.normalize_into(self.to_uint8(image), out)
        return out

    @classmethod
    def from_hf_config(cls, cfg: dict[str, Any]) -> ImagePreprocessor:
        """Build from a transformers image-processor config (``preprocessor_config.json`` or
        the ``image_processor`` entry of ``processor_config.json``)."""
        size = cfg.get("size", 224)
        crop = cfg.get("crop_size", size) if cfg.get("do_center_crop", True) else size
        if isinstance(crop, int):
            crop_h = crop_w = crop
        else:
            crop_h = int(crop.get("height", crop.get("shortest_edge", 224)))
            crop_w = int(crop.get("width", crop.get("shortest_edge", 224)))
        if isinstance(size, int):
            resize = size
        elif "shortest_edge" in size:
            resize = int(size["shortest_edge"])
        else:  # {"height", "width"}: plain resize without keeping the aspect ratio
            resize, crop_h, crop_w = 0, int(size["height"]), int(size["width"])
        mean = tuple(cfg.get("image_mean", OPENAI_CLIP_MEAN)) if cfg.get(
            "do_normalize", True) else (0.0, 0.0, 0.0)
        std = tuple(cfg.get("image_std", OPENAI_CLIP_STD)) if cfg.get(
            "do_normalize", True) else (1.0, 1.0, 1.0)
        return cls(
            resize=resize, crop_h=crop_h, crop_w=crop_w,
            mean=mean, std=std,  # type: ignore[arg-type]
            resample=int(cfg.get("resample", int(Image.Resampling.BICUBIC))),
        )
