"""Seeded synthetic datasets in the benchmarks' real file formats (no downloads).

A procedurally drawn world of objects (shape x colour x pattern, :mod:`.world`) rendered into
small, learnable, conditional datasets:

- :func:`write_lrvsf`: LRVS-Fashion test set (``products.parquet`` + ``distractors/``);
- :func:`write_genecis`: GeneCIS (COCO/VG-style images + the four task JSON files);
- :func:`write_captions`: a CC3M-like caption set (TSV or parquet, optional images);
- :func:`write_cirr`, :func:`write_circo`, :func:`write_fashioniq`, :func:`write_mitstates`.

Every writer is deterministic for its ``seed`` (same arguments => byte-identical files) and
writes each file atomically.
"""

from condsim.synthetic.any2any import write_any2any
from condsim.synthetic.captions import write_captions
from condsim.synthetic.circo import write_circo
from condsim.synthetic.cirr import write_cirr
from condsim.synthetic.fashioniq import write_fashioniq
from condsim.synthetic.genecis import write_genecis
from condsim.synthetic.lrvsf import CATEGORIES, category_region, write_lrvsf
from condsim.synthetic.mitstates import write_mitstates
from condsim.synthetic.world import ObjectSpec, Region, render_alone, render_scene

__all__ = [
    "CATEGORIES",
    "ObjectSpec",
    "Region",
    "category_region",
    "render_alone",
    "render_scene",
    "write_any2any",
    "write_captions",
    "write_circo",
    "write_cirr",
    "write_fashioniq",
    "write_genecis",
    "write_lrvsf",
    "write_mitstates",
]
