"""GeneCIS crops: pixels of the official and centered crops in the file's own mode (RGB, L,
CMYK, palette), hand-computed boxes at the borders, and box validation helpers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from condsim.data.crops import (
    ImageRef,
    box_inside_fraction,
    box_overflow,
    crop_box,
)
from condsim.data.images import ImageDecodeError


def _rows(img: Image.Image) -> np.ndarray:
    """Per row: True where the whole row is black."""
    return (np.asarray(img.convert("RGB")) == 0).all(axis=(1, 2))


@pytest.mark.parametrize("mode,colour", [
    ("RGB", (255, 255, 255)), ("L", 255), ("CMYK", (0, 0, 0, 0)), ("P", 1),
])
def test_official_crop_pads_black_in_every_mode(tmp_path, mode, colour):
    img = Image.new(mode, (40, 20), colour)
    if mode == "P":
        img.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    path = tmp_path / f"1.{'jpg' if mode == 'CMYK' else 'png'}"
    img.save(path, quality=100) if mode == "CMYK" else img.save(path)
    # box (20, 10, 10, 4): left 13, top 7.2, right 30, bottom 14 -> PIL rounds to
    # (13, 7, 30, 14): 17 x 7, padded to 17 x 17 with the image at rows 5..11
    out = ImageRef(str(path), (20, 10, 10, 4)).load_image()
    assert out.mode == "RGB" and out.size == (17, 17)
    black = _rows(out)
    assert black[:5].all() and black[12:].all()
    assert (np.asarray(out)[5:12] > 200).all()  # the white image itself (JPEG: near white)


def test_centered_crop_pixels_at_the_top_left_border(tmp_path):
    arr = np.zeros((50, 80, 3), np.uint8)
    arr[:, :, 0] = np.arange(80)[None, :]
    arr[:, :, 1] = np.arange(50)[:, None]
    Image.fromarray(arr).save(tmp_path / "2.png")
    # centered: left = max(0, 2 - 3.5) = 0, top = max(0, 1 - 3.5) = 0, right = 2 + 10 + 3.5 =
    # 15.5, bottom = 1 + 10 + 3.5 = 14.5; PIL rounds half to even: (0, 0, 16, 14), 16 x 14,
    # padded to 16 x 16 at row offset (16 - 14) // 2 = 1
    assert crop_box((2, 1, 10, 10), (80, 50), "centered") == pytest.approx((0, 0, 15.5, 14.5))
    out = np.asarray(ImageRef(str(tmp_path / "2.png"), (2, 1, 10, 10), "centered").load_image())
    assert out.shape == (16, 16, 3)
    assert (out[:1] == 0).all() and (out[15:] == 0).all()
    assert out[1, 0, 0] == 0 and out[1, 0, 1] == 0 and out[1, 15, 0] == 15
    assert out[14, 0, 1] == 13
    # official at the same border: left 0, top 0, right 17, bottom 17 -> no padding needed
    off = np.asarray(ImageRef(str(tmp_path / "2.png"), (2, 1, 10, 10)).load_image())
    assert off.shape == (17, 17, 3) and off[16, 16, 0] == 16 and off[16, 16, 1] == 16


def test_bottom_right_border_clamps_both_modes(tmp_path):
    Image.new("RGB", (100, 60), (10, 20, 30)).save(tmp_path / "3.png")
    box = (90.0, 50.0, 10.0, 10.0)
    # official: left 83, top 43, right min(100, 100) = 100, bottom min(60, 60) = 60 -> 17 x 17
    assert crop_box(box, (100, 60)) == pytest.approx((83, 43, 100, 60))
    # centered: left 86.5, top 46.5, right 100, bottom 60 -> PIL rounds 86.5 -> 86, 46.5 -> 46
    assert crop_box(box, (100, 60), "centered") == pytest.approx((86.5, 46.5, 100, 60))
    assert ImageRef(str(tmp_path / "3.png"), box).load_image().size == (17, 17)
    assert ImageRef(str(tmp_path / "3.png"), box, "centered").load_image().size == (14, 14)


def test_box_helpers_and_outside_box(tmp_path):
    assert box_inside_fraction((0, 0, 10, 10), (20, 20)) == 1.0
    assert box_inside_fraction((15, 0, 10, 10), (20, 20)) == pytest.approx(0.5)
    assert box_inside_fraction((30, 30, 5, 5), (20, 20)) == 0.0
    assert box_overflow((15, 0, 10, 10), (20, 20)) == pytest.approx(5)
    assert box_overflow((-2, 0, 10, 10), (20, 20)) == pytest.approx(2)
    Image.new("RGB", (20, 20)).save(tmp_path / "4.png")
    with pytest.raises(ImageDecodeError, match="outside the 20x20 image"):
        ImageRef(str(tmp_path / "4.png"), (30, 30, 5, 5)).load_image()


@settings(max_examples=200, deadline=None)
@given(W=st.integers(1, 400), H=st.integers(1, 400), fx=st.floats(0, 0.99),
       fy=st.floats(0, 0.99), fw=st.floats(0.01, 1), fh=st.floats(0.01, 1),
       mode=st.sampled_from(["official", "centered"]))
def test_crop_box_properties(W, H, fx, fy, fw, fh, mode):
    """Both modes: the crop lies in the image, holds the (in-image part of the) box, and is at
    most 1.7 times the box per side; official never extends to the right of / below the box
    unless clamping at 0 pushed it."""
    x, y = fx * W, fy * H
    w, h = max(fw * (W - x), 1e-3), max(fh * (H - y), 1e-3)
    left, top, right, bottom = crop_box((x, y, w, h), (W, H), mode)
    eps = 1e-9
    assert 0 <= left <= x + eps and 0 <= top <= y + eps
    assert right <= W + eps and bottom <= H + eps
    assert right >= min(x + w, W) - eps and bottom >= min(y + h, H) - eps
    assert right - left <= 1.7 * w + eps and bottom - top <= 1.7 * h + eps
    if mode == "official" and x >= 0.7 * w:
        assert right == pytest.approx(min(W, x + w))
