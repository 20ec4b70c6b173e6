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

import math
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


# Fill of the official pad in the modes JPEG files decode to (PIL turns a 3-tuple into
# opaque black for RGBA and K=255 black for CMYK).
_NATIVE_FILL: dict[str, tuple[int, ...]] = {"L": (0,), "RGB": (0, 0, 0), "RGBA": (0, 0, 0),
                                            "CMYK": (0, 0, 0)}


def pad_to_square(img: Image.Image) -> Image.Image:
    """Pad to a square; the shorter side is centred at offset ``(long - short) // 2``.

    Padded in the image's own mode with the official fill (``(0,)`` for ``L``, ``(0, 0, 0)``
    for RGB, RGBA and CMYK: black in each). Other modes (palette, 16-bit, ...; the official
    code garbles palettes or fails on them, and JPEG files never have them) are converted to
    RGB first and padded black.
    """
    w, h = img.size
    if w == h:
        return img
    if img.mode not in _NATIVE_FILL:
        img = img.convert("RGB")
    side = max(w, h)
    out = Image.new(img.mode, (side, side), _NATIVE_FILL[img.mode])
    out.paste(img, (0, (w - h) // 2) if w > h else ((h - w) // 2, 0))
    return out


def check_bbox(bbox: object, where: str) -> tuple[float, float, float, float]:
    """Validate an ``instance_bbox`` ``[x, y, w, h]``: four finite numbers with ``w, h > 0``.
    Where the box sits relative to the image is checked by :func:`box_inside_fraction` once
    the image size is known."""
    if (not isinstance(bbox, (list, tuple)) or len(bbox) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
        raise DataError(f"{where}: instance_bbox must be [x, y, w, h] numbers, got {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        raise DataError(f"{where}: invalid instance_bbox {list(bbox)} (need finite numbers, "
                        "w, h > 0)")
    return x, y, w, h


def box_inside_fraction(bbox: tuple[float, float, float, float], size: tuple[int, int]) -> float:
    """Share of the box's area inside a ``W x H`` image:
    ``area(box ∩ [0, W] x [0, H]) / (w h)`` (0 when they do not overlap)."""
    x, y, w, h = bbox
    width, height = size
    iw = max(0.0, min(x + w, width) - max(x, 0.0))
    ih = max(0.0, min(y + h, height) - max(y, 0.0))
    return iw * ih / (w * h)


def box_overflow(bbox: tuple[float, float, float, float], size: tuple[int, int]) -> float:
    """Largest distance (pixels) by which the box extends past an image border (0 inside)."""
    x, y, w, h = bbox
    width, height = size
    return max(0.0, -x, -y, x + w - width, y + h - height)


def _open_native(path: str) -> Image.Image:
    """Decode ``path`` fully, keeping its mode (the official crop works in the file's mode)."""
    from condsim.data.images import DECODE_ERRORS, ImageDecodeError, decode_failure

    try:
        img = Image.open(path)
        img.load()
        return img
    except FileNotFoundError as exc:
        raise ImageDecodeError(f"{path}: file not found") from exc
    except DECODE_ERRORS as exc:
        raise decode_failure(path, exc) from exc


@dataclass(frozen=True)
class ImageRef:
    """A lazily loaded image file, optionally the GeneCIS crop of a box in it.

    Picklable and hashable: decoding happens in the encoder's decode workers
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
        """The whole image (RGB), or for a box: crop and pad in the file's own mode (as the
        official code does, so CMYK/palette/gray files get the official black), then RGB."""
        from condsim.data.images import ImageDecodeError, decode_image

        if self.bbox is None:
            return decode_image(self.path, self.path)
        img = _open_native(self.path)
        left, top, right, bottom = crop_box(self.bbox, img.size, self.crop_mode)
        if box_inside_fraction(self.bbox, img.size) <= 0 or right <= left or bottom <= top:
            raise ImageDecodeError(
                f"{self.path}: instance_bbox {list(self.bbox)} lies outside the "
                f"{img.width}x{img.height} image"
            )
        out = pad_to_square(img.crop((left, top, right, bottom)))
        return out if out.mode == "RGB" else out.convert("RGB")
