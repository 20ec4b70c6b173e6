"""Synthetic LRVS-Fashion test set in the official layout.

``products.parquet`` (``SIMPLE_IMG``, ``COMPLEX_IMG``, ``CATEGORY``, ``blip2_caption1``) and
``distractors/part-*.parquet`` (``jpg``, ``key``, ``url``, ``caption``, ``width``,
``height``), JPEGs with shortest side 256. Each category owns a region of the "worn" scene
(Head at the top, Feet at the bottom, ...); a query scene shows the product in its category's
region plus objects in other regions, so the right target depends on the condition.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from condsim.synthetic.world import (
    jpeg_bytes,
    random_spec,
    render_alone,
    render_scene,
    shortest_side_size,
)

CATEGORIES = (
    "Bags", "Feet", "Hands", "Head", "Lower Body",
    "Neck", "Outwear", "Upper Body", "Waist", "Whole Body",
)
_REGIONS = {
    "Head": (0.5, 0.12), "Neck": (0.5, 0.3), "Upper Body": (0.5, 0.45),
    "Outwear": (0.22, 0.4), "Hands": (0.82, 0.55), "Waist": (0.5, 0.62),
    "Lower Body": (0.5, 0.76), "Feet": (0.5, 0.9), "Bags": (0.16, 0.72),
    "Whole Body": (0.84, 0.2),
}


def category_region(category: str) -> tuple[float, float]:
    """Relative (x, y) centre of ``category``'s region in a worn scene."""
    return _REGIONS[category]


def _write_parquet(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _image_column(values: list[bytes], struct: bool) -> pa.Array:
    if not struct:
        return pa.array(values, pa.binary())
    return pa.array([{"bytes": v, "path": None} for v in values],
                    pa.struct([("bytes", pa.binary()), ("path", pa.string())]))


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
    """Write the synthetic set to ``out_dir``; deterministic for ``seed``."""
    out = Path(out_dir)
    rng = np.random.default_rng([seed, 0x15F])
    simple, complex_, cats, caps = [], [], [], []
    for _ in range(n_products):
        cat = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
        spec = random_spec(rng)
        others = [c for c in CATEGORIES if c != cat]
        picks = rng.choice(len(others), size=int(rng.integers(2, 4)), replace=False)
        items = [(spec, category_region(cat))]
        items += [(random_spec(rng), category_region(others[int(i)])) for i in picks]
        simple.append(jpeg_bytes(render_alone(spec, shortest_side_size(rng), rng)))
        complex_.append(jpeg_bytes(render_scene(items, shortest_side_size(rng), rng)))
        cats.append(cat)
        caps.append(f"{spec.caption()} worn as {cat.lower()}")
    _write_parquet(pa.table({
        "SIMPLE_IMG": _image_column(simple, image_col_struct),
        "COMPLEX_IMG": _image_column(complex_, image_col_struct),
        "CATEGORY": pa.array(cats, pa.string()),
        "blip2_caption1": pa.array(caps, pa.string()),
    }), out / "products.parquet")

    corrupt = set(rng.choice(n_distractors, size=min(corrupt_distractors, n_distractors),
                             replace=False).tolist()) if corrupt_distractors else set()
    per_file = max(1, -(-n_distractors // max(files, 1)))
    for f, start in enumerate(range(0, n_distractors, per_file)):
        rows = range(start, min(n_distractors, start + per_file))
        jpgs, keys, captions, widths, heights = [], [], [], [], []
        for i in rows:
            spec = random_spec(rng)
            size = shortest_side_size(rng)
            data = jpeg_bytes(render_alone(spec, size, rng))
            if i in corrupt:
                data = data[: len(data) // 3] if i % 2 else b"not a jpeg" + data[:50]
            jpgs.append(data)
            keys.append(f"{i:09d}")
            captions.append(spec.caption())
            widths.append(size[0])
            heights.append(size[1])
        _write_parquet(pa.table({
            "jpg": pa.array(jpgs, pa.binary()),
            "key": keys,
            "url": [f"https://example.invalid/{k}.jpg" for k in keys],
            "caption": captions,
            "width": pa.array(widths, pa.int64()),
            "height": pa.array(heights, pa.int64()),
        }), out / "distractors" / f"part-{f:05d}.parquet")
    return out
