"""CIRCO: composed retrieval with multiple ground truths over COCO unlabeled2017.

mAP@{5,10,25,50} (:func:`condsim.metrics.ap.average_precision_at_k`, normalised by
``min(#gt, K)``; ties broken against the ground truth, a lower bound), Recall@{5,10,25,50} on
``target_img_id`` (tie-safe expected recall), semantic mAP@10 per aspect; the reference image is
removed from the ranking. Test: :func:`write_submission` gives ``{"<id>": [top-50 ids]}``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from condsim.benchmarks.base import BenchmarkMeta, register_function_benchmark
from condsim.benchmarks.retrieval import FileDigests, encode_unique, summarize_recalls
from condsim.cache.store import EmbeddingCache
from condsim.data.crops import ImageRef
from condsim.data.jsonio import load_json
from condsim.errors import DataError
from condsim.metrics.ap import map_at_ks
from condsim.metrics.recall import expected_recall_at_k
from condsim.paths import default_cache_dir
from condsim.progress import ProgressFactory, no_progress
from condsim.results.run_result import RunResult, atomic_write_text

KS = (5, 10, 25, 50)
META = BenchmarkMeta(
    name="circo", description="CIRCO val: mAP@K with multiple ground truths",
    main_score="map_at_10", split="val", protocol_version="1",
    reference="https://github.com/miccunifi/CIRCO",
)


@dataclass
class CircoConfig:
    root: str  # holds annotations/{val,test}.json and unlabeled2017/
    split: str = "val"
    seed: int = 0
    n_bootstrap: int = 1000
    num_workers: int = 0
    cache_dir: str | None = None


def _read(cfg: CircoConfig) -> tuple[list[dict[str, Any]], list[int]]:
    path = Path(cfg.root) / "annotations" / f"{cfg.split}.json"
    data = load_json(path, "CIRCO annotation file")
    if not isinstance(data, list) or not data:
        raise DataError(f"{path}: expected a non-empty list")
    need = ["id", "reference_img_id", "relative_caption"]
    if cfg.split == "val":
        need += ["target_img_id", "gt_img_ids"]
    for i, e in enumerate(data):
        missing = [k for k in need if not isinstance(e, dict) or k not in e]
        if missing:
            raise DataError(f"{path} entry {i}: missing key(s) {missing}")
    folder = Path(cfg.root) / "unlabeled2017"
    ids = sorted(int(p.stem) for p in folder.glob("*.jpg"))
    if not ids:
        raise DataError(f"{folder}: no gallery images")
    known = set(ids)
    for i, e in enumerate(data):
        for img in [e["reference_img_id"], *e.get("gt_img_ids", [])]:
            if int(img) not in known:
                raise DataError(f"{path} entry {i}: image {img} not in {folder}")
    return data, ids


def _scores(model: Any, cfg: CircoConfig, progress: ProgressFactory
            ) -> tuple[list[dict[str, Any]], list[int], np.ndarray]:
    data, ids = _read(cfg)
    folder = Path(cfg.root) / "unlabeled2017"
    refs = [ImageRef(str(folder / f"{i:012d}.jpg")) for i in ids]
    cache = EmbeddingCache(cfg.cache_dir or default_cache_dir(), model.meta)
    digests = FileDigests()
    g, g_err, _ = encode_unique(model, cache, refs, digests, num_workers=cfg.num_workers,
                                progress=progress("encode CIRCO gallery", len(refs)),
                                what="CIRCO gallery")
    col = {i: j for j, i in enumerate(ids)}
    q, q_err, _ = encode_unique(model, cache, [refs[col[int(e["reference_img_id"])]] for e in data],
                                digests, [str(e["relative_caption"]) for e in data],
                                num_workers=cfg.num_workers, what="CIRCO queries",
                                progress=progress("encode CIRCO queries", len(data)))
    if g_err or q_err:
        raise DataError(f"CIRCO: {len(g_err) + len(q_err)} images cannot be decoded")
    scores = (q @ g.T).astype(np.float64)
    scores[np.arange(len(data)), [col[int(e["reference_img_id"])] for e in data]] = -np.inf
    return data, ids, scores


def evaluate_circo(model: Any, cfg: CircoConfig, out_dir: str | Path | None = None, *,
                   progress: ProgressFactory = no_progress) -> RunResult:
    """Score CIRCO val and (with ``out_dir``) write ``results.json``."""
    if cfg.split != "val":
        raise DataError("CIRCO test has no ground truth: use write_submission")
    data, ids, scores = _scores(model, cfg, progress)
    col = {i: j for j, i in enumerate(ids)}
    gts = [np.array([col[int(i)] for i in dict.fromkeys(e["gt_img_ids"])]) for e in data]
    ap = map_at_ks(scores, gts, KS)
    rec = expected_recall_at_k(scores, np.array([col[int(e["target_img_id"])] for e in data]),
                               KS)
    aspects: dict[str, list[float]] = {}
    for e, row in zip(data, ap[:, KS.index(10)], strict=True):
        for a in e.get("semantic_aspects", []) or []:
            aspects.setdefault(str(a), []).append(float(row))
    metrics = {
        "map": summarize_recalls(ap, KS, seed=cfg.seed, n_resamples=cfg.n_bootstrap),
        "recall": summarize_recalls(rec, KS, seed=cfg.seed + 5, n_resamples=cfg.n_bootstrap),
        "semantic_map_at_10": {a: float(np.mean(v)) for a, v in sorted(aspects.items())},
        "n_queries": len(data), "gallery_size": len(ids),
        "per_query": {"map_at_10": ap[:, KS.index(10)].tolist()},
        "query_ids": [e["id"] for e in data],
    }
    from condsim.results.failures import collect_failures, file_ref

    folder = Path(cfg.root) / "unlabeled2017"
    failures = collect_failures(
        scores, np.array([col[int(e["target_img_id"])] for e in data]),
        query_image=lambda i: file_ref(folder / f"{int(data[i]['reference_img_id']):012d}.jpg"),
        condition=lambda i: str(data[i]["relative_caption"]),
        candidate_image=lambda i, j: file_ref(folder / f"{ids[j]:012d}.jpg"),
        query_ids=[e["id"] for e in data], limit=12)
    res = RunResult(
        benchmark="circo", model=model.meta.to_dict(),
        protocol={**META.to_dict(), "ks": list(KS), "reference_removed": True,
                  "tie_rule": "mAP: ties against the ground truth; recall: expected",
                  "bootstrap": {"n_resamples": cfg.n_bootstrap, "seed": cfg.seed}},
        seed=cfg.seed, headline={"name": "map_at_10", **metrics["map"]["10"]},
        metrics=metrics, extra={"config": asdict(cfg), "failures": failures},
    )
    if out_dir is not None:
        res.save(Path(out_dir) / "results.json")
    return res


def write_submission(model: Any, cfg: CircoConfig, out_dir: str | Path, *,
                     progress: ProgressFactory = no_progress) -> Path:
    """``{"<query id>": [top-50 image ids]}`` for every query (reference excluded)."""
    data, ids, scores = _scores(model, cfg, progress)
    sub = {}
    for i, e in enumerate(data):
        order = np.argsort(-scores[i], kind="stable")[:51]
        sub[str(e["id"])] = [ids[j] for j in order if np.isfinite(scores[i, j])][:50]
    return atomic_write_text(Path(out_dir) / f"circo_{cfg.split}_submission.json",
                             json.dumps(sub))


CircoBenchmark = register_function_benchmark("circo", META, evaluate_circo)
