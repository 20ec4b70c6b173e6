"""CIRR annotation reader (``captions/cap.rc2.<split>.json`` + ``image_splits/
split.rc2.<split>.json``; images under ``img_raw/`` at the split file's relative paths)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from condsim.data.crops import ImageRef
from condsim.data.jsonio import load_json
from condsim.errors import DataError

SPLITS = ("train", "val", "test1")


@dataclass(frozen=True)
class CirrQuery:
    pairid: int
    reference: str
    caption: str
    target: str | None  # None on test1 (hidden labels)
    members: tuple[str, ...]


def read_cirr(root: str | Path, split: str, img_root: str | Path | None = None
              ) -> tuple[list[CirrQuery], dict[str, ImageRef]]:
    """Queries of ``split`` and the split's image gallery (name -> ImageRef)."""
    if split not in SPLITS:
        raise DataError(f"CIRR split must be one of {SPLITS}, got {split!r}")
    root = Path(root)
    images_dir = Path(img_root) if img_root else root / "img_raw"
    split_file = root / "image_splits" / f"split.rc2.{split}.json"
    names = load_json(split_file, "CIRR file")
    _check_unique_names(split_file)
    if not isinstance(names, dict) or not names:
        raise DataError(f"{split_file}: expected a non-empty {{name: relative path}} object")
    gallery = {str(n): ImageRef(str(images_dir / str(rel).lstrip("./")))
               for n, rel in names.items()}
    cap_file = root / "captions" / f"cap.rc2.{split}.json"
    data = load_json(cap_file, "CIRR file")
    if not isinstance(data, list) or not data:
        raise DataError(f"{cap_file}: expected a non-empty list of queries")
    queries, seen = [], set()
    for i, e in enumerate(data):
        where = f"{cap_file} entry {i}"
        if not isinstance(e, dict):
            raise DataError(f"{where}: expected an object")
        missing = [k for k in ("pairid", "reference", "caption", "img_set") if k not in e]
        if missing:
            raise DataError(f"{where}: missing key(s) {missing}")
        if e["pairid"] in seen:
            raise DataError(f"{where}: duplicate pairid {e['pairid']}")
        seen.add(e["pairid"])
        target = e.get("target_hard")
        if split != "test1" and target is None:
            raise DataError(f"{where}: missing target_hard")
        members = tuple(e["img_set"].get("members", ())) if isinstance(e["img_set"], dict) \
            else ()
        for name in (e["reference"], target, *members):
            if name is not None and name not in gallery:
                raise DataError(f"{where}: image {name!r} is not in {split_file}")
        if not isinstance(e["caption"], str):
            raise DataError(f"{where}: caption must be a string")
        if target is not None and members and target not in members:
            raise DataError(f"{where}: target {target!r} is not among img_set members")
        if target is not None and target == e["reference"]:
            raise DataError(f"{where}: target equals the reference")
        queries.append(CirrQuery(int(e["pairid"]), e["reference"], str(e["caption"]),
                                 target, members))
    return queries, gallery


def _check_unique_names(path: Path) -> None:
    """The split file maps each image name once; JSON parsers keep the last duplicate key
    silently, so duplicates are looked for explicitly."""
    import json

    def hook(pairs: list[tuple[str, object]]) -> dict[str, object]:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DataError(f"{path}: image name {key!r} is listed twice")
            seen.add(key)
        return dict(pairs)

    json.loads(path.read_text(), object_pairs_hook=hook)
