"""Synthetic CIRCO: ``unlabeled2017/%012d.jpg`` (3 renderings of every shape x colour) and
``annotations/{val,test}.json``; "in <colour>" queries have 3 ground truths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from condsim.io import atomic_write_text
from condsim.synthetic.world import BASIC_SHAPES, COLOURS, ObjectSpec, jpeg_bytes, render_alone

ASPECTS = ("cardinality", "addition", "negation", "direct_addressing", "compare_change",
           "comparative_statement", "statement_with_conjunction",
           "spatial_relations_background", "viewpoint")


def write_circo(out_dir: str | Path, *, n_queries: int = 30, seed: int = 0) -> Path:
    out = Path(out_dir)
    rng = np.random.default_rng([seed, 0xC12C0])
    by_spec: dict[ObjectSpec, list[int]] = {}
    image_id = 1
    for _copy in range(3):
        for s in BASIC_SHAPES:
            for c in COLOURS:
                spec = ObjectSpec(s, c)
                path = out / "unlabeled2017" / f"{image_id:012d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(jpeg_bytes(render_alone(spec, (96, 96), rng)))
                by_spec.setdefault(spec, []).append(image_id)
                image_id += 1
    colours = list(COLOURS)
    for split, n in (("val", n_queries), ("test", n_queries)):
        entries, seen = [], set()
        while len(entries) < n:
            spec = list(by_spec)[int(rng.integers(len(by_spec)))]
            new = colours[int(rng.integers(len(colours)))]
            if new == spec.colour or (spec, new) in seen:
                continue
            seen.add((spec, new))
            gt = by_spec[ObjectSpec(spec.shape, new)]
            e = {"id": len(entries), "reference_img_id": by_spec[spec][0],
                 "relative_caption": f"is {new} instead", "shared_concept": spec.shape,
                 "semantic_aspects": sorted(set(rng.choice(ASPECTS, 2).tolist()))}
            if split == "val":
                e["target_img_id"] = gt[0]
                e["gt_img_ids"] = list(gt)
            entries.append(e)
        atomic_write_text(out / "annotations" / f"{split}.json", json.dumps(entries))
    return out
