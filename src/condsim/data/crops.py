"""GeneCIS attribute-task crops of Visual Genome instances.

Official crop (the benchmark as published), for a box ``(x, y, w, h)`` in a ``W x H`` image
and dilation ``a = 0.7``::

    left   = max(0, x - a w)          top    = max(0, y - a h)
    right  = min(W, left + (1 + a) w) bottom = min(H, top + (1 + a) h)

so the box grows towards the left and top only (and shifts right/down when clamped at 0);
the crop is then padded to a black square, the shorter side centred at offset
``(long - short) // 2``. ``centered`` mode dilates symmetrically instead: ``left = x - a w / 2``,
``right = x + w + a w / 2`` (same for the vertical axis), clamped to the image, then padded the
same way. PIL rounds the float box when cropping, in both modes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from condsim.errors import DataError

DILATION = 0.7
CROP_MODES = ("official", "centered")


def crop_box(
    bbox: tuple[float, float, float, float], size: tuple[int, int], mode: str = "official",
    dilation: float = DILATION,
) -> tuple[float, float, float, float]:
    """``(left, top, right, bottom)`` of the crop of ``bbox`` (x, y, w, h) in an image of
    ``size`` (W, H); formulas in the module docstring."""
    x, y, w, h = bbox
    width, height = size
    if mode == "official":
        left, top = max(0.0, x - dilation * w), max(0.0, y - dilation * h)
        right = min(float(width), left + (1 + dilation) * w)
        bottom = min(float(height), top + (1 + dilation) * h)
    elif mode == "centered":
        left, top = max(0.0, x - dilation * w / 2), max(0.0, y - dilation * h / 2)
        right = min(float(width), x + w + dilation * w / 2)
        bottom = min(float(height), y + h + dilation * h / 2)
    else:
        raise DataError(f"crop mode must be one of {CROP_MODES}, got {mode!r}")
    return left, top, right, bottom


def pad_to_square(img: Image.Image) -> Image.Image:
    """Pad with black to a square; the shorter side is centred at ``(long - short) // 2``."""
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    fill: int | tuple[int, ...] = 0 if img.mode in ("L", "1", "I", "F") else (0,) * len(
        img.getbands())
    out = Image.new(img.mode, (side, side), fill)
    out.paste(img, (0, (w - h) // 2) if w > h else ((h - w) // 2, 0))
    return out


def check_bbox(bbox: object, where: str) -> tuple[float, float, float, float]:
    """Validate an ``instance_bbox`` ``[x, y, w, h]`` (numbers, ``w, h > 0``, ``x, y >= 0``)."""
    if (not isinstance(bbox, (list, tuple)) or len(bbox) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
        raise DataError(f"{where}: instance_bbox must be [x, y, w, h] numbers, got {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0 or x < 0 or y < 0:
        raise DataError(f"{where}: invalid instance_bbox {list(bbox)} (need x, y >= 0, w, h > 0)")
    return x, y, w, h


@dataclass(frozen=True)
class ImageRef:
    """A lazily loaded image file, optionally the GeneCIS crop of a box in it.

    Picklable and hashable: decoding happens in the encoder's worker processes
    (:func:`condsim.data.images.decode_image` calls :meth:`load_image`).
    """

    path: str
    bbox: tuple[float, float, float, float] | None = None
    crop_mode: str = "official"

    @property
    def key(self) -> str:
        box = "" if self.bbox is None else f"|{self.crop_mode}|" + ",".join(
            f"{v:g}" for v in self.bbox)
        return f"{Path(self.path).name}{box}"

    def load_image(self) -> Image.Image:
        from condsim.data.images import ImageDecodeError, decode_image

        img = decode_image(self.path, self.path)
        if self.bbox is None:
            return img
        x, y, w, h = self.bbox
        if x + w > img.width + 1 or y + h > img.height + 1:
            raise ImageDecodeError(
                f"{self.path}: instance_bbox {list(self.bbox)} extends outside the "
                f"{img.width}x{img.height} image"
            )
        return pad_to_square(img.crop(crop_box(self.bbox, img.size, self.crop_mode)))
