"""A synthetic LRVS-Fashion test set in the official layout, learnable and conditional.

Files (see PROTOCOLS.md, "LRVS-Fashion"):

- ``products.parquet``: ``SIMPLE_IMG`` (the product alone, JPEG bytes), ``COMPLEX_IMG`` (the
  product "worn" in a scene, JPEG bytes), ``CATEGORY`` (one of the 10 official categories),
  ``blip2_caption1`` (the product's caption, e.g. ``"a red striped circle"``). Image columns
  are ``binary``, or with ``image_col_struct=True`` a ``struct<bytes: binary, path: string>``
  the way HF ``datasets`` writes them.
- ``distractors/part-XXXXX.parquet``: ``jpg`` (JPEG bytes), ``key``, ``url``, ``caption``,
  ``width``, ``height`` (plus img2dataset's ``status``, ``error_message``,
  ``original_width``, ``original_height``, ``sha256``). A distractor is one object alone,
  the same kind of picture as ``SIMPLE_IMG``.

Every JPEG has shortest side 256 and an aspect ratio up to 1.25 either way.

Semantics: each category owns a fixed cell of a 4 x 4 grid over the scene's centred square
(:func:`category_region`: Head at the top, Feet at the bottom, Bags on the right, ...). A
``COMPLEX_IMG`` shows the product in its category's region plus 2-3 other objects (each of
another colour) in other categories' regions, on a faint mannequin. Which object is the
target therefore depends on the condition: the category (where to look) or the caption (what
to look for).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

from condsim.io import atomic_write_parquet
from condsim.synthetic.world import (
    BACKGROUNDS,
    COLOURS,
    RGB,
    ObjectSpec,
    Region,
    draw_clutter,
    draw_items,
    jpeg_bytes,
    random_spec,
    render_alone,
    shortest_side_size,
)

logger = logging.getLogger(__name__)

CATEGORIES: tuple[str, ...] = (
    "Bags", "Feet", "Hands", "Head", "Lower Body",
    "Neck", "Outwear", "Upper Body", "Waist", "Whole Body",
)
"""The 10 official LRVS-F categories."""

# (column, row) of each category on a 4 x 4 grid over the body square; the cells line up
# with the patches of a ViT-*/16 at 64 px (and with 3.5 x 3.5 patches at 224 px)
_GRID = {
    "Outwear": (0, 0), "Head": (1, 0), "Neck": (2, 0), "Whole Body": (3, 0),
    "Hands": (0, 1), "Upper Body": (1, 1), "Waist": (2, 1),
    "Lower Body": (1, 2), "Bags": (3, 2),
    "Feet": (1, 3),
}
_CELLS, _MARGIN = 4, 0.01
_LAYOUT: dict[str, Region] = {
    cat: Region(c / _CELLS + _MARGIN, r / _CELLS + _MARGIN, (c + 1) / _CELLS - _MARGIN,
                (r + 1) / _CELLS - _MARGIN)
    for cat, (c, r) in _GRID.items()
}

DISTRACTOR_SCHEMA = pa.schema([
    ("jpg", pa.binary()), ("key", pa.string()), ("url", pa.string()),
    ("caption", pa.string()), ("width", pa.int64()), ("height", pa.int64()),
    ("status", pa.string()), ("error_message", pa.string()),
    ("original_width", pa.int64()), ("original_height", pa.int64()), ("sha256", pa.string()),
])
"""Columns of a distractor file (img2dataset's parquet output)."""

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
"""The image type HF ``datasets`` writes (``image_col_struct=True``)."""


def category_region(category: str) -> Region:
    """Where objects of ``category`` are worn, relative to the scene's *body square* (the
    largest centred square of the image, which a centre crop keeps).

    The square is a 4 x 4 grid; rows from the top: Outwear | Head | Neck | Whole Body;
    Hands | Upper Body | Waist | -; - | Lower Body | - | Bags; - | Feet | - | -. Regions do
    not overlap. :func:`category_box` gives the region in pixels of a given image.
    """
    if category not in _LAYOUT:
        raise ValueError(f"unknown LRVS-F category {category!r}; categories: "
                         f"{', '.join(CATEGORIES)}")
    return _LAYOUT[category]


def _body_square(size: tuple[int, int]) -> tuple[int, int, int]:
    """``(left, top, side)`` of the centred square of an image of ``size``."""
    w, h = size
    side = min(w, h)
    return (w - side) // 2, (h - side) // 2, side


def scene_region(category: str, size: tuple[int, int]) -> Region:
    """:func:`category_region` in coordinates relative to the whole ``size`` image."""
    r = category_region(category)
    left, top, side = _body_square(size)
    w, h = size
    return Region((left + r.left * side) / w, (top + r.top * side) / h,
                  (left + r.right * side) / w, (top + r.bottom * side) / h)


def category_box(category: str, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The pixel box ``(left, top, right, bottom)`` of ``category``'s region in a
    ``COMPLEX_IMG`` of ``size = (width, height)``."""
    return scene_region(category, size).pixels(size)


def _draw_mannequin(img: Image.Image, colour: RGB) -> None:
    """A faint figure in the body square, behind the objects."""
    x0, y0, side = _body_square(img.size)
    d = ImageDraw.Draw(img)

    def box(left: float, top: float, right: float, bottom: float) -> tuple[float, ...]:
        return (x0 + left * side, y0 + top * side, x0 + right * side, y0 + bottom * side)

    # centred on the grid's second column (Head, Upper Body, Lower Body, Feet)
    d.ellipse(box(0.30, 0.03, 0.45, 0.22), fill=colour)
    d.rectangle(box(0.22, 0.22, 0.53, 0.56), fill=colour)
    d.rectangle(box(0.24, 0.56, 0.36, 0.98), fill=colour)
    d.rectangle(box(0.39, 0.56, 0.51, 0.98), fill=colour)


def render_worn(
    items: list[tuple[ObjectSpec, str]], size: tuple[int, int], rng: np.random.Generator
) -> Image.Image:
    """A "worn" scene: each ``(spec, category)`` drawn in its category's region of the body
    square (:func:`scene_region`), over a faint mannequin and background clutter."""
    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    img = Image.new("RGB", size, background)
    shade = int(rng.integers(12, 22)) * (1 if sum(background) < 480 else -1)
    _draw_mannequin(img, tuple(int(np.clip(v + shade, 0, 255))  # type: ignore[arg-type]
                               for v in background))
    draw_clutter(img, rng, 6, background)
    draw_items(img, [(spec, scene_region(cat, size)) for spec, cat in items], rng)
    return img


def _other_objects(
    spec: ObjectSpec, category: str, rng: np.random.Generator
) -> list[tuple[ObjectSpec, str]]:
    """2-3 objects in other categories' regions, each of a colour unused in the scene."""
    others = [c for c in CATEGORIES if c != category]
    picks = rng.choice(len(others), size=int(rng.integers(2, 4)), replace=False)
    used = {spec.colour}
    out = []
    for i in sorted(int(p) for p in picks):
        free = [c for c in COLOURS if c not in used]
        other = random_spec(rng, colours=free)
        used.add(other.colour)
        out.append((other, others[i]))
    return out


def _image_column(values: list[bytes], struct: bool) -> pa.Array:
    if not struct:
        return pa.array(values, pa.binary())
    return pa.array([{"bytes": v, "path": None} for v in values], IMAGE_STRUCT)


def _corrupt(data: bytes, i: int) -> bytes:
    """Bytes no decoder accepts: a truncated JPEG (odd rows) or garbage with no JPEG header."""
    if i % 2:
        return data[: len(data) // 3]
    return b"not a jpeg\x00" + hashlib.sha256(data).digest() * 4


def _check_args(n_products: int, n_distractors: int, files: int, corrupt: int) -> None:
    if n_products < 1:
        raise ValueError(f"n_products must be >= 1, got {n_products}")
    if n_distractors < 0:
        raise ValueError(f"n_distractors must be >= 0, got {n_distractors}")
    if files < 1:
        raise ValueError(f"files must be >= 1, got {files}")
    if not 0 <= corrupt <= n_distractors:
        raise ValueError(f"corrupt_distractors must be in [0, n_distractors={n_distractors}], "
                         f"got {corrupt}")


def _products_table(n: int, rng: np.random.Generator, struct: bool) -> pa.Table:
    # every category equally often (up to n % 10), in a seeded order
    cats = [CATEGORIES[i % len(CATEGORIES)] for i in range(n)]
    cats = [cats[int(i)] for i in rng.permutation(n)]
    simple, complex_, caps = [], [], []
    for cat in cats:
        spec = random_spec(rng)
        items = [(spec, cat), *_other_objects(spec, cat, rng)]
        simple.append(jpeg_bytes(render_alone(spec, shortest_side_size(rng), rng)))
        complex_.append(jpeg_bytes(render_worn(items, shortest_side_size(rng), rng)))
        caps.append(spec.caption())
    return pa.table({
        "SIMPLE_IMG": _image_column(simple, struct),
        "COMPLEX_IMG": _image_column(complex_, struct),
        "CATEGORY": pa.array(cats, pa.string()),
        "blip2_caption1": pa.array(caps, pa.string()),
    })


def _distractor_table(rows: range, corrupt: set[int], rng: np.random.Generator) -> pa.Table:
    cols: dict[str, list] = {name: [] for name in DISTRACTOR_SCHEMA.names}
    for i in rows:
        spec = random_spec(rng)
        w, h = shortest_side_size(rng)
        data = jpeg_bytes(render_alone(spec, (w, h), rng))
        if i in corrupt:
            data = _corrupt(data, i)
        key = f"{i:09d}"
        for name, value in (
            ("jpg", data), ("key", key), ("url", f"https://example.invalid/{key}.jpg"),
            ("caption", spec.caption()), ("width", w), ("height", h), ("status", "success"),
            ("error_message", None), ("original_width", w), ("original_height", h),
            ("sha256", hashlib.sha256(data).hexdigest()),
        ):
            cols[name].append(value)
    return pa.table(cols, schema=DISTRACTOR_SCHEMA)


def write_lrvsf(
    out_dir: str | Path,
    *,
    n_products: int = 200,
    n_distractors: int = 1000,
    seed: int = 0,
    files: int = 4,
    corrupt_distractors: int = 0,
    image_col_struct: bool = False,
) -> Path:
    """Write a synthetic LRVS-F test set to ``out_dir`` and return ``out_dir``.

    ``n_distractors`` are split over exactly ``files`` files ``distractors/part-XXXXX.parquet``
    (stale ``part-*.parquet`` files of an earlier, larger write are removed).
    ``corrupt_distractors=k`` replaces ``k`` distractor images (seeded choice) by bytes that do
    not decode, for bad-input tests. Same arguments => byte-identical files.
    """
    _check_args(n_products, n_distractors, files, corrupt_distractors)
    out = Path(out_dir)
    products_rng, dist_rng, corrupt_rng = (np.random.default_rng([seed, 0x15F, k])
                                           for k in range(3))
    atomic_write_parquet(out / "products.parquet",
                         _products_table(n_products, products_rng, image_col_struct))

    corrupt = {int(i) for i in corrupt_rng.choice(n_distractors, size=corrupt_distractors,
                                                  replace=False)} if corrupt_distractors else set()
    bounds = np.linspace(0, n_distractors, files + 1).round().astype(int)
    written = set()
    for f in range(files):
        path = out / "distractors" / f"part-{f:05d}.parquet"
        table = _distractor_table(range(bounds[f], bounds[f + 1]), corrupt, dist_rng)
        atomic_write_parquet(path, table)
        written.add(path.name)
    for stale in sorted((out / "distractors").glob("part-*.parquet")):
        if stale.name not in written:
            logger.info("removing stale distractor file %s", stale)
            stale.unlink()
    logger.info("wrote synthetic LRVS-F set to %s: %d products, %d distractors in %d files "
                "(%d corrupt), seed %d", out, n_products, n_distractors, files,
                corrupt_distractors, seed)
    return out
