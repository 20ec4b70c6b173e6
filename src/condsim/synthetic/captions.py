"""A CC3M-like image-caption set: rendered scenes with "subject relation object" captions
("a red circle above a blue square") that spaCy + sng_parser turn into scene graphs, for the
parse -> mine -> train pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from condsim.results.run_result import atomic_write_text
from condsim.synthetic.world import COLOURS, SHAPES, ObjectSpec, jpeg_bytes, render_scene

RELATIONS = {"above": ((0.5, 0.25), (0.5, 0.75)), "below": ((0.5, 0.75), (0.5, 0.25)),
             "next to": ((0.28, 0.5), (0.72, 0.5)), "behind": ((0.62, 0.45), (0.4, 0.55))}


def write_captions(
    out_dir: str | Path, *, n: int = 300, seed: int = 0, bad_rows: bool = False
) -> Path:
    """Write ``images/<i>.jpg`` and ``captions.tsv`` (``caption \\t image``, no header, like
    CC3M's training TSV); returns the TSV path."""
    out = Path(out_dir)
    rng = np.random.default_rng([seed, 0xCA9])
    colours = list(COLOURS)
    lines = []
    for i in range(n):
        subj = ObjectSpec(SHAPES[int(rng.integers(len(SHAPES)))],
                          colours[int(rng.integers(len(colours)))])
        obj = ObjectSpec(SHAPES[int(rng.integers(len(SHAPES)))],
                         colours[int(rng.integers(len(colours)))])
        rel = list(RELATIONS)[int(rng.integers(len(RELATIONS)))]
        ps, po = RELATIONS[rel]
        img = render_scene([(subj, ps), (obj, po)], (256, 256), rng)
        path = out / "images" / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg_bytes(img))
        lines.append(f"{subj.caption()} {rel} {obj.caption()}\timages/{path.name}")
    if bad_rows:
        lines += ["\timages/missing.jpg", "word " * 5000 + "\timages/huge.jpg"]
    return atomic_write_text(out / "captions.tsv", "\n".join(lines) + "\n")
