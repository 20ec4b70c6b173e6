"""Synthetic MIT-States: ``images/<adj> <noun>/*.jpg`` where the noun is drawn as a shape and
the adjective is its colour; includes folders the protocol skips (no space, ``adj``, and a
non-test noun)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from condsim.synthetic.world import ObjectSpec, jpeg_bytes, render_alone

NOUN_SHAPES = {"clock": "circle", "table": "square", "glass": "triangle", "window": "diamond"}
ADJS = ("red", "green", "blue", "yellow")


def write_mitstates(out_dir: str | Path, *, per_class: int = 3, seed: int = 0) -> Path:
    out = Path(out_dir)
    rng = np.random.default_rng([seed, 0x3175])
    classes = [(a, n) for n in NOUN_SHAPES for a in ADJS[: 2 + len(n) % 3]]
    classes += [("red", "elephant"), ("adj", "clock")]  # not a test noun / skipped adjective
    for adj, noun in classes:
        colour = adj if adj in ADJS else "black"
        for i in range(per_class):
            path = out / "images" / f"{adj} {noun}" / f"{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            spec = ObjectSpec(NOUN_SHAPES.get(noun, "star"), colour)
            path.write_bytes(jpeg_bytes(render_alone(spec, (96, 96), rng)))
    (out / "images" / "nospace").mkdir(parents=True, exist_ok=True)
    return out
