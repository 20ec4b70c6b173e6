"""Synthetic GeneCIS set in the real layout: COCO-style scenes, VG-style images with boxes,
and the four task JSON files. Learnable: the condition decides the right candidate.

- ``focus_object``: condition = a shape; the target scene contains it, distractors do not.
- ``change_object``: condition = a shape to add; the target holds it *and* an object of the
  reference; distractors hold only one of the two.
- ``focus_attribute``: condition = a colour; the target crop has the reference's colour (other
  shape); distractors have the reference's shape in other colours.
- ``change_attribute``: condition = a new colour; the target is the reference's shape in that
  colour; distractors are that shape in other colours, or other shapes in that colour.

Images come from shared pools (as in GeneCIS, where gallery images recur across templates).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from condsim.results.run_result import atomic_write_text
from condsim.synthetic.world import (
    COLOURS,
    SHAPES,
    ObjectSpec,
    draw_object,
    jpeg_bytes,
    render_scene,
)

_POSITIONS = [(0.25, 0.3), (0.7, 0.3), (0.3, 0.72), (0.72, 0.7)]


def _save(path: Path, img: Image.Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(img))


def _coco_pool(out: Path, n: int, rng: np.random.Generator) -> list[set[str]]:
    """Scenes of 2-3 objects with distinct shapes; returns each scene's shape set."""
    shapes = []
    for i in range(n):
        k = int(rng.integers(2, 4))
        chosen = rng.choice(len(SHAPES), size=k, replace=False)
        items = [(ObjectSpec(SHAPES[int(s)], list(COLOURS)[int(rng.integers(len(COLOURS)))]),
                  _POSITIONS[j]) for j, s in enumerate(chosen)]
        _save(out / "coco" / "val2017" / f"{i + 1:012d}.jpg",
              render_scene(items, (320, 256), rng))
        shapes.append({SHAPES[int(s)] for s in chosen})
    return shapes


def _vg_pool(
    out: Path, rng: np.random.Generator, copies: int
) -> list[tuple[int, list[float], ObjectSpec]]:
    """``copies`` VG images per (shape, colour), each a single object in a box on its own
    background (some boxes touch the border)."""
    pool = []
    image_id = 1000
    specs = [ObjectSpec(shape, colour) for _ in range(copies) for shape in SHAPES
             for colour in COLOURS]
    for spec in specs:
        w, h = 320, 256
        img = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(90, 200, 3)))
        r = float(rng.integers(28, 45))
        edge = rng.random() < 0.3
        cx = r + 1 if edge else float(rng.integers(int(r) + 5, w - int(r) - 5))
        cy = r + 1 if edge and rng.random() < 0.5 else float(
            rng.integers(int(r) + 5, h - int(r) - 5))
        draw_object(img, spec, cx, cy, r)
        folder = "VG_100K" if image_id % 2 else "VG_100K_2"
        _save(out / "vg" / folder / f"{image_id}.jpg", img)
        pool.append((image_id, [max(0.0, cx - r), max(0.0, cy - r), 2 * r, 2 * r], spec))
        image_id += 1
    return pool


def write_genecis(
    out_dir: str | Path, *, n_per_task: int = 50, gallery_size: int = 15, seed: int = 0,
    n_scenes: int = 80,
) -> Path:
    """Write images and ``annotations/<task>.json``; deterministic for ``seed``."""
    out = Path(out_dir)
    rng = np.random.default_rng([seed, 0x6E1])
    n_dist = gallery_size - 1
    scenes = _coco_pool(out, n_scenes, rng)
    ids = list(range(1, n_scenes + 1))

    def coco(i: int) -> dict[str, int]:
        return {"val_image_id": ids[i]}

    focus_obj, change_obj = [], []
    seen: set[tuple[str, int, str]] = set()  # (task, reference, condition) are unique

    tries = [0]

    def fresh(task: str, ref: int, cond: str) -> bool:
        tries[0] += 1
        if tries[0] > 200 * n_per_task + 10_000:
            raise ValueError(f"cannot draw {n_per_task} distinct templates per task from this "
                             "pool; lower n_per_task or raise n_scenes")
        if (task, ref, cond) in seen:
            return False
        seen.add((task, ref, cond))
        return True

    while len(focus_obj) < n_per_task:
        ref = int(rng.integers(n_scenes))
        cond = sorted(scenes[ref])[int(rng.integers(len(scenes[ref])))]
        if not fresh("fo", ref, cond):
            continue
        pos = [i for i in range(n_scenes) if i != ref and cond in scenes[i]]
        neg = [i for i in range(n_scenes) if cond not in scenes[i]]
        if not pos or len(neg) < n_dist:
            continue
        tgt = pos[int(rng.integers(len(pos)))]
        gal = rng.choice(neg, size=n_dist, replace=False)
        focus_obj.append({"reference": coco(ref), "target": coco(tgt), "condition": cond,
                          "gallery": [coco(int(g)) for g in gal]})
    while len(change_obj) < n_per_task:
        ref = int(rng.integers(n_scenes))
        absent = [s for s in SHAPES if s not in scenes[ref]]
        cond = absent[int(rng.integers(len(absent)))]
        if not fresh("co", ref, cond):
            continue
        pos = [i for i in range(n_scenes) if cond in scenes[i] and scenes[i] & scenes[ref]]
        neg = [i for i in range(n_scenes) if i != ref and
               ((cond in scenes[i]) != bool(scenes[i] & scenes[ref]))]
        if not pos or len(neg) < n_dist:
            continue
        tgt = pos[int(rng.integers(len(pos)))]
        gal = rng.choice(neg, size=n_dist, replace=False)
        change_obj.append({"reference": coco(ref), "target": coco(tgt),
                           "condition": cond, "gallery": [coco(int(g)) for g in gal]})

    pool = _vg_pool(out, rng, copies=1 + n_per_task // 40)

    def vg(i: int) -> dict:
        return {"image_id": pool[i][0], "instance_bbox": pool[i][1]}

    focus_attr, change_attr = [], []
    colours = list(COLOURS)
    while len(focus_attr) < n_per_task:
        ref = int(rng.integers(len(pool)))
        spec = pool[ref][2]
        new = colours[int(rng.integers(len(colours)))]
        if new == spec.colour or not fresh("fa", ref, spec.colour) or not fresh("ca", ref, new):
            continue
        tgt_c = [i for i, p in enumerate(pool) if p[2].colour == spec.colour and i != ref]
        neg = [i for i, p in enumerate(pool) if p[2].shape == spec.shape and
               p[2].colour != spec.colour]
        neg += [i for i, p in enumerate(pool) if p[2].shape != spec.shape and
                p[2].colour != spec.colour]
        gal = rng.choice(neg, size=n_dist, replace=False)
        focus_attr.append({"reference": vg(ref), "target": vg(int(rng.choice(tgt_c))),
                           "condition": spec.colour, "gallery": [vg(int(g)) for g in gal]})
        tgt = [i for i, p in enumerate(pool) if p[2] == ObjectSpec(spec.shape, new)][0]
        hard = [i for i, p in enumerate(pool) if i != tgt and i != ref and
                (p[2].shape == spec.shape or p[2].colour == new)]
        easy = [i for i in range(len(pool)) if i not in hard and i not in (tgt, ref)]
        gal = hard[:n_dist] + list(rng.choice(easy, size=max(0, n_dist - len(hard)),
                                              replace=False))
        change_attr.append({"reference": vg(ref), "target": vg(tgt), "condition": new,
                            "gallery": [vg(int(g)) for g in gal]})

    for name, data in (("focus_object", focus_obj), ("change_object", change_obj),
                       ("focus_attribute", focus_attr), ("change_attribute", change_attr)):
        atomic_write_text(out / "annotations" / f"{name}.json", json.dumps(data))
    return out
