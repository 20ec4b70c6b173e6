"""A synthetic GeneCIS set in the real layout, learnable and conditional.

Files (see PROTOCOLS.md, "GeneCIS"):

- ``coco/val2017/%012d.jpg``: COCO-style scenes for the object tasks (sparse, COCO-like ids);
- ``vg/VG_100K/<image_id>.jpg`` and ``vg/VG_100K_2/<image_id>.jpg``: Visual-Genome-style
  pictures holding one or two object instances each (ids alternate between the folders);
- ``annotations/{focus_attribute,change_attribute,focus_object,change_object}.json``: a JSON
  list of templates, written like the official files (4-space indent, keys ``condition``,
  ``gallery``, ``reference``, ``target``). Object tasks reference images as
  ``{"val_image_id": int}``; attribute tasks as VAW instances
  ``{"image_id": str, "instance_id": str, "instance_bbox": [x, y, w, h], "object_name": str}``
  (the reference code reads ``image_id`` and ``instance_bbox``; VAW, where the templates come
  from, stores ids as strings and boxes as floats).

Every template has 1 target + ``gallery_size - 1`` distractors, none of which is a valid
answer. The semantics (shapes are the "objects", colours the "attributes"):

- ``focus_object``: condition = a shape present in the reference scene; the target scene (of
  another family) contains it, distractors do not.
- ``change_object``: condition = a shape to add; the target is the reference scene with that
  shape added (same background, objects and places). Distractors: the reference scene with
  another shape added (the image-only trap), scenes holding the condition's shape (the
  text-only trap) and other scenes.
- ``focus_attribute``: condition = the reference object's colour; the target is an object of
  that colour (another shape when possible); distractors have other colours, some the
  reference's shape.
- ``change_attribute``: condition = a new colour; the target is the reference's shape in that
  colour; distractors are that shape in other colours, other shapes in that colour, others.

Images come from shared pools, as in GeneCIS where references and gallery images recur
across templates, and every (reference, condition) pair is used once. Boxes lie inside their
images and about a third of them touch a border (to exercise the crop clamping).
``synthetic_truth.json`` (:data:`TRUTH_FILE`, not a GeneCIS file) records what every image
holds, for tests and debugging.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from condsim.io import atomic_write_bytes, atomic_write_text
from condsim.synthetic.world import (
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    ObjectSpec,
    Region,
    draw_clutter,
    draw_items,
    draw_object,
    jpeg_bytes,
    random_spec,
)

logger = logging.getLogger(__name__)

TASKS = ("focus_attribute", "change_attribute", "focus_object", "change_object")
"""The four task files, ``annotations/<task>.json``."""

_COCO_SIZES = ((320, 240), (320, 256), (256, 320), (288, 288))
_VG_SIZES = ((320, 240), (360, 270), (300, 300), (256, 320))
_VG_FIRST_ID = 2_350_001

TRUTH_FILE = "synthetic_truth.json"
"""Ground truth beside the official layout (not part of GeneCIS): every COCO-style image's
shapes and family, every VG-style instance's box, shape, colour and pattern."""


# -- COCO-style scenes (object tasks) ---------------------------------------------------------

@dataclass(frozen=True)
class Scene:
    """One COCO-style image: its id, the shapes it holds and its family (a base scene and
    the variants made by adding one shape to it share a family)."""

    image_id: int
    shapes: frozenset[str]
    family: int
    added: str | None = None  # the shape a variant adds to its base scene


def _slots() -> list[Region]:
    """A 3 x 2 grid of object places."""
    return [Region(c / 3 + 0.02, r / 2 + 0.03, (c + 1) / 3 - 0.02, (r + 1) / 2 - 0.03)
            for r in range(2) for c in range(3)]


def _coco_ids(n: int, rng: np.random.Generator) -> list[int]:
    """``n`` distinct COCO-val-like ids (sparse, 139 .. 581929), sorted."""
    return sorted(int(i) for i in rng.choice(np.arange(139, 581_930), size=n, replace=False))


def _coco_pool(out: Path, n_base: int, rng: np.random.Generator) -> list[Scene]:
    """``n_base`` base scenes of 2-3 distinct shapes, each with two variants that add one
    more (distinct) shape in a free place; images written to ``coco/val2017``."""
    ids = iter(_coco_ids(3 * n_base, rng))
    slots = _slots()
    scenes = []
    for fam in range(n_base):
        size = _COCO_SIZES[int(rng.integers(len(_COCO_SIZES)))]
        order = [SHAPES[int(i)] for i in rng.permutation(len(SHAPES))]
        k = int(rng.integers(2, 4))
        places = [slots[int(i)] for i in rng.permutation(len(slots))]
        items = [(random_spec(rng, shapes=[s]), places[j]) for j, s in enumerate(order[:k])]
        background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
        base = Image.new("RGB", size, background)
        draw_clutter(base, rng, 8, background)
        draw_items(base, items, rng)
        base_id = next(ids)
        atomic_write_bytes(out / f"{base_id:012d}.jpg", jpeg_bytes(base))
        scenes.append(Scene(base_id, frozenset(order[:k]), fam))
        for v, extra in enumerate(order[k:k + 2]):
            img = base.copy()
            draw_items(img, [(random_spec(rng, shapes=[extra]), places[k + v])], rng)
            vid = next(ids)
            atomic_write_bytes(out / f"{vid:012d}.jpg", jpeg_bytes(img))
            scenes.append(Scene(vid, frozenset(order[:k]) | {extra}, fam, extra))
    return scenes


# -- VG-style instances (attribute tasks) -----------------------------------------------------

@dataclass(frozen=True)
class Instance:
    """One object instance in a VG-style image: its image, box and object."""

    image_id: int
    index: int
    bbox: tuple[float, float, float, float]
    spec: ObjectSpec

    def entry(self) -> dict[str, Any]:
        """The template entry (VAW instance fields the reference code reads, and a few)."""
        return {"image_id": str(self.image_id), "instance_id": f"{self.image_id}{self.index:03d}",
                "instance_bbox": list(self.bbox), "object_name": self.spec.shape}


def _vg_folder(image_id: int) -> str:
    return "VG_100K" if image_id % 2 else "VG_100K_2"


def _place(
    lo: float, hi: float, r: float, extent: int, rng: np.random.Generator, touch: str | None
) -> float:
    """A centre coordinate for an object of radius ``r`` within ``[lo, hi]`` (pixels); with
    ``touch`` = "low"/"high" the object is cut by the image border at 0 / ``extent``."""
    if touch == "low":
        return r * float(rng.uniform(0.55, 0.95))
    if touch == "high":
        return extent - r * float(rng.uniform(0.55, 0.95))
    return float(rng.uniform(lo + r, max(lo + r, hi - r)))


def _object_box(
    spec: ObjectSpec, cx: float, cy: float, r: float, size: tuple[int, int]
) -> tuple[float, float, float, float]:
    """The object's tight box ``[x, y, w, h]`` in whole pixels, clipped to the image."""
    probe = Image.new("RGB", size, (0, 0, 0))
    draw_object(probe, ObjectSpec(spec.shape, "white"), cx, cy, r)
    x0, y0, x1, y1 = probe.getbbox()  # type: ignore[misc]
    return (float(x0), float(y0), float(x1 - x0), float(y1 - y0))


def _vg_pool(out: Path, copies: int, rng: np.random.Generator) -> list[Instance]:
    """``copies`` instances of every (shape, colour) (random patterns), one or two per image.

    Two instances share an image side by side, far enough apart that neither's official
    crop (which grows 0.7 box sizes to the left and top) reaches the other object.
    """
    specs = [random_spec(rng, shapes=[s], colours=[c])
             for _ in range(copies) for s in SHAPES for c in COLOURS]
    order = [specs[int(i)] for i in rng.permutation(len(specs))]
    pool: list[Instance] = []
    image_id = _VG_FIRST_ID
    i = 0
    while i < len(order):
        pair = i + 1 < len(order) and rng.random() < 0.35
        group = order[i:i + (2 if pair else 1)]
        i += len(group)
        w, h = _VG_SIZES[int(rng.integers(len(_VG_SIZES)))]
        background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
        img = Image.new("RGB", (w, h), background)
        draw_clutter(img, rng, 10, background)
        # one instance: anywhere; two: left third and right third
        bands = [(0.0, float(w))] if len(group) == 1 else [(0.0, 0.36 * w), (0.62 * w, float(w))]
        for j, spec in enumerate(group):
            r = min(w, h) * (0.10 if len(group) == 2 else float(rng.uniform(0.12, 0.2)))
            touch = rng.random() < 0.33
            lo, hi = bands[j]
            tx = None
            if touch and len(group) == 1:
                tx = ("low", "high", None)[int(rng.integers(3))]
            elif touch:
                tx = "low" if j == 0 else "high"
            ty = ("low", "high")[int(rng.integers(2))] if touch and tx is None else None
            cx = _place(lo, hi, r, w, rng, tx)
            cy = _place(0.0, float(h), r, h, rng, ty)
            draw_object(img, spec, cx, cy, r)
            pool.append(Instance(image_id, j, _object_box(spec, cx, cy, r, (w, h)), spec))
        atomic_write_bytes(out / _vg_folder(image_id) / f"{image_id}.jpg", jpeg_bytes(img))
        image_id += 1
    return pool


# -- templates --------------------------------------------------------------------------------

def _template(condition: str, gallery: list[dict], reference: dict, target: dict) -> dict:
    # key order of the official files
    return {"condition": condition, "gallery": gallery, "reference": reference,
            "target": target}


class _Drawer:
    """Seeded choices with clear errors when a pool is too small."""

    def __init__(self, rng: np.random.Generator, n_dist: int) -> None:
        self.rng = rng
        self.n_dist = n_dist

    def one(self, items: list[Any]) -> Any:
        return items[int(self.rng.integers(len(items)))]

    def gallery(self, task: str, first: list[Any], rest: list[Any]) -> list[Any]:
        """``n_dist`` distinct distractors: up to all of ``first`` (the hard ones, shuffled
        in), then random others from ``rest``."""
        first = list(dict.fromkeys(first))[: self.n_dist]
        chosen = set(first)
        rest = [x for x in dict.fromkeys(rest) if x not in chosen]
        need = self.n_dist - len(first)
        if need > len(rest):
            raise ValueError(f"{task}: only {len(first) + len(rest)} valid distractors for a "
                             f"gallery of {self.n_dist}; lower gallery_size")
        picked = first + [rest[int(i)] for i in self.rng.choice(len(rest), size=need,
                                                                replace=False)]
        return [picked[int(i)] for i in self.rng.permutation(len(picked))]


def _object_tasks(
    scenes: list[Scene], n: int, draw: _Drawer
) -> tuple[list[dict], list[dict]]:
    def ref(s: Scene) -> dict[str, int]:
        return {"val_image_id": s.image_id}

    # focus_object: every (scene, shape in it) is a candidate template
    pairs = [(s, shape) for s in scenes for shape in sorted(s.shapes)]
    focus = []
    for p in draw.rng.permutation(len(pairs)):
        if len(focus) == n:
            break
        scene, cond = pairs[int(p)]
        targets = [t for t in scenes if cond in t.shapes and t.family != scene.family]
        if not targets:
            continue
        target = draw.one(targets)
        # hard distractors share a shape with the reference (or are its own family)
        negatives = [t for t in scenes if cond not in t.shapes and t is not scene]
        hard = [t for t in negatives if t.shapes & scene.shapes]
        hard = [hard[int(i)] for i in draw.rng.permutation(len(hard))][: draw.n_dist // 2]
        gal = draw.gallery("focus_object", hard, negatives)
        focus.append(_template(cond, [ref(g) for g in gal], ref(scene), ref(target)))

    # change_object: a base scene + one of its variants' added shape
    variants = [(s, s.added) for s in scenes if s.added is not None]
    bases = {s.family: s for s in scenes if s.added is None}
    change = []
    for p in draw.rng.permutation(len(variants))[:n]:
        target, cond = variants[int(p)]
        base = bases[target.family]
        sibling = [s for s, _ in variants if s.family == base.family and s is not target]
        # scenes of other families holding all of the reference's shapes and the new one
        # would be near-answers: never distractors
        wanted = base.shapes | {cond}
        others = [s for s in scenes if s.family != base.family and not wanted <= s.shapes]
        text_trap = [s for s in others if cond in s.shapes]
        text_trap = [text_trap[int(i)] for i in draw.rng.permutation(len(text_trap))]
        gal = draw.gallery("change_object", sibling + text_trap[: draw.n_dist // 2], others)
        change.append(_template(cond, [ref(g) for g in gal], ref(base), ref(target)))
    if len(focus) < n or len(change) < n:
        raise ValueError(f"cannot draw {n} object templates per task from {len(scenes)} scenes")
    return focus, change


def _attribute_tasks(
    pool: list[Instance], n: int, draw: _Drawer
) -> tuple[list[dict], list[dict]]:
    colours = list(COLOURS)
    focus, change = [], []
    refs = [pool[int(i)] for i in draw.rng.permutation(len(pool))]
    for inst in refs[:n]:
        colour, shape = inst.spec.colour, inst.spec.shape
        same_colour = [t for t in pool if t.spec.colour == colour and t is not inst]
        other_shape = [t for t in same_colour if t.spec.shape != shape]
        target = draw.one(other_shape or same_colour)
        negatives = [t for t in pool if t.spec.colour != colour]
        hard = [t for t in negatives if t.spec.shape == shape]  # the image-only trap
        hard = [hard[int(i)] for i in draw.rng.permutation(len(hard))][: draw.n_dist // 2]
        gal = draw.gallery("focus_attribute", hard, negatives)
        focus.append(_template(colour, [g.entry() for g in gal], inst.entry(), target.entry()))
    for inst in refs[len(refs) - n:][::-1]:
        colour, shape = inst.spec.colour, inst.spec.shape
        new = draw.one([c for c in colours if c != colour])
        targets = [t for t in pool if t.spec.shape == shape and t.spec.colour == new]
        same_pattern = [t for t in targets if t.spec.pattern == inst.spec.pattern]
        target = draw.one(same_pattern or targets)
        negatives = [t for t in pool if (t.spec.shape != shape or t.spec.colour != new)
                     and t is not inst]
        image_trap = [t for t in negatives if t.spec.shape == shape]
        text_trap = [t for t in negatives if t.spec.colour == new]
        hard = ([image_trap[int(i)] for i in draw.rng.permutation(len(image_trap))][:5]
                + [text_trap[int(i)] for i in draw.rng.permutation(len(text_trap))][:5])
        gal = draw.gallery("change_attribute", hard, negatives)
        change.append(_template(new, [g.entry() for g in gal], inst.entry(), target.entry()))
    return focus, change


def _truth(scenes: list[Scene], pool: list[Instance], seed: int) -> dict[str, Any]:
    vg: dict[str, list[dict[str, Any]]] = {}
    for inst in pool:
        vg.setdefault(str(inst.image_id), []).append({
            "instance_id": inst.entry()["instance_id"], "instance_bbox": list(inst.bbox),
            "shape": inst.spec.shape, "colour": inst.spec.colour, "pattern": inst.spec.pattern})
    return {
        "generator": __name__, "seed": seed,
        "coco": {str(s.image_id): {"shapes": sorted(s.shapes), "family": s.family,
                                   "added": s.added} for s in scenes},
        "vg": vg,
    }


def write_genecis(
    out_dir: str | Path, *, n_per_task: int = 50, gallery_size: int = 15, seed: int = 0
) -> Path:
    """Write images and ``annotations/<task>.json`` to ``out_dir`` and return ``out_dir``.

    ``gallery_size`` counts the candidates of a template (target + distractors; 15 in
    GeneCIS). The image pools grow with ``n_per_task`` (about ``1.5 n`` COCO scenes and
    ``64 (1 + n // 40)`` VG instances) so that images recur across templates, as in the
    real set. Same arguments => byte-identical files.
    """
    if n_per_task < 1:
        raise ValueError(f"n_per_task must be >= 1, got {n_per_task}")
    if not 2 <= gallery_size <= 40:
        raise ValueError(f"gallery_size must be in [2, 40], got {gallery_size}")
    out = Path(out_dir)
    coco_rng, vg_rng, task_rng = (np.random.default_rng([seed, 0x6E1, k]) for k in range(3))
    n_base = max(20, math.ceil(n_per_task / 2) + 4, gallery_size + 5)
    scenes = _coco_pool(out / "coco" / "val2017", n_base, coco_rng)
    pool = _vg_pool(out / "vg", 1 + n_per_task // 40, vg_rng)
    draw = _Drawer(task_rng, gallery_size - 1)
    focus_obj, change_obj = _object_tasks(scenes, n_per_task, draw)
    focus_attr, change_attr = _attribute_tasks(pool, n_per_task, draw)
    for name, data in (("focus_attribute", focus_attr), ("change_attribute", change_attr),
                       ("focus_object", focus_obj), ("change_object", change_obj)):
        atomic_write_text(out / "annotations" / f"{name}.json", json.dumps(data, indent=4))
    atomic_write_text(out / TRUTH_FILE, json.dumps(_truth(scenes, pool, seed), indent=1))
    logger.info("wrote synthetic GeneCIS set to %s: %d templates per task, %d COCO scenes, "
                "%d VG instances, seed %d", out, n_per_task, len(scenes), len(pool), seed)
    return out
