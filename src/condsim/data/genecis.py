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
    dropped: int = 0  # gallery entries dropped as duplicates of the target or of each other

    @property
    def candidates(self) -> tuple[ImageRef, ...]:
        return (self.target, *self.gallery)


class ImageLocator:
    """Resolves GeneCIS refs to files: COCO ``%012d.jpg`` under ``coco_root``; VG
    ``<id>.jpg`` in the first of ``vg_roots`` that has it (VG_100K, VG_100K_2, ...)."""

    def __init__(self, coco_root: str | Path | None, vg_roots: Sequence[str | Path] = ()) -> None:
        self.coco_root = _coco_folder(Path(coco_root)) if coco_root else None
        self.vg_roots = _vg_folders([Path(p) for p in vg_roots])
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


def _coco_folder(root: Path) -> Path:
    """``root``, or ``root/val2017`` when ``root`` is the COCO folder above it."""
    if not any(root.glob("*.jpg")) and (root / "val2017").is_dir():
        logger.info("COCO images: using %s", root / "val2017")
        return root / "val2017"
    return root


def _vg_folders(roots: list[Path]) -> list[Path]:
    """The given VG folders, a parent folder standing for its ``VG_100K*`` subfolders."""
    out: list[Path] = []
    for root in roots:
        subs = sorted(p for p in root.glob("VG_100K*") if p.is_dir())
        if subs and not any(root.glob("*.jpg")):
            logger.info("Visual Genome images: using %s", ", ".join(map(str, subs)))
            out += subs
        else:
            out.append(root)
    return out


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


DUPLICATE_POLICIES = ("drop", "error")


def read_task(
    path: str | Path, task: str, locator: ImageLocator, crop_mode: str = "official",
    on_duplicate: str = "drop",
) -> list[GenecisQuery]:
    """Read and validate one task file; errors name the file and the entry index.

    A gallery entry repeating the target or another gallery entry (same image, same box) is
    dropped with a warning (``on_duplicate="drop"``, the default: the published
    ``change_object.json`` entry 19 lists its target again as a distractor, and retrieving
    either copy is correct) or rejected (``"error"``).
    """
    if task not in TASKS:
        raise DataError(f"unknown GeneCIS task {task!r}; tasks: {', '.join(TASKS)}")
    if on_duplicate not in DUPLICATE_POLICIES:
        raise DataError(f"on_duplicate must be one of {DUPLICATE_POLICIES}, got {on_duplicate!r}")
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
        gal = [_ref(g, task, f"{where} gallery[{j}]", locator, crop_mode)
               for j, g in enumerate(gallery)]
        unique = [g for g in dict.fromkeys(gal) if g != tgt]
        dropped = len(gal) - len(unique)
        if dropped:
            if on_duplicate == "error":
                raise DataError(f"{where}: duplicate image ids among target + gallery")
            logger.warning("%s: dropped %d gallery entr%s repeating the target or another "
                           "entry (either copy is a correct answer)", where, dropped,
                           "y" if dropped == 1 else "ies")
        if not unique:
            raise DataError(f"{where}: empty gallery once duplicates of the target are dropped")
        queries.append(GenecisQuery(i, ref, cond.strip(), tgt, tuple(unique), dropped))
    return queries


MIN_INSIDE = 0.5  # a box less than half inside its image is a wrong image or a wrong box


def check_boxes(
    files: dict[str, Path], tasks: dict[str, list[GenecisQuery]], max_bad: int = 0,
) -> tuple[dict[str, Any], set[ImageRef]]:
    """Check every instance box against its image's size (header read only).

    A box less than :data:`MIN_INSIDE` inside its image is *bad* (a wrong image or a wrong
    box). More than ``max_bad`` bad boxes raise :class:`DataError` naming the annotation
    file, entry, role and image of the first; up to ``max_bad`` are returned so that their
    queries can be skipped. Boxes crossing a border by more than 1 pixel but mostly inside
    are clamped by the official crop formula; they are counted and logged.
    Returns ``({"boxes_checked", "boxes_clipped", "boxes_outside"}, bad refs)``.
    """
    from condsim.data.crops import box_inside_fraction, box_overflow

    sizes: dict[str, tuple[int, int] | None] = {}
    seen: set[ImageRef] = set()
    clipped: list[str] = []
    bad: dict[ImageRef, str] = {}
    for task, qs in tasks.items():
        for q in qs:
            roles = [("reference", q.reference), ("target", q.target),
                     *((f"gallery image {q.gallery.index(g)}", g) for g in q.gallery)]
            for role, ref in roles:
                if ref.bbox is None or ref in seen:
                    continue
                seen.add(ref)
                size = _image_size(ref.path, sizes)
                if size is None:
                    continue  # unreadable: reported by the decoder with the file name
                where = f"{files[task]} entry {q.index} {role}"
                frac = box_inside_fraction(ref.bbox, size)
                if frac < MIN_INSIDE:
                    bad[ref] = (f"{where}: instance_bbox {list(ref.bbox)} lies outside the "
                                f"{size[0]}x{size[1]} image {ref.path} ({frac:.0%} of the box "
                                "inside)")
                elif box_overflow(ref.bbox, size) > 1.0:
                    clipped.append(f"{where} ({list(ref.bbox)} in {size[0]}x{size[1]})")
    if len(bad) > max_bad:
        raise DataError(f"{next(iter(bad.values()))}; {len(bad)} such box(es) (allowed: "
                        f"{max_bad}): check that the VG folders hold the right images for these "
                        "ids, or raise --max-bad-boxes to skip their queries")
    if bad:
        logger.warning("%d instance boxes lie outside their images; their queries are skipped; "
                       "first: %s", len(bad), next(iter(bad.values())))
    if clipped:
        logger.warning("%d instance boxes cross their image border by more than 1 px and are "
                       "clamped by the crop formula; first: %s", len(clipped), clipped[0])
    return ({"boxes_checked": len(seen), "boxes_clipped": len(clipped),
             "boxes_outside": len(bad)}, set(bad))


def _image_size(path: str, memo: dict[str, tuple[int, int] | None]) -> tuple[int, int] | None:
    if path not in memo:
        from PIL import Image

        try:
            with Image.open(path) as img:
                memo[path] = img.size
        except (OSError, ValueError, SyntaxError):
            memo[path] = None
    return memo[path]
