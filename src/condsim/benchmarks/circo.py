"""CIRCO: composed retrieval with multiple ground truths over COCO unlabeled2017.

mAP@{5,10,25,50} (:func:`condsim.metrics.ap.average_precision_at_k`, normalised by
``min(#gt, K)``; expected value under random tie-breaking), Recall@{5,10,25,50} on
``target_img_id`` (tie-safe expected recall), semantic mAP@10 per aspect. The reference image is
removed from the ranking by default (``remove_reference``; CIRCO's own evaluation scores
whatever predictions it is given, and a reference is never one of its ground truths).
Test: :func:`write_submission` gives ``{"<id>": [top-50 ids]}``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from condsim.benchmarks.protocol import (
    CIRSplit,
    MissingBudget,
    condition_runs_split,
    encode_split,
    failure_cases,
    make_result,
    open_cache,
    per_query_block,
    rank_split,
    reliance_metrics,
    summarize,
    top_candidates,
)
from condsim.benchmarks.spec import (
    BenchmarkSpec,
    Pairing,
    SharedOptions,
    option,
)
from condsim.data.crops import ImageRef
from condsim.data.jsonio import load_json
from condsim.distributed import is_main_process
from condsim.errors import DataError
from condsim.io import atomic_write_text
from condsim.metrics.ap import expected_ap_from_ranks
from condsim.metrics.recall import recall_from_counts
from condsim.models.base import require_condition_kind
from condsim.progress import ProgressFactory, no_progress
from condsim.registry import register_benchmark
from condsim.results.run_result import RunResult

logger = logging.getLogger(__name__)

KS = (5, 10, 25, 50)


@dataclass(frozen=True, kw_only=True)
class CircoConfig(SharedOptions):
    root: str = option(path="dir", help="Folder with annotations/{val,test}.json and "
                       "unlabeled2017/ (or COCO2017_unlabeled/unlabeled2017/).")
    split: str = option("val", choices=("val", "test"),
                        help="val (scored) | test (writes the top-50 submission to --out).")
    remove_reference: bool = option(True, off_flag="--keep-reference",
                                    help="Remove the reference image from its ranking.")
    query_block: int = option(1024, ge=1, help="Queries scored together (memory: "
                              "query_block x gallery_block scores).")
    gallery_block: int = option(8192, ge=1, help="Gallery rows read at a time.")


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


def read_split(cfg: CircoConfig) -> CIRSplit:
    """CIRCO as a :class:`CIRSplit`: relevant = the ground truths (``target_img_id`` first),
    the reference excluded when ``remove_reference``. On test, the reference stands in as
    the (unused) relevant item."""
    data, ids, skipped = _read(cfg)
    folder = gallery_folder(cfg.root)
    col = {i: j for j, i in enumerate(ids)}
    labelled = cfg.split == "val"
    relevant, excluded = [], []
    for e in data:
        ref = col[int(e["reference_img_id"])]
        if labelled:
            gts = [int(e["target_img_id"])] + [int(i) for i in e["gt_img_ids"]]
            rel = [col[i] for i in dict.fromkeys(gts)]
            if ref in rel and cfg.remove_reference:
                raise DataError(f"CIRCO query {e['id']}: its reference is a ground truth")
        else:
            rel = [ref]
        relevant.append(rel)
        excluded.append([ref] if cfg.remove_reference and labelled else [])
    return CIRSplit(
        label=f"CIRCO {cfg.split}",
        gallery=[ImageRef(str(folder / f"{i:012d}.jpg")) for i in ids],
        queries=[ImageRef(str(folder / f"{int(e['reference_img_id']):012d}.jpg")) for e in data],
        conditions=[str(e["relative_caption"]) for e in data],
        query_ids=[e["id"] for e in data], relevant=relevant, excluded=excluded,
        extra={"ids": ids, "aspects": [e.get("semantic_aspects") or [] for e in data],
               "read_skipped": skipped, "refs": [col[int(e["reference_img_id"])] for e in data]},
    )


def _encoded(model: Any, cfg: CircoConfig, progress: ProgressFactory) -> tuple[Any, Any, Any]:
    require_condition_kind(model, "text", "CIRCO")
    split = read_split(cfg)
    cache = open_cache(model, cfg)
    budget = MissingBudget(max(0, cfg.max_missing - split.extra["read_skipped"]
                               ["missing_files"]))
    return encode_split(model, cache, split, cfg, budget, progress), budget, cache


def _ap(ranks: Any) -> np.ndarray:
    """Per-query expected AP@K ``(Q, len(KS))`` over each query's ground truths."""
    ap = np.zeros((ranks.scores.shape[0], len(KS)))
    for q in range(ap.shape[0]):
        n = int(ranks.n_relevant[q])
        ap[q] = expected_ap_from_ranks(ranks.scores[q, :n], ranks.greater[q, :n],
                                       ranks.ties[q, :n], n, KS)
    return ap


def evaluate(model: Any, cfg: CircoConfig, *, progress: ProgressFactory = no_progress
             ) -> RunResult:
    """Score CIRCO val (module docstring)."""
    if cfg.split != "val":
        raise DataError("CIRCO test has no ground truth: use write_submission / "
                        "`condsim eval circo --split test --out DIR`")
    enc, budget, cache = _encoded(model, cfg, progress)
    split = enc.split
    ranks = rank_split(enc, cfg, progress=progress)
    ap = _ap(ranks)
    g, t = ranks.target_counts(np.zeros(len(split.queries), np.int64))
    rec = recall_from_counts(g, t, KS)
    aspects: dict[str, list[float]] = {}
    for names, row in zip(split.extra["aspects"], ap[:, KS.index(10)], strict=True):
        for a in names:
            aspects.setdefault(str(a), []).append(float(row))
    per_query = {"map": (ap, KS), "recall": (rec, KS)}
    read_skipped = split.extra["read_skipped"]
    metrics = {
        **summarize(per_query, seed=cfg.seed, n_resamples=cfg.n_bootstrap),
        "semantic_map_at_10": {a: float(np.mean(v)) for a, v in sorted(aspects.items())},
        "n_queries": len(split.queries), "gallery_size": enc.gallery_size,
        **per_query_block({"map": (ap[:, 1:2], KS[1:2])}, split.query_ids),
    }
    if cfg.condition_test:  # the headline's per-query values: expected AP@10
        metrics["condition_reliance"] = reliance_metrics({"": condition_runs_split(
            model, cache, enc, ranks, cfg, progress, lambda r: _ap(r)[:, KS.index(10)])},
            cfg, metric=SPEC.main_score)
    counts = budget.counts()
    counts["missing_files"] += read_skipped["missing_files"]
    return make_result(
        SPEC, model, cfg, metrics,
        protocol={"ks": list(KS), "reference_removed": cfg.remove_reference,
                  "tie_rule": "expected mAP and recall under random tie-breaking"},
        skipped={**counts, "queries": read_skipped["queries"] + enc.skipped_queries},
        failures=failure_cases(split, ranks), cache=cache,
        extra={"n_ground_truths": ranks.n_relevant.tolist()})


def write_submission(model: Any, cfg: CircoConfig, out_dir: str | Path, *,
                     progress: ProgressFactory = no_progress) -> Path:
    """``{"<query id>": [top-50 image ids]}`` for every query (reference excluded unless
    ``remove_reference`` is off), ranked by the row-dot rule ``query_block`` queries at a
    time. Returns its path on every rank; under ``torchrun`` only rank 0 writes it."""
    enc, _, _ = _encoded(model, cfg, progress)
    split = enc.split
    if enc.skipped_queries or split.extra["read_skipped"]["queries"]:
        logger.warning("CIRCO %s submission: queries skipped (missing images); the server "
                       "expects every query id", cfg.split)
    ids = split.extra["ids"]
    tops = top_candidates(enc, cfg, 50, include_relevant=cfg.split == "val" or not
                          cfg.remove_reference,
                          progress=progress)
    sub = {str(qid): [ids[c] for c in cols] for qid, cols in zip(split.query_ids, tops,
                                                                    strict=True)}
    path = Path(out_dir) / f"circo_{cfg.split}_submission.json"
    if is_main_process():  # every rank ranked the same split: rank 0 alone writes
        atomic_write_text(path, json.dumps(sub))
    return path


# Official counts, counted in https://github.com/miccunifi/CIRCO (commit 267b5c9)
# annotations/val.json (220 queries) and annotations/test.json (800 queries); its README:
# "CIRCO comprises a total of 1020 queries, randomly divided into 220 and 800 for the
# validation and test set". The gallery is COCO 2017 unlabeled: the official image list is
# COCO's image_info_unlabeled2017.json (when present, its length is the expected gallery);
# the figure 123,403 of our protocol notes could not be verified here (COCO: "123K").
OFFICIAL_QUERIES = {"val": 220, "test": 800}
_ANNOTATIONS_SOURCE = "https://github.com/miccunifi/CIRCO (file annotations/{split}.json)"
_IMAGES_SOURCE = ("COCO 2017 unlabeled images: http://images.cocodataset.org/zips/"
                  "unlabeled2017.zip (+ annotations/image_info_unlabeled2017.zip), unzipped "
                  "into COCO2017_unlabeled/ (CIRCO README, 'Images')")


def _check(cfg: CircoConfig, progress: ProgressFactory = no_progress) -> Any:
    """The split's annotation file, query count, duplicate query ids, every referenced and
    gallery image present and decodable (``condsim data check circo``)."""
    from condsim.benchmarks.datacheck import (
        DataReport,
        duplicate_values,
        file_items,
        read_or_report,
        report_images,
        require_file,
    )

    report = DataReport("circo", cfg.to_dict())
    path = Path(cfg.root) / "annotations" / f"{cfg.split}.json"
    source = _ANNOTATIONS_SOURCE.format(split=cfg.split)
    count_src = f"https://github.com/miccunifi/CIRCO (commit 267b5c9) annotations/{cfg.split}.json"
    if not require_file(report, path, "CIRCO annotation file", source):
        report.count(f"{cfg.split} queries", None, OFFICIAL_QUERIES[cfg.split], count_src)
        return report
    data = read_or_report(report, str(path), source,
                          lambda: load_json(path, "CIRCO annotation file"))
    if isinstance(data, list):
        ids = [str(e["id"]) for e in data if isinstance(e, dict) and "id" in e]
        for qid, pos in duplicate_values(ids).items():
            report.issue("duplicate", f"{path} entries {pos}", f"query id {qid} repeated "
                         f"{len(pos)} times (the reader refuses it)", source, blocking=True)
    report.count(f"{cfg.split} queries", len(data) if isinstance(data, list) else None,
                 OFFICIAL_QUERIES[cfg.split], count_src)
    folder = read_or_report(report, str(Path(cfg.root) / "unlabeled2017"), _IMAGES_SOURCE,
                            lambda: gallery_folder(cfg.root))
    if report.issues or folder is None:
        return report
    everything = dataclasses.replace(cfg, max_missing=2**62)
    read = read_or_report(report, str(path), source, lambda: _read(everything))
    listed = read_or_report(report, "image_info_unlabeled2017.json", _IMAGES_SOURCE,
                            lambda: _listed_ids(cfg.root))
    if read is None:
        return report
    data, ids, _ = read
    report.count("gallery images (unlabeled2017)", len(ids),
                 None if listed is None else len(set(listed)),
                 "not verified: no image_info_unlabeled2017.json next to the images (COCO "
                 "publishes about 123K unlabeled images)" if listed is None else
                 "COCO image_info_unlabeled2017.json")
    present = {int(p.stem) for p in folder.glob("*.jpg") if p.stem.isdigit()}
    needed = {int(v) for e in data for v in (e["reference_img_id"], *e.get("gt_img_ids", []))}
    needed |= set(listed or [])
    names = [str(folder / f"{i:012d}.jpg") for i in sorted(needed - present)] + \
        [str(folder / f"{i:012d}.jpg") for i in ids]
    items = file_items(names)
    report_images(report, items, cfg, progress, what=f"CIRCO {cfg.split} images",
                  source=_IMAGES_SOURCE)
    return report


def _synthetic(out: Path, seed: int) -> dict[str, Any]:
    from condsim.synthetic.circo import write_circo

    return {"root": str(write_circo(out, n_queries=30, seed=seed))}


def _chance(result: RunResult) -> float:
    """mAP@10 of a constant model: every candidate ties, so each of the ``n`` gallery items
    (reference removed) is at each position with probability ``1/n``; a query with ``R``
    ground truths has ``E[rel_i R_i] = (R/n) (1 + (i-1)(R-1)/(n-1))`` at position ``i``, and
    ``E[AP@10] = sum_{i<=10} E[rel_i R_i] / i / min(R, 10)``."""
    n = result.metrics["gallery_size"] - (1 if result.protocol["reference_removed"] else 0)
    aps = []
    for r in result.extra["n_ground_truths"]:
        total = sum((r / n) * (1 + (i - 1) * (r - 1) / (n - 1)) / i for i in range(1, 11))
        aps.append(total / min(r, 10))
    return float(np.mean(aps))


SPEC = register_benchmark(BenchmarkSpec(
    name="circo", description="CIRCO val: mAP@K with multiple ground truths",
    main_score="map_at_10", split="val", protocol_version="1",
    reference="https://github.com/miccunifi/CIRCO",
    dataset_type="miccunifi/CIRCO", dataset_name="CIRCO",
    config=CircoConfig, evaluate=evaluate, synthetic=_synthetic,
    pairing=Pairing("queries", "mAP@10", "map_at_10"),
    submit=write_submission, submit_splits=("test",), chance=_chance, check=_check,
))
