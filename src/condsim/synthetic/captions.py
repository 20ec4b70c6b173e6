"""A CC3M-like image-caption set for the parse -> mine -> train pipeline.

Each caption is a "subject relation object" sentence over the synthetic world, e.g.
``"a red striped circle next to a blue square"`` or ``"an orange heart sitting on a green
star"``, whose structure spaCy + ``sng_parser`` turn into a scene graph (subject ``circle``,
relation ``next to``, object ``square``). With ``images_dir`` the matching picture is drawn
(the relation decides the layout: above, below, on, behind, ...).

Formats (what :func:`condsim.training.captions.read_captions` reads):

- ``tsv``: ``caption<TAB>image`` per line, no header, like CC3M's ``Train_GCC-training.tsv``
  (``caption<TAB>url``);
- ``parquet``: columns ``caption`` and ``image`` (strings).

``image`` is the picture's path relative to the captions file's folder when the images are
inside that folder (so ``--images <that folder>`` finds them), its absolute path otherwise,
and a CC3M-like URL when no images are drawn.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from condsim.io import atomic_write_bytes, atomic_write_parquet, atomic_write_text
from condsim.synthetic.world import (
    BACKGROUNDS,
    ObjectSpec,
    draw_clutter,
    draw_object,
    jpeg_bytes,
    random_spec,
    shortest_side_size,
)

logger = logging.getLogger(__name__)

FORMATS = ("tsv", "parquet")

# (x, y) of subject and object in units of the object radius r, relative to the image centre
Layout = Callable[[np.random.Generator], tuple[tuple[float, float], tuple[float, float], bool]]


def _vertical(sign: float) -> Layout:
    def layout(rng: np.random.Generator) -> tuple[tuple[float, float], tuple[float, float], bool]:
        dx = float(rng.uniform(-0.4, 0.4))
        return (dx, -sign * 1.3), (-dx, sign * 1.3), False
    return layout


def _side(rng: np.random.Generator) -> tuple[tuple[float, float], tuple[float, float], bool]:
    s = 1.0 if rng.random() < 0.5 else -1.0
    dy = float(rng.uniform(-0.3, 0.3))
    return (-s * 1.3, dy), (s * 1.3, -dy), False


def _near(rng: np.random.Generator) -> tuple[tuple[float, float], tuple[float, float], bool]:
    s = 1.0 if rng.random() < 0.5 else -1.0
    return (-s * 1.2, -0.9), (s * 1.2, 0.9), False


def _on(rng: np.random.Generator) -> tuple[tuple[float, float], tuple[float, float], bool]:
    # the subject stands on top of the object, touching it
    dx = float(rng.uniform(-0.2, 0.2))
    return (dx, -1.0), (0.0, 1.0), False


def _overlap(subject_in_front: bool) -> Layout:
    def layout(rng: np.random.Generator) -> tuple[tuple[float, float], tuple[float, float], bool]:
        s = 1.0 if rng.random() < 0.5 else -1.0
        return (-s * 0.6, -0.5), (s * 0.6, 0.5), subject_in_front
    return layout


RELATIONS: dict[str, Layout] = {
    "above": _vertical(1.0), "below": _vertical(-1.0), "under": _vertical(-1.0),
    "next to": _side, "beside": _side, "lying beside": _side, "near": _near,
    "on": _on, "sitting on": _on, "resting on": _on,
    "behind": _overlap(False), "in front of": _overlap(True),
}
"""Relation phrases of the captions and their picture layouts (``sng_parser`` reads e.g.
"resting on" as ``on`` and "lying beside" as ``beside``)."""


def caption_for(subject: ObjectSpec, relation: str, obj: ObjectSpec) -> str:
    """``"<subject caption> <relation> <object caption>"``."""
    if relation not in RELATIONS:
        raise ValueError(f"unknown relation {relation!r}; relations: {', '.join(RELATIONS)}")
    return f"{subject.caption()} {relation} {obj.caption()}"


def render_relation(
    subject: ObjectSpec, relation: str, obj: ObjectSpec, size: tuple[int, int],
    rng: np.random.Generator,
) -> Image.Image:
    """The picture of ``subject relation obj`` on a cluttered background."""
    w, h = size
    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    img = Image.new("RGB", size, background)
    draw_clutter(img, rng, 8, background)
    r = min(w, h) * float(rng.uniform(0.17, 0.21))
    (sx, sy), (ox, oy), subject_in_front = RELATIONS[relation](rng)
    cx, cy = w / 2 + float(rng.normal(0, 4)), h / 2 + float(rng.normal(0, 4))
    drawn = [(subject, sx, sy), (obj, ox, oy)]
    if subject_in_front:
        drawn.reverse()
    for spec, x, y in drawn:
        draw_object(img, spec, cx + x * r, cy + y * r, r)
    return img


def _draw_triple(
    rng: np.random.Generator, relations: list[str]
) -> tuple[ObjectSpec, str, ObjectSpec]:
    """A (subject, relation, object) with two different shapes."""
    subject = random_spec(rng)
    obj = random_spec(rng)
    while obj.shape == subject.shape:
        obj = random_spec(rng)
    return subject, relations[int(rng.integers(len(relations)))], obj


def _bad_rows(rng: np.random.Generator, fmt: str) -> list[str]:
    """Captions a parser must skip: empty, whitespace, huge, non-English (+ a TSV line with an
    extra field)."""
    words = [random_spec(rng).caption() for _ in range(400)]
    rows = ["", "   ", " and ".join(words), "un cercle rouge à côté d'un carré bleu"]
    if fmt == "tsv":
        rows.append("a red circle\twith a tab inside")
    return rows


def _resolve_paths(
    out_path: Path, fmt: str | None, images_dir: str | Path | None
) -> tuple[Path, str, Path | None]:
    suffix = out_path.suffix.lower()
    if suffix in (".tsv", ".parquet"):
        inferred = suffix[1:]
        if fmt is not None and fmt != inferred:
            raise ValueError(f"fmt={fmt!r} does not match the file name {out_path.name}")
        return out_path, inferred, Path(images_dir) if images_dir is not None else None
    if suffix:
        raise ValueError(f"{out_path}: captions files end in .tsv or .parquet (or give a "
                         "folder without a suffix)")
    # a folder: <folder>/captions.<fmt> with the images in <folder>/images by default
    fmt = fmt or "tsv"
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    images = Path(images_dir) if images_dir is not None else out_path / "images"
    return out_path / f"captions.{fmt}", fmt, images


def _image_column_value(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def write_captions(
    out_path: str | Path,
    *,
    n: int = 2000,
    seed: int = 0,
    fmt: str | None = None,
    images_dir: str | Path | None = None,
    bad_rows: bool = False,
) -> Path:
    """Write ``n`` captions (and, with ``images_dir``, their pictures ``<id>.jpg``); return
    the captions file's path.

    ``out_path`` is the captions file (``.tsv`` or ``.parquet``; ``fmt`` may be omitted or
    must agree), or a folder: then the file is ``<folder>/captions.<fmt>`` (``fmt`` defaults
    to ``tsv``) and the images go to ``<folder>/images`` unless ``images_dir`` says otherwise.
    ``bad_rows=True`` mixes in a few rows a parser must skip (empty, whitespace-only, huge
    and non-English captions; a TSV line with an extra field) at seeded positions; their
    pictures are fine. Same arguments => byte-identical files.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    path, fmt, images = _resolve_paths(Path(out_path), fmt, images_dir)
    rng = np.random.default_rng([seed, 0xCA9])
    relations = list(RELATIONS)
    triples = [_draw_triple(rng, relations) for _ in range(n)]
    rows = [(caption_for(*t), t) for t in triples]
    n_bad = 0
    if bad_rows:
        bad = _bad_rows(rng, fmt)
        for text in bad:  # each at a seeded position; its picture is a normal one
            rows.insert(int(rng.integers(len(rows) + 1)), (text, _draw_triple(rng, relations)))
        n_bad = len(bad)
    texts = [text for text, _ in rows]
    image_col = []
    for i, (_, (subject, relation, obj)) in enumerate(rows):
        name = f"{i:06d}.jpg"
        if images is None:
            image_col.append(f"https://example.invalid/cc3m/{name}")
            continue
        img = render_relation(subject, relation, obj, shortest_side_size(rng), rng)
        atomic_write_bytes(images / name, jpeg_bytes(img))
        image_col.append(_image_column_value(images / name, path.parent))
    if fmt == "tsv":
        atomic_write_text(path, "".join(f"{t}\t{im}\n" for t, im in zip(texts, image_col,
                                                                        strict=True)))
    else:
        atomic_write_parquet(path, pa.table({"caption": pa.array(texts, pa.string()),
                                             "image": pa.array(image_col, pa.string())}))
    logger.info("wrote %d captions (%d bad) to %s%s", len(texts), n_bad, path,
                f" and their images to {images}" if images is not None else "")
    return path
