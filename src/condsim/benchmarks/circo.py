"""CIRCO: composed retrieval with multiple ground truths over COCO unlabeled2017.

mAP@{5,10,25,50} (:func:`condsim.metrics.ap.average_precision_at_k`, normalised by
``min(#gt, K)``; expected value under random tie-breaking), Recall@{5,10,25,50} on
``target_img_id`` (tie-safe expected recall), semantic mAP@10 per aspect. The reference image is
removed from the ranking by default (``remove_reference``; CIRCO's own evaluation scores
whatever predictions it is given, and a reference is never one of its ground truths).
Test: :func:`write_submission` gives ``{"<id>": [top-50 ids]}``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from condsim.benchmarks.base import BenchmarkMeta, register_function_benchmark
from condsim.benchmarks.retrieval import FileDigests, encode_unique, save_run, summarize_recalls
from condsim.cache.store import EmbeddingCache
from condsim.data.crops import ImageRef
from condsim.data.jsonio import load_json
from condsim.errors import DataError
from condsim.io import atomic_write_text
from condsim.metrics.ap import map_at_ks
from condsim.metrics.recall import expected_recall_at_k
from condsim.models.base import require_condition_kind
from condsim.paths import default_cache_dir
from condsim.progress import ProgressFactory, no_progress
from condsim.results.run_result import RunResult

logger = logging.getLogger(__name__)

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
    remove_reference: bool = True
    seed: int = 0
    n_bootstrap: int = 1000
    max_missing: int = 0
    batch_size: int = 64
    num_workers: int = 0
    cache_dir: str | None = None
    query_block: int = 256


def _read(cfg: CircoConfig) -> tuple[list[dict[str, Any]], list[int], dict[str, int]]:
    """Validated queries, the gallery's image ids (sorted) and skip counts. Queries whose
    reference or ground-truth images are not in ``unlabeled2017/`` are skipped when there are
    at most ``max_missing`` such images, else the run fails."""
    path = Path(cfg.root) / "annotations" / f"{cfg.split}.json"
    data = load_json(path, "CIRCO annotation file")
    if not isinstance(data, list) or not data:
        raise DataError(f"{path}: expected a non-empty list")
    need = ["id", "reference_img_id", "relative_caption"]
    if cfg.split == "val":
        need += ["target_img_id", "gt_img_ids"]
    seen: set[str] = set()
    for i, e in enumerate(data):
        missing = [k for k in need if not isinstance(e, dict) or k not in e]
        if missing:
            raise DataError(f"{path} entry {i}: missing key(s) {missing}")
        if str(e["id"]) in seen:
            raise DataError(f"{path} entry {i}: duplicate query id {e['id']!r}")
        seen.add(str(e["id"]))
        try:
            images = [int(v) for v in (e["reference_img_id"], *e.get("gt_img_ids", []))]
        except (TypeError, ValueError) as exc:
            raise DataError(f"{path} entry {i}: image ids must be integers") from exc
        if cfg.split == "val" and int(e["target_img_id"]) not in images[1:]:
            raise DataError(f"{path} entry {i}: target_img_id must be one of gt_img_ids")
    folder = gallery_folder(cfg.root)
    listed = _listed_ids(cfg.root)
    present = {int(p.stem) for p in folder.glob("*.jpg") if p.stem.isdigit()}
    ids = sorted(present if listed is None else set(listed) & present)
    if not ids:
        raise DataError(f"{folder}: no gallery images (%012d.jpg)")
    known = set(ids)
    needed = {int(v) for e in data for v in (e["reference_img_id"], *e.get("gt_img_ids", []))}
    if listed is not None:
        needed |= set(listed)  # the gallery itself is listed: count its missing files too
    absent = sorted(needed - known)
    if len(absent) > cfg.max_missing:
        raise DataError(f"CIRCO {cfg.split}: {len(absent)} referenced image(s) missing from "
                        f"{folder} (allowed: {cfg.max_missing}), e.g. {absent[:3]}; check the "
                        "folder or raise --max-missing")
    kept = [e for e in data
            if all(int(v) in known for v in (e["reference_img_id"], *e.get("gt_img_ids", [])))]
    if not kept:
        raise DataError(f"CIRCO {cfg.split}: every query needs a missing image")
    if absent:
        logger.warning("CIRCO %s: %d missing images; %d queries skipped", cfg.split,
                       len(absent), len(data) - len(kept))
    return kept, ids, {"missing_files": len(absent), "queries": len(data) - len(kept)}


def gallery_folder(root: str | Path) -> Path:
    """``ROOT/unlabeled2017`` or, in the official download layout,
    ``ROOT/COCO2017_unlabeled/unlabeled2017``."""
    root = Path(root)
    for folder in (root / "unlabeled2017", root / "COCO2017_unlabeled" / "unlabeled2017"):
        if folder.is_dir():
            return folder
    raise DataError(f"{root}: no unlabeled2017/ (or COCO2017_unlabeled/unlabeled2017/) folder")


def _listed_ids(root: str | Path) -> list[int] | None:
    """Gallery ids from COCO's ``image_info_unlabeled2017.json`` when it is present (then
    missing gallery files can be counted), else ``None`` (the gallery is the folder)."""
    root = Path(root)
    for path in (root / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json",
                 root / "annotations" / "image_info_unlabeled2017.json"):
        if path.is_file():
            info = load_json(path, "COCO image info file")
            try:
                return [int(img["id"]) for img in info["images"]]
            except (KeyError, TypeError, ValueError) as exc:
                raise DataError(f"{path}: expected {{'images': [{{'id': ...}}, ...]}}") from exc
    return None


@dataclass
class _Encoded:
    data: list[dict[str, Any]]
    ids: list[int]
    queries: np.ndarray  # (Q, D)
    gallery: np.ndarray  # (N, D)
    ref_cols: np.ndarray  # (Q,) gallery column of each query's reference
    skipped: dict[str, int]

    def scores(self, start: int, stop: int, remove_reference: bool) -> np.ndarray:
        """Scores of queries ``start:stop`` against the gallery (float64); the reference
        at ``-inf`` when removed."""
        s = (self.queries[start:stop] @ self.gallery.T).astype(np.float64)
        if remove_reference:
            s[np.arange(stop - start), self.ref_cols[start:stop]] = -np.inf
        return s


def _encode(model: Any, cfg: CircoConfig, progress: ProgressFactory) -> _Encoded:
    require_condition_kind(model, "text", "CIRCO")
    data, ids, skipped = _read(cfg)
    folder = gallery_folder(cfg.root)
    refs = [ImageRef(str(folder / f"{i:012d}.jpg")) for i in ids]
    cache = EmbeddingCache(cfg.cache_dir or default_cache_dir(), model.meta)
    digests = FileDigests()
    enc = {"batch_size": cfg.batch_size, "num_workers": cfg.num_workers}
    g, g_err, _ = encode_unique(model, cache, refs, digests,
                                progress=progress("encode CIRCO gallery", len(refs)),
                                what="CIRCO gallery", **enc)
    col = {i: j for j, i in enumerate(ids)}
    ref_cols = np.array([col[int(e["reference_img_id"])] for e in data])
    q, q_err, _ = encode_unique(model, cache, [refs[c] for c in ref_cols], digests,
                                [str(e["relative_caption"]) for e in data], what="CIRCO queries",
                                progress=progress("encode CIRCO queries", len(data)), **enc)
    if g_err or q_err:
        raise DataError(f"CIRCO: {len(g_err) + len(q_err)} images cannot be decoded; first: "
                        f"{next(iter({**g_err, **q_err}.values()))}")
    return _Encoded(data, ids, q, g, ref_cols, skipped)


def evaluate_circo(model: Any, cfg: CircoConfig, out_dir: str | Path | None = None, *,
                   progress: ProgressFactory = no_progress) -> RunResult:
    """Score CIRCO val and (with ``out_dir``) write ``results.json``."""
    if cfg.split != "val":
        raise DataError("CIRCO test has no ground truth: use write_submission")
    enc = _encode(model, cfg, progress)
    data, ids = enc.data, enc.ids
    scores = enc.scores(0, len(data), cfg.remove_reference)
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

    folder = gallery_folder(cfg.root)
    failures = collect_failures(
        scores, np.array([col[int(e["target_img_id"])] for e in data]),
        query_image=lambda i: file_ref(folder / f"{int(data[i]['reference_img_id']):012d}.jpg"),
        condition=lambda i: str(data[i]["relative_caption"]),
        candidate_image=lambda i, j: file_ref(folder / f"{ids[j]:012d}.jpg"),
        query_ids=[e["id"] for e in data], limit=12)
    res = RunResult(
        benchmark="circo", model=model.meta.to_dict(),
        protocol={**META.to_dict(), "ks": list(KS), "reference_removed": cfg.remove_reference,
                  "tie_rule": "expected mAP and recall under random tie-breaking",
                  "bootstrap": {"n_resamples": cfg.n_bootstrap, "seed": cfg.seed}},
        seed=cfg.seed, headline={"name": "map_at_10", **metrics["map"]["10"]},
        metrics=metrics, skipped=enc.skipped, extra={"config": asdict(cfg), "failures": failures},
    )
    save_run(res, out_dir)
    return res


def write_submission(model: Any, cfg: CircoConfig, out_dir: str | Path, *,
                     progress: ProgressFactory = no_progress) -> Path:
    """``{"<query id>": [top-50 image ids]}`` for every query (reference excluded unless
    ``remove_reference`` is off), scored in blocks of ``query_block`` queries."""
    enc = _encode(model, cfg, progress)
    if enc.skipped["queries"]:
        logger.warning("CIRCO %s submission: %d queries skipped (missing images); the server "
                       "expects every query id", cfg.split, enc.skipped["queries"])
    sub = {}
    for start in range(0, len(enc.data), cfg.query_block):
        stop = min(len(enc.data), start + cfg.query_block)
        scores = enc.scores(start, stop, cfg.remove_reference)
        for i in range(stop - start):
            order = np.argsort(-scores[i], kind="stable")[:51]
            sub[str(enc.data[start + i]["id"])] = [
                enc.ids[j] for j in order if np.isfinite(scores[i, j])][:50]
    return atomic_write_text(Path(out_dir) / f"circo_{cfg.split}_submission.json",
                             json.dumps(sub))


CircoBenchmark = register_function_benchmark("circo", META, evaluate_circo)
