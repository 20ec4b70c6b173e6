"""Image decoding with clear errors: bytes / HF struct / path / PIL -> RGB PIL image."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from condsim.errors import DataError


class ImageDecodeError(DataError):
    """An image could not be decoded (corrupt, truncated or not an image)."""


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
    Raises :class:`ImageDecodeError` naming ``what``.
    """
    if isinstance(value, Image.Image):
        return value if value.mode == "RGB" else value.convert("RGB")
    if hasattr(value, "load_image"):  # lazy references (e.g. crops), loaded in the worker
        img = value.load_image()
        return img if img.mode == "RGB" else img.convert("RGB")
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
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"{what}: cannot decode image ({exc})") from exc
