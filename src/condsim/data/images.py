"""Image decoding with clear errors: bytes / HF struct / path / PIL -> RGB PIL image."""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from condsim.errors import DataError


class ImageDecodeError(DataError):
    """An image could not be decoded (corrupt, truncated, not an image, or a decompression
    bomb: a header claiming more pixels than PIL's ``Image.MAX_IMAGE_PIXELS`` allows)."""


#: what PIL raises on bad image bytes: not an image, truncated or corrupt data (OSError,
#: SyntaxError, ValueError, struct.error, IndexError, EOFError from the format plugins), and
#: decompression bombs (``DecompressionBombError`` beyond 2x ``MAX_IMAGE_PIXELS``, and the
#: ``DecompressionBombWarning`` beyond 1x when warnings are escalated to errors). Every one is
#: counted like a corrupt image by the encoders, never a crash.
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error, IndexError,
    EOFError, Image.DecompressionBombError, Image.DecompressionBombWarning,
)


def decode_failure(what: str, exc: BaseException) -> ImageDecodeError:
    """The :class:`ImageDecodeError` of ``what`` (a file, or a file + row) failing with
    ``exc`` (one of :data:`DECODE_ERRORS`)."""
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return ImageDecodeError(f"{what}: refused as a decompression bomb ({exc})")
    return ImageDecodeError(f"{what}: cannot decode image ({type(exc).__name__}: {exc})")


def image_bytes(value: Any) -> bytes:
    """Raw encoded bytes from a parquet cell: ``bytes`` or an HF ``{bytes, path}`` struct."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, dict) and value.get("bytes") is not None:
        return bytes(value["bytes"])
    raise ImageDecodeError(f"expected image bytes or a {{bytes, path}} struct, got {type(value)}")


def decode_image(value: Any, what: str = "image") -> Image.Image:
    """Decode ``value`` (bytes, ``{bytes, path}`` dict, path or PIL image) to an RGB image.

    The whole file is decoded (``load``) so truncated JPEGs fail here, not later.
    Raises :class:`ImageDecodeError` naming ``what`` (for a path given as ``"image"``: the
    path) on any of :data:`DECODE_ERRORS`.
    """
    if isinstance(value, Image.Image):
        return value if value.mode == "RGB" else value.convert("RGB")
    if hasattr(value, "load_image"):  # lazy references (e.g. crops), loaded in the worker
        img = value.load_image()
        return img if img.mode == "RGB" else img.convert("RGB")
    if isinstance(value, (str, Path)) and what == "image":
        what = str(value)
    try:
        if isinstance(value, (str, Path)):
            img = Image.open(value)
        else:
            img = Image.open(io.BytesIO(image_bytes(value)))
        img.load()
        return img.convert("RGB") if img.mode != "RGB" else img
    except ImageDecodeError:
        raise
    except FileNotFoundError as exc:
        raise ImageDecodeError(f"{what}: file not found: {value}") from exc
    except DECODE_ERRORS as exc:
        raise decode_failure(what, exc) from exc
