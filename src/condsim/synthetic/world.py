"""A procedurally drawn, seeded world of objects with independent factors.

An object (:class:`ObjectSpec`) has a *shape* (:data:`SHAPES`), a named *colour*
(:data:`COLOURS`) and a *pattern* (:data:`PATTERNS`); its caption names the three factors
("a red striped circle", ``plain`` is not spoken). Pictures come in two kinds:

- :func:`render_alone`: one object centred on a plain light background (a product shot, a
  distractor, a gallery crop);
- :func:`render_scene`: several objects, each inside a :class:`Region` (a box in relative
  coordinates), on a coloured background with faint clutter.

Which object of a scene a query is "about" is decided by its condition (a region/category,
or a caption naming the factors), so the world is *conditional*: one scene has several right
answers depending on the condition, and a model can learn to tell them apart.

Everything is drawn with PIL + numpy (no torch) and is deterministic for a given
``numpy.random.Generator``: nothing here touches global random state. Rendering a 256 px
picture takes about a millisecond.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

RGB = tuple[int, int, int]

SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "diamond", "star", "cross", "heart", "moon",
)
"""Object shapes (nouns in captions; a "moon" is a crescent)."""

BASIC_SHAPES: tuple[str, ...] = SHAPES[:6]
"""The first six shapes (the world's original set; the CIRR/CIRCO writers keep their sizes)."""

COLOURS: dict[str, RGB] = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
    "yellow": (235, 205, 30), "purple": (140, 50, 180), "orange": (245, 130, 20),
    "black": (25, 25, 25), "white": (245, 245, 245),
}
"""Named object colours (adjectives in captions) and their RGB fill."""

PATTERNS: tuple[str, ...] = ("plain", "striped", "dotted", "checked")
"""Surface patterns; drawn in a darker (or, on dark colours, lighter) shade of the colour."""

BACKGROUNDS: tuple[RGB, ...] = ((200, 190, 170), (120, 140, 160), (90, 110, 80), (170, 150, 190))
"""Mid-tone scene backgrounds, far from every object colour."""


@dataclass(frozen=True)
class ObjectSpec:
    """One object: ``shape`` in :data:`SHAPES`, ``colour`` in :data:`COLOURS`, ``pattern`` in
    :data:`PATTERNS`."""

    shape: str
    colour: str
    pattern: str = "plain"

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; shapes: {', '.join(SHAPES)}")
        if self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}; colours: {', '.join(COLOURS)}")
        if self.pattern not in PATTERNS:
            raise ValueError(
                f"unknown pattern {self.pattern!r}; patterns: {', '.join(PATTERNS)}")

    def caption(self) -> str:
        """E.g. ``"a red striped circle"``, ``"an orange square"`` (``plain`` is not
        spoken)."""
        words = [self.colour] + ([] if self.pattern == "plain" else [self.pattern])
        article = "an" if words[0][0] in "aeiou" else "a"
        return " ".join([article, *words, self.shape])

    @property
    def rgb(self) -> RGB:
        """The RGB fill of :attr:`colour`."""
        return COLOURS[self.colour]


@dataclass(frozen=True)
class Region:
    """An axis-aligned box in relative coordinates (``0 <= left < right <= 1``, same for
    ``top``/``bottom``); an object drawn in a region stays inside it."""

    left: float
    top: float
    right: float
    bottom: float

    def __post_init__(self) -> None:
        if not (0.0 <= self.left < self.right <= 1.0 and 0.0 <= self.top < self.bottom <= 1.0):
            raise ValueError(f"invalid region {self}: need 0 <= left < right <= 1 and "
                             "0 <= top < bottom <= 1")

    @property
    def centre(self) -> tuple[float, float]:
        """Relative ``(x, y)`` centre."""
        return ((self.left + self.right) / 2, (self.top + self.bottom) / 2)

    def pixels(self, size: tuple[int, int]) -> tuple[int, int, int, int]:
        """The box in pixels ``(left, top, right, bottom)`` (right/bottom exclusive) for an
        image of ``size = (width, height)``."""
        w, h = size
        return (int(round(self.left * w)), int(round(self.top * h)),
                int(round(self.right * w)), int(round(self.bottom * h)))

    @classmethod
    def around(cls, x: float, y: float, half: float = 0.12) -> Region:
        """The square-ish region of half-size ``half`` centred at relative ``(x, y)``,
        clipped to the image."""
        return cls(max(0.0, x - half), max(0.0, y - half), min(1.0, x + half),
                   min(1.0, y + half))


def random_spec(
    rng: np.random.Generator,
    *,
    shapes: Sequence[str] = SHAPES,
    colours: Sequence[str] | None = None,
    patterns: Sequence[str] = PATTERNS,
) -> ObjectSpec:
    """A uniformly drawn object (optionally restricted to some shapes/colours/patterns)."""
    cols = list(COLOURS) if colours is None else list(colours)
    return ObjectSpec(
        shapes[int(rng.integers(len(shapes)))],
        cols[int(rng.integers(len(cols)))],
        patterns[int(rng.integers(len(patterns)))],
    )


def parse_caption(caption: str) -> ObjectSpec:
    """Inverse of :meth:`ObjectSpec.caption` (``"a red striped circle"`` -> the spec)."""
    words = caption.split()
    if len(words) == 3:
        words = [words[0], words[1], "plain", words[2]]
    if len(words) != 4 or words[0] not in ("a", "an"):
        raise ValueError(f"not an object caption: {caption!r} (expected 'a <colour> "
                         "[<pattern>] <shape>')")
    return ObjectSpec(words[3], words[1], words[2])


def all_specs(patterns: Sequence[str] = PATTERNS) -> list[ObjectSpec]:
    """Every (shape, colour, pattern) combination, in a fixed order."""
    return [ObjectSpec(s, c, p) for s in SHAPES for c in COLOURS for p in patterns]


# -- drawing ---------------------------------------------------------------------------------

def _star(cx: float, cy: float, r: float, points: int = 5, inner: float = 0.45
          ) -> list[tuple[float, float]]:
    pts = []
    for i in range(2 * points):
        rad = r if i % 2 == 0 else r * inner
        a = -math.pi / 2 + i * math.pi / points
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Vertices of a polygonal shape of "radius" ``r`` centred at ``(cx, cy)``."""
    if shape == "square":
        s = r * 0.88
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r * 0.85), (cx - r, cy + r * 0.85)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.8, cy), (cx, cy + r), (cx - r * 0.8, cy)]
    if shape == "star":
        return _star(cx, cy, r)
    if shape == "cross":
        w = r * 0.36
        return [(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w),
                (cx + r, cy + w), (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r),
                (cx - w, cy + w), (cx - r, cy + w), (cx - r, cy - w), (cx - w, cy - w)]
    raise ValueError(f"unknown polygonal shape {shape!r}")


def _shape_mask(shape: str, r: float, n: int) -> Image.Image:
    """An ``n x n`` mode-L mask (255 inside) of ``shape`` centred in the patch."""
    mask = Image.new("L", (n, n), 0)
    md = ImageDraw.Draw(mask)
    c = (n - 1) / 2
    if shape == "circle":
        md.ellipse((c - r, c - r, c + r, c + r), fill=255)
    elif shape == "heart":
        # two lobes and a point: circles at the top, a triangle below
        lr = r * 0.52
        for dx in (-0.48 * r, 0.48 * r):
            md.ellipse((c + dx - lr, c - 0.42 * r - lr, c + dx + lr, c - 0.42 * r + lr),
                       fill=255)
        md.polygon([(c - 0.97 * r, c - 0.28 * r), (c + 0.97 * r, c - 0.28 * r), (c, c + r)],
                   fill=255)
    elif shape == "moon":
        # a crescent: a disc minus a shifted disc
        md.ellipse((c - r, c - r, c + r, c + r), fill=255)
        cx, cy, cr = c + 0.6 * r, c - 0.15 * r, 0.75 * r
        md.ellipse((cx - cr, cy - cr, cx + cr, cy + cr), fill=0)
    else:
        md.polygon(_polygon(shape, c, c, r), fill=255)
    return mask


def pattern_rgb(colour: RGB) -> RGB:
    """The shade a pattern is drawn in: darker on light colours, lighter on dark ones."""
    lum = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    if lum < 70:
        return tuple(int(c + 0.55 * (255 - c)) for c in colour)  # type: ignore[return-value]
    return tuple(int(c * 0.45) for c in colour)  # type: ignore[return-value]


@lru_cache(maxsize=64)
def _pattern_mask(pattern: str, n: int, step: int) -> np.ndarray:
    """Boolean ``n x n`` array: True where the pattern shade goes."""
    yy, xx = np.mgrid[0:n, 0:n]
    if pattern == "striped":
        return (xx % step) < max(2, step // 2)
    if pattern == "dotted":
        half = step / 2
        return (xx % step - half) ** 2 + (yy % step - half) ** 2 < (0.3 * step) ** 2
    if pattern == "checked":
        return ((xx // step) + (yy // step)) % 2 == 0
    return np.zeros((n, n), bool)


def draw_object(img: Image.Image, spec: ObjectSpec, cx: float, cy: float, r: float) -> None:
    """Draw ``spec`` centred at ``(cx, cy)`` with radius ``r`` (pixels) onto ``img`` in place.

    Only a patch around the object is touched; parts outside ``img`` are clipped.
    """
    n = 2 * int(math.ceil(r)) + 3
    x0, y0 = int(round(cx - (n - 1) / 2)), int(round(cy - (n - 1) / 2))
    mask = _shape_mask(spec.shape, r, n)
    fill = np.empty((n, n, 3), np.uint8)
    fill[...] = spec.rgb
    if spec.pattern != "plain":
        # coarse enough to stay visible when a small object is downscaled
        fill[_pattern_mask(spec.pattern, n, max(4, int(r / 2)))] = pattern_rgb(spec.rgb)
    img.paste(Image.fromarray(fill, "RGB"), (x0, y0), mask)


def _jitter_rgb(base: RGB, rng: np.random.Generator, amount: int) -> RGB:
    return tuple(int(np.clip(v + d, 0, 255))  # type: ignore[return-value]
                 for v, d in zip(base, rng.integers(-amount, amount + 1, 3), strict=True))


def draw_clutter(img: Image.Image, rng: np.random.Generator, n: int, background: RGB) -> None:
    """Faint lines and blobs in shades of the background colour (texture that is never
    mistaken for an object: at most ~30 grey levels away, nearly the same hue)."""
    w, h = img.size
    d = ImageDraw.Draw(img)
    for _ in range(n):
        shade = int(rng.integers(-24, 25))
        col = _jitter_rgb(tuple(v + shade for v in background), rng, 6)  # type: ignore[arg-type]
        x, y = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        if rng.random() < 0.7:
            x2, y2 = x + float(rng.normal(0, w / 4)), y + float(rng.normal(0, h / 4))
            d.line((x, y, x2, y2), fill=col, width=int(rng.integers(1, 4)))
        else:
            s = float(rng.uniform(3, 12))
            d.ellipse((x - s, y - s, x + s, y + s), fill=col)


def render_alone(
    spec: ObjectSpec, size: tuple[int, int], rng: np.random.Generator
) -> Image.Image:
    """The object alone, centred (small random jitter and scale) on a plain light-grey
    background of ``size = (width, height)`` (grey, so that white objects show)."""
    w, h = size
    grey = 208 + int(rng.integers(-10, 11))
    img = Image.new("RGB", size, _jitter_rgb((grey, grey, grey), rng, 3))
    r = min(w, h) * (0.22 + 0.05 * rng.random())
    draw_object(img, spec, w / 2 + rng.normal(0, 4), h / 2 + rng.normal(0, 4), r)
    return img


def _as_region(where: Region | tuple[float, float]) -> Region:
    if isinstance(where, Region):
        return where
    if len(where) == 4:
        return Region(*where)  # type: ignore[arg-type]
    return Region.around(float(where[0]), float(where[1]))


def object_radius(region: Region, size: tuple[int, int]) -> float:
    """The radius an object gets in ``region`` (it fits with a margin for jitter)."""
    left, top, right, bottom = region.pixels(size)
    return 0.46 * min(right - left, bottom - top)


def render_scene(
    items: Sequence[tuple[ObjectSpec, Region | tuple[float, float]]],
    size: tuple[int, int],
    rng: np.random.Generator,
    background: RGB | None = None,
    *,
    clutter: int = 8,
) -> Image.Image:
    """Objects in regions on a coloured background with ``clutter`` faint strokes.

    ``items`` pairs each object with a :class:`Region` (or a relative ``(x, y)`` centre,
    meaning :meth:`Region.around`). Each object is as large as its region allows and stays
    inside it. ``background`` defaults to one of :data:`BACKGROUNDS` drawn from ``rng``.
    """
    if background is None:
        background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    img = Image.new("RGB", size, background)
    if clutter:
        draw_clutter(img, rng, clutter, background)
    draw_items(img, items, rng)
    return img


def draw_items(
    img: Image.Image,
    items: Sequence[tuple[ObjectSpec, Region | tuple[float, float]]],
    rng: np.random.Generator,
) -> None:
    """Draw each object as large as its region allows (:func:`object_radius`), centred in
    it with a small jitter, onto ``img`` in place."""
    w, h = img.size
    for spec, where in items:
        region = _as_region(where)
        r = object_radius(region, img.size)
        cx, cy = region.centre
        slack = 0.08 * r
        draw_object(img, spec, cx * w + rng.uniform(-slack, slack),
                    cy * h + rng.uniform(-slack, slack), r)


def jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    """Baseline JPEG bytes of ``img`` (deterministic: no EXIF, no optimisation pass)."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def shortest_side_size(rng: np.random.Generator, short: int = 256) -> tuple[int, int]:
    """A ``(width, height)`` with shortest side ``short`` and aspect ratio up to 1.25 either
    way (the other side is drawn from ``[short, 1.25 short]``)."""
    long = short + int(rng.integers(0, short // 4 + 1))
    return (short, long) if rng.random() < 0.5 else (long, short)
