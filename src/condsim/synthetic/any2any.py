"""Synthetic any2any set, written with identical content in both layouts the benchmark reads.

- ``OUT/mteb``: the HF hub parquet layout MTEB reads (``corpus-00000-of-00001.parquet``,
  ``query-00000-of-00001.parquet``, ``qrels-00000-of-00001.parquet``; images as the HF
  ``{bytes, path}`` struct);
- ``OUT/mbeir``: the M-BEIR layout (``query/test/mbeir_synth_task7_test.jsonl``,
  ``cand_pool/local/mbeir_synth_task7_cand_pool.jsonl``,
  ``qrels/test/mbeir_synth_task7_test_qrels.txt``, JPEGs under ``mbeir_images/``).

The gallery holds two renders of every shape x colour. Two queries in three are composed (a
gallery image + "is <colour> instead"), the others image-only (a fresh render of an object).
Each query's first render of the asked object has gain 2, its second render gain 1, and one
look-alike (same shape, another colour) is judged with score 0 (not relevant).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from condsim.io import atomic_write_bytes, atomic_write_parquet, atomic_write_text
from condsim.synthetic.world import BASIC_SHAPES, COLOURS, ObjectSpec, jpeg_bytes, render_alone

TASK = "synth_task7"
SPLIT = "test"
DATASET_ID = 9
IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
LAYOUTS = ("both", "mteb", "mbeir")


def write_any2any(out_dir: str | Path, *, layout: str = "both", seed: int = 0,
                  n_queries: int = 24, size: int = 64) -> Path:
    """Write the set under ``out_dir`` (``mteb/`` and/or ``mbeir/``) and return ``out_dir``.
    Same arguments => byte-identical files; both layouts hold the same images, ids and
    qrels."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    out = Path(out_dir)
    rng = np.random.default_rng([seed, 0xA2A])
    colours = list(COLOURS)
    specs = [ObjectSpec(s, c) for s in BASIC_SHAPES for c in colours]
    if not 0 < n_queries <= len(specs) * (len(colours) - 1):
        raise ValueError(f"synthetic any2any holds 1..{len(specs) * (len(colours) - 1)} "
                         "queries")
    # gallery: render 0 of every object, then render 1
    gallery: list[tuple[str, bytes, str]] = []  # (did, jpeg, relative path)
    did_of: dict[tuple[ObjectSpec, int], str] = {}
    for copy in range(2):
        for spec in specs:
            did = f"{DATASET_ID}:{len(gallery) + 1}"
            gallery.append((did, jpeg_bytes(render_alone(spec, (size, size), rng)),
                            f"mbeir_images/synth/gallery/{len(gallery) + 1:04d}.jpg"))
            did_of[(spec, copy)] = did
    image_of = {did: img for did, img, _ in gallery}
    path_of = {did: path for did, _, path in gallery}
    queries: list[dict] = []
    qrels: list[tuple[str, str, int]] = []
    seen: set[tuple[ObjectSpec, str]] = set()
    while len(queries) < n_queries:
        spec = specs[int(rng.integers(len(specs)))]
        composed = len(queries) % 3 != 2
        new = colours[int(rng.integers(len(colours)))]
        if composed and (new == spec.colour or (spec, new) in seen):
            continue
        qid = f"{DATASET_ID}:{len(queries) + 1}"
        if composed:
            seen.add((spec, new))
            target = ObjectSpec(spec.shape, new)
            ref = did_of[(spec, 0)]
            img, path, text = image_of[ref], path_of[ref], f"is {new} instead"
        else:
            target = spec
            img = jpeg_bytes(render_alone(spec, (size, size), rng))
            path = f"mbeir_images/synth/queries/{len(queries) + 1:04d}.jpg"
            text = None
        others = [c for c in colours if c != target.colour]
        decoy = ObjectSpec(target.shape, others[int(rng.integers(len(others)))])
        judged = [(did_of[(target, 0)], 2), (did_of[(target, 1)], 1), (did_of[(decoy, 0)], 0)]
        qrels += [(qid, did, score) for did, score in judged]
        queries.append({"qid": qid, "text": text, "image": img, "img_path": path,
                        "pos": [did for did, score in judged if score > 0],
                        "neg": [did for did, score in judged if score <= 0]})
    if layout in ("both", "mteb"):
        _write_mteb(out / "mteb", gallery, queries, qrels)
    if layout in ("both", "mbeir"):
        _write_mbeir(out / "mbeir", gallery, queries, qrels)
    return out


def _modality(text: str | None) -> str:
    return "image" if text is None else "image,text"


def _write_mteb(out: Path, gallery: list[tuple[str, bytes, str]], queries: list[dict],
                qrels: list[tuple[str, str, int]]) -> None:
    def images(values: list[bytes]) -> pa.Array:
        return pa.array([{"bytes": v, "path": None} for v in values], IMAGE_STRUCT)

    corpus = pa.table({
        "id": pa.array([d for d, _, _ in gallery], pa.string()),
        "modality": pa.array(["image"] * len(gallery), pa.string()),
        "text": pa.array([None] * len(gallery), pa.string()),
        "image": images([img for _, img, _ in gallery]),
    })
    query = pa.table({
        "id": pa.array([q["qid"] for q in queries], pa.string()),
        "modality": pa.array([_modality(q["text"]) for q in queries], pa.string()),
        "text": pa.array([q["text"] for q in queries], pa.string()),
        "image": images([q["image"] for q in queries]),
    })
    judged = pa.table({
        "query-id": pa.array([q for q, _, _ in qrels], pa.string()),
        "corpus-id": pa.array([d for _, d, _ in qrels], pa.string()),
        "score": pa.array([s for _, _, s in qrels], pa.int32()),
    })
    for name, table in (("corpus", corpus), ("query", query), ("qrels", judged)):
        atomic_write_parquet(out / f"{name}-00000-of-00001.parquet", table)


def _write_mbeir(out: Path, gallery: list[tuple[str, bytes, str]], queries: list[dict],
                 qrels: list[tuple[str, str, int]]) -> None:
    pool = []
    for did, img, path in gallery:
        atomic_write_bytes(out / path, img)
        pool.append({"txt": None, "img_path": path, "modality": "image", "did": did,
                     "src_content": None})
    lines = []
    for q in queries:
        atomic_write_bytes(out / q["img_path"], q["image"])
        lines.append({"qid": q["qid"], "query_txt": q["text"], "query_img_path": q["img_path"],
                      "query_modality": _modality(q["text"]), "query_src_content": None,
                      "pos_cand_list": q["pos"], "neg_cand_list": q["neg"]})
    atomic_write_text(out / "cand_pool" / "local" / f"mbeir_{TASK}_cand_pool.jsonl",
                      "".join(json.dumps(r) + "\n" for r in pool))
    atomic_write_text(out / "query" / SPLIT / f"mbeir_{TASK}_{SPLIT}.jsonl",
                      "".join(json.dumps(r) + "\n" for r in lines))
    atomic_write_text(out / "qrels" / SPLIT / f"mbeir_{TASK}_{SPLIT}_qrels.txt",
                      "".join(f"{q} 0 {d} {s} 7\n" for q, d, s in qrels))
