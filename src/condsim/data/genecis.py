"""GeneCIS annotation readers (four JSON task files).

Object tasks (``focus_object``, ``change_object``; COCO 2017 val images): entries
``{"reference": ref, "target": ref, "condition": str, "gallery": [ref, ...]}`` with ``ref`` a
COCO id or ``{"val_image_id": id}``; file ``%012d.jpg``. Attribute tasks
(``focus_attribute``, ``change_attribute``; Visual Genome 1.2): refs are
``{"image_id": id, "instance_bbox": [x, y, w, h]}``, file ``<image_id>.jpg`` in one of the VG
image folders, cropped as :mod:`condsim.data.crops` defines.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from condsim.data.crops import ImageRef, check_bbox
from condsim.data.jsonio import load_json
from condsim.errors import DataError

logger = logging.getLogger(__name__)

OBJECT_TASKS = ("focus_object", "change_object")
ATTRIBUTE_TASKS = ("focus_attribute", "change_attribute")
TASKS = ("focus_attribute", "change_attribute", "focus_object", "change_object")


@dataclass(frozen=True)
class GenecisQuery:
    """One template: the target is candidate 0 of :attr:`candidates` (order is irrelevant to
    condsim's tie-safe metric)."""

    index: int
    reference: ImageRef
    condition: str
    target: ImageRef
    gallery: tuple[ImageRef, ...]

    @property
    def candidates(self) -> tuple[ImageRef, ...]:
        return (self.target, *self.gallery)


class ImageLocator:
    """Resolves GeneCIS refs to files: COCO ``%012d.jpg`` under ``coco_root``; VG
    ``<id>.jpg`` in the first of ``vg_roots`` that has it (VG_100K, VG_100K_2, ...)."""

    def __init__(self, coco_root: str | Path | None, vg_roots: Sequence[str | Path] = ()) -> None:
        self.coco_root = Path(coco_root) if coco_root else None
        self.vg_roots = [Path(p) for p in vg_roots]
        self._vg_cache: dict[int, Path | None] = {}

    def coco(self, image_id: int) -> Path:
        if self.coco_root is None:
            raise DataError("object tasks need --coco-root (COCO 2017 val images)")
        return self.coco_root / f"{image_id:012d}.jpg"

    def vg(self, image_id: int) -> Path:
        if not self.vg_roots:
            raise DataError("attribute tasks need --vg-root (Visual Genome image folders)")
        if image_id not in self._vg_cache:
            found = None
            for root in self.vg_roots:
                if (root / f"{image_id}.jpg").is_file():
                    found = root / f"{image_id}.jpg"
                    break
            self._vg_cache[image_id] = found
        found = self._vg_cache[image_id]
        return found if found is not None else self.vg_roots[0] / f"{image_id}.jpg"


def _int_id(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise DataError(f"{where}: image id must be an integer, got {value!r}")
    try:
        return int(value)
    except ValueError as exc:
        raise DataError(f"{where}: image id must be an integer, got {value!r}") from exc


def _ref(entry: Any, task: str, where: str, loc: ImageLocator, crop_mode: str) -> ImageRef:
    if task in OBJECT_TASKS:
        raw = entry.get("val_image_id") if isinstance(entry, dict) else entry
        if raw is None:
            raise DataError(f"{where}: object-task image needs 'val_image_id', got {entry!r}")
        return ImageRef(str(loc.coco(_int_id(raw, where))))
    if not isinstance(entry, dict) or "image_id" not in entry or "instance_bbox" not in entry:
        raise DataError(f"{where}: attribute-task entry needs image_id and instance_bbox, "
                        f"got {entry!r}")
    image_id = _int_id(entry["image_id"], where)
    bbox = check_bbox(entry["instance_bbox"], where)
    return ImageRef(str(loc.vg(image_id)), bbox, crop_mode)


def read_task(
    path: str | Path, task: str, locator: ImageLocator, crop_mode: str = "official"
) -> list[GenecisQuery]:
    """Read and validate one task file; errors name the file and the entry index."""
    if task not in TASKS:
        raise DataError(f"unknown GeneCIS task {task!r}; tasks: {', '.join(TASKS)}")
    path = Path(path)
    data = load_json(path, f"annotation file (expected {task}.json)")
    if not isinstance(data, list) or not data:
        raise DataError(f"{path}: expected a non-empty JSON list of templates")
    queries = []
    for i, entry in enumerate(data):
        where = f"{path} entry {i}"
        if not isinstance(entry, dict):
            raise DataError(f"{where}: expected an object, got {type(entry).__name__}")
        missing = [k for k in ("reference", "target", "condition", "gallery") if k not in entry]
        if missing:
            raise DataError(f"{where}: missing key(s) {missing}")
        cond = entry["condition"]
        if not isinstance(cond, str) or not cond.strip():
            raise DataError(f"{where}: condition must be a non-empty string")
        gallery = entry["gallery"]
        if not isinstance(gallery, list) or not gallery:
            raise DataError(f"{where}: empty gallery (need at least one distractor)")
        ref = _ref(entry["reference"], task, f"{where} reference", locator, crop_mode)
        tgt = _ref(entry["target"], task, f"{where} target", locator, crop_mode)
        gal = tuple(_ref(g, task, f"{where} gallery[{j}]", locator, crop_mode)
                    for j, g in enumerate(gallery))
        cands = (tgt, *gal)
        if len(set(cands)) != len(cands):
            raise DataError(f"{where}: duplicate image ids among target + gallery")
        queries.append(GenecisQuery(i, ref, cond.strip(), tgt, gal))
    return queries
