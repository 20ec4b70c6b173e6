"""Synthetic CIRR in the real layout: ``captions/cap.rc2.{val,test1,train}.json``,
``image_splits/split.rc2.{val,test1,train}.json`` and PNG images under ``img_raw/``. Queries
ask for the reference object in another colour ("make it red"); ``img_set`` holds the
reference, the target and 4 look-alikes (same shape, other colours). The train split (its
own renders of the same objects) is for ``condsim train combiner --cirr-root``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from condsim.io import atomic_write_text
from condsim.synthetic.world import BASIC_SHAPES, COLOURS, ObjectSpec, render_alone


def write_cirr(out_dir: str | Path, *, n_queries: int = 40, n_train: int = 200,
               seed: int = 0) -> Path:
    """``n_queries`` val and test1 queries and ``n_train`` train queries (each at most the 336
    distinct (object, new colour) pairs). Same arguments => byte-identical files; val and
    test1 do not depend on ``n_train``."""
    out = Path(out_dir)
    rng = np.random.default_rng([seed, 0xC122])
    colours = list(COLOURS)
    specs = [ObjectSpec(s, c) for s in BASIC_SHAPES for c in colours]
    limit = len(specs) * (len(colours) - 1)
    if not (0 < n_queries <= limit and 0 <= n_train <= limit):
        raise ValueError(f"synthetic CIRR holds 1..{limit} queries per split")
    for split, folder, count in (("val", "dev", n_queries), ("test1", "test1", n_queries),
                                 ("train", "train", n_train)):
        if count == 0:
            continue
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
        while len(caps) < count:
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
            entry = {"pairid": len(caps) + {"val": 0, "test1": 10_000, "train": 20_000}[split],
                     "reference": name_of[ref], "caption": f"make it {new}",
                     "img_set": {"id": len(caps), "members": members,
                                 "reference_rank": members.index(name_of[ref]),
                                 "target_rank": members.index(name_of[tgt])}}
            if split != "test1":
                entry["target_hard"] = name_of[tgt]
                entry["target_soft"] = {name_of[tgt]: 1.0}
            caps.append(entry)
        atomic_write_text(out / "captions" / f"cap.rc2.{split}.json", json.dumps(caps))
        atomic_write_text(out / "image_splits" / f"split.rc2.{split}.json", json.dumps(names))
    return out
