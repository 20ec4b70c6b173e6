"""Synthetic FashionIQ: ``images/<asin>.png``, ``image_splits/split.<cat>.val.json`` and
``captions/cap.<cat>.val.json`` with two relative captions per pair ("is <colour>",
"has the same shape")."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from condsim.io import atomic_write_text
from condsim.synthetic.world import COLOURS, ObjectSpec, render_alone

CAT_SHAPES = {"dress": ("triangle", "diamond"), "shirt": ("square", "cross"),
              "toptee": ("circle", "star")}


def write_fashioniq(out_dir: str | Path, *, n_pairs: int = 20, seed: int = 0) -> Path:
    out = Path(out_dir)
    rng = np.random.default_rng([seed, 0xF1])
    colours = list(COLOURS)
    for cat, shapes in CAT_SHAPES.items():
        asins = {}
        for s in shapes:
            for c in colours:
                asin = f"B{cat[:2].upper()}{len(asins):05d}"
                buf = io.BytesIO()
                render_alone(ObjectSpec(s, c), (96, 96), rng).save(buf, format="PNG")
                path = out / "images" / f"{asin}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(buf.getvalue())
                asins[(s, c)] = asin
        pairs, seen = [], set()
        while len(pairs) < n_pairs:
            s = shapes[int(rng.integers(len(shapes)))]
            c0, c1 = rng.choice(colours, 2, replace=False)
            if (s, c0, c1) in seen:
                continue
            seen.add((s, c0, c1))
            pairs.append({"candidate": asins[(s, str(c0))], "target": asins[(s, str(c1))],
                          "captions": [f"is {c1}", "has the same shape"]})
        atomic_write_text(out / "captions" / f"cap.{cat}.val.json", json.dumps(pairs))
        atomic_write_text(out / "image_splits" / f"split.{cat}.val.json",
                          json.dumps(list(asins.values())))
    return out
