"""Synthetic CIRR in the real layout: ``captions/cap.rc2.{val,test1}.json``,
``image_splits/split.rc2.{val,test1}.json`` and PNG images under ``img_raw/``. Queries ask for
the reference object in another colour ("make it red"); ``img_set`` holds the reference, the
target and 4 look-alikes (same shape, other colours)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from condsim.results.run_result import atomic_write_text
from condsim.synthetic.world import BASIC_SHAPES, COLOURS, ObjectSpec, render_alone


def write_cirr(out_dir: str | Path, *, n_queries: int = 40, seed: int = 0) -> Path:
    out = Path(out_dir)
    rng = np.random.default_rng([seed, 0xC122])
    colours = list(COLOURS)
    specs = [ObjectSpec(s, c) for s in BASIC_SHAPES for c in colours]
    for split, folder in (("val", "dev"), ("test1", "test1")):
        names = {}
        for i, spec in enumerate(specs):
            name = f"{folder}-{i}-0-img{i % 2}"
            rel = f"./{folder}/{i % 10}/{name}.png"
            buf = io.BytesIO()
            render_alone(spec, (96, 96), rng).save(buf, format="PNG")
            path = out / "img_raw" / rel[2:]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(buf.getvalue())
            names[name] = rel
        name_of = {spec: n for spec, n in zip(specs, names, strict=True)}
        caps, seen = [], set()
        while len(caps) < n_queries:
            ref = specs[int(rng.integers(len(specs)))]
            new = colours[int(rng.integers(len(colours)))]
            if new == ref.colour or (ref, new) in seen:
                continue
            seen.add((ref, new))
            tgt = ObjectSpec(ref.shape, new)
            others = [c for c in colours if c not in (ref.colour, new)]
            look = [ObjectSpec(ref.shape, c) for c in rng.choice(others, 4, replace=False)]
            members = [name_of[s] for s in [ref, tgt, *look]]
            order = rng.permutation(len(members))
            members = [members[j] for j in order]
            entry = {"pairid": len(caps) + (0 if split == "val" else 10_000),
                     "reference": name_of[ref], "caption": f"make it {new}",
                     "img_set": {"id": len(caps), "members": members,
                                 "reference_rank": members.index(name_of[ref]),
                                 "target_rank": members.index(name_of[tgt])}}
            if split == "val":
                entry["target_hard"] = name_of[tgt]
                entry["target_soft"] = {name_of[tgt]: 1.0}
            caps.append(entry)
        atomic_write_text(out / "captions" / f"cap.rc2.{split}.json", json.dumps(caps))
        atomic_write_text(out / "image_splits" / f"split.rc2.{split}.json", json.dumps(names))
    return out
