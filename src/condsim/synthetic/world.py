"""A procedurally drawn, seeded world of objects with independent factors.

Objects have a shape, a colour and a pattern; scenes place several objects in named regions
on a coloured background. Which object a query is "about" is decided by its condition (a
region/category, or a caption naming the factors), so the world is *conditional*: the same
scene has several correct answers depending on the condition.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
COLOURS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
    "yellow": (235, 205, 30), "purple": (140, 50, 180), "orange": (245, 130, 20),
    "black": (25, 25, 25), "white": (245, 245, 245),
}
PATTERNS = ("plain", "striped", "dotted")
BACKGROUNDS = ((200, 190, 170), (120, 140, 160), (90, 110, 80), (170, 150, 190))


@dataclass(frozen=True)
class ObjectSpec:
    """One object: ``shape`` in :data:`SHAPES`, ``colour`` in :data:`COLOURS`, ``pattern``."""

    shape: str
    colour: str
    pattern: str = "plain"

    def caption(self) -> str:
        """E.g. ``"a red striped circle"`` (``plain`` is not spoken)."""
        pat = "" if self.pattern == "plain" else f"{self.pattern} "
        return f"a {self.colour} {pat}{self.shape}"


def random_spec(rng: np.random.Generator) -> ObjectSpec:
    return ObjectSpec(
        SHAPES[int(rng.integers(len(SHAPES)))],
        list(COLOURS)[int(rng.integers(len(COLOURS)))],
        PATTERNS[int(rng.integers(len(PATTERNS)))],
    )


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r * 0.85), (cx - r, cy + r * 0.85)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    if shape == "star":
        pts = []
        for i in range(10):
            rad = r if i % 2 == 0 else r * 0.45
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        return pts
    if shape == "cross":
        w = r * 0.38
        return [(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w),
                (cx + r, cy + w), (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r),
                (cx - w, cy + w), (cx - r, cy + w), (cx - r, cy - w), (cx - w, cy - w)]
    raise ValueError(f"unknown shape {shape!r}")


def draw_object(img: Image.Image, spec: ObjectSpec, cx: float, cy: float, r: float) -> None:
    """Draw ``spec`` centred at ``(cx, cy)`` with radius ``r`` onto ``img`` (in place)."""
    colour = COLOURS[spec.colour]
    mask = Image.new("L", img.size, 0)
    md = ImageDraw.Draw(mask)
    if spec.shape == "circle":
        md.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    else:
        md.polygon(_polygon(spec.shape, cx, cy, r), fill=255)
    fill = Image.new("RGB", img.size, colour)
    if spec.pattern != "plain":
        fd = ImageDraw.Draw(fill)
        dark = tuple(int(c * 0.45) for c in colour)
        step = max(4, int(r / 3))
        if spec.pattern == "striped":
            for x in range(int(cx - r), int(cx + r) + 1, step):
                fd.rectangle((x, cy - r, x + step // 2 - 1, cy + r), fill=dark)
        else:
            for x in range(int(cx - r), int(cx + r) + 1, step):
                for y in range(int(cy - r), int(cy + r) + 1, step):
                    fd.ellipse((x, y, x + step // 3 + 1, y + step // 3 + 1), fill=dark)
    img.paste(fill, (0, 0), mask)


def render_alone(
    spec: ObjectSpec, size: tuple[int, int], rng: np.random.Generator
) -> Image.Image:
    """The object alone, centred (small random jitter) on a light background."""
    w, h = size
    bg = tuple(int(v) for v in 235 + rng.integers(-12, 12, 3))
    img = Image.new("RGB", size, bg)  # type: ignore[arg-type]
    r = min(w, h) * (0.30 + 0.05 * rng.random())
    draw_object(img, spec, w / 2 + rng.normal(0, 4), h / 2 + rng.normal(0, 4), r)
    return img


def render_scene(
    items: list[tuple[ObjectSpec, tuple[float, float]]],
    size: tuple[int, int],
    rng: np.random.Generator,
    background: tuple[int, int, int] | None = None,
) -> Image.Image:
    """Objects at relative positions ``(x, y)`` in [0, 1] on a coloured background."""
    w, h = size
    if background is None:
        background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    img = Image.new("RGB", size, background)
    r = min(w, h) * 0.11
    for spec, (x, y) in items:
        draw_object(img, spec, x * w + rng.normal(0, 2), y * h + rng.normal(0, 2), r)
    return img


def jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def shortest_side_size(rng: np.random.Generator, short: int = 256) -> tuple[int, int]:
    """A (w, h) with shortest side ``short`` and aspect ratio up to 1.25 either way."""
    long = short + int(rng.integers(0, short // 4 + 1))
    return (short, long) if rng.random() < 0.5 else (long, short)
