"""CIRR (composed image retrieval on real-life images).

Val: global Recall@{1,5,10,50} over every image of the split with the reference image
removed from the ranking (the reference code sets its score to -1e5; here it is excluded),
and Recall_subset@{1,2,3} over the query's ``img_set`` members minus the reference. Both are
tie-safe expected recalls (:func:`condsim.metrics.recall.recall_from_counts`). Test: labels
are hidden; :func:`write_submissions` writes the two server files (top-50 / top-3 names).
"""

from __future__ import annotations

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
from condsim.benchmarks.spec import BenchmarkSpec, Pairing, SharedOptions, option
from condsim.data.cirr import read_cirr
from condsim.distributed import is_main_process
from condsim.errors import DataError
from condsim.io import atomic_write_text
from condsim.metrics.recall import recall_from_counts
from condsim.models.base import require_condition_kind
from condsim.progress import ProgressFactory, no_progress
from condsim.registry import register_benchmark
from condsim.results.run_result import RunResult
from condsim.search.blockwise import rank_candidates

logger = logging.getLogger(__name__)

KS = (1, 5, 10, 50)
SUBSET_KS = (1, 2, 3)


@dataclass(frozen=True, kw_only=True)
class CirrConfig(SharedOptions):
    root: str = option(path="dir", help="CIRR folder (captions/, image_splits/, img_raw/).")
    split: str = option("val", choices=("val", "test1"),
                        help="val (scored) | test1 (hidden labels: writes the two submission "
                        "files to --out).")
    img_root: str | None = option(None, path="dir", help="Image folder (default ROOT/img_raw).")


def read_split(cfg: CirrConfig) -> tuple[CIRSplit, list[Any]]:
    """The split as a :class:`CIRSplit` (target relevant, reference excluded, subset members
    needed) and the CIRR queries in the same order."""
    queries, gallery = read_cirr(cfg.root, cfg.split, cfg.img_root)
    names = list(gallery)
    col = {n: i for i, n in enumerate(names)}
    labelled = cfg.split != "test1"
    for q in queries:
        if labelled and q.target == q.reference:
            raise DataError(f"CIRR pairid {q.pairid}: target equals its reference")
        if labelled and q.target not in q.members:
            raise DataError(f"CIRR pairid {q.pairid}: target not among img_set members")
    split = CIRSplit(
        label=f"CIRR {cfg.split}", gallery=[gallery[n] for n in names],
        queries=[gallery[q.reference] for q in queries],
        conditions=[q.caption for q in queries], query_ids=[q.pairid for q in queries],
        # test1 has no target: rank against the reference's column only for submissions
        relevant=[[col[q.target]] if labelled else [col[q.reference]] for q in queries],
        excluded=[[col[q.reference]] if labelled else [] for q in queries],
        needs=[[col[m] for m in q.members] + [col[q.reference]] for q in queries],
        extra={"names": names, "col": col},
    )
    return split, queries


def _encoded(model: Any, cfg: CirrConfig, progress: ProgressFactory) -> tuple[Any, Any, Any]:
    require_condition_kind(model, "text", "CIRR")
    split, queries = read_split(cfg)
    cache = open_cache(model, cfg)
    budget = MissingBudget(cfg.max_missing)
    enc = encode_split(model, cache, split, cfg, budget, progress)
    return enc, budget, cache


def evaluate(model: Any, cfg: CirrConfig, *, progress: ProgressFactory = no_progress
             ) -> RunResult:
    """Score CIRR val (see the module docstring)."""
    if cfg.split == "test1":
        raise DataError("CIRR test1 has no labels: use write_submissions / "
                        "`condsim eval cirr --split test1 --out DIR`")
    enc, budget, cache = _encoded(model, cfg, progress)
    split = enc.split
    ranks = rank_split(enc, cfg, progress=progress)
    glob = recall_from_counts(ranks.greater[:, 0], ranks.ties[:, 0], KS)
    # subset: the members minus the reference, scored by the same row-dot rule
    members, target_pos = [], []
    for i, needs in enumerate(split.needs or []):
        ref = needs[-1]
        cands = [c for c in dict.fromkeys(needs[:-1]) if c != ref]
        members.append(cands)
        target_pos.append([cands.index(split.relevant[i][0])])
    _, sub = rank_candidates(enc.queries, enc.gallery, members, target_pos, device=cfg.device)
    subset = recall_from_counts(sub.greater[:, 0], sub.ties[:, 0], SUBSET_KS)
    per_query = {"recall": (glob, KS), "recall_subset": (subset, SUBSET_KS)}
    metrics: dict[str, Any] = {
        **summarize(per_query, seed=cfg.seed, n_resamples=cfg.n_bootstrap,
                    offsets={"recall_subset": 7}),
        "n_queries": len(split.queries), "gallery_size": enc.gallery_size,
        **per_query_block({"recall": (glob[:, :1], KS[:1])}, split.query_ids),
    }
    if cfg.condition_test:  # the headline's per-query values: expected R@1
        metrics["condition_reliance"] = reliance_metrics({"": condition_runs_split(
            model, cache, enc, ranks, cfg, progress,
            lambda r: recall_from_counts(r.greater[:, 0], r.ties[:, 0], KS[:1])[:, 0])},
            cfg, metric=SPEC.main_score)
    return make_result(
        SPEC, model, cfg, metrics,
        protocol={"ks": list(KS), "subset_ks": list(SUBSET_KS), "reference_removed": True,
                  "tie_rule": "expected recall"},
        skipped={**budget.counts(), "queries": enc.skipped_queries},
        failures=failure_cases(split, ranks), cache=cache)


def write_submissions(model: Any, cfg: CirrConfig, out_dir: str | Path, *,
                      progress: ProgressFactory = no_progress) -> dict[str, Path]:
    """The test server's two files: ``{"version": "rc2", "metric": "recall", "<pairid>":
    [top-50 names]}`` and the ``recall_subset`` file with the top-3 members (reference
    excluded from both), every ranking by the row-dot rule. Returns their paths on every
    rank; under ``torchrun`` only rank 0 writes them."""
    enc, _, _ = _encoded(model, cfg, progress)
    split = enc.split
    if enc.skipped_queries:
        logger.warning("CIRR %s submission: %d queries skipped (missing images); the server "
                       "expects every pairid", cfg.split, enc.skipped_queries)
    names = split.extra["names"]
    # the stand-in relevant item of test1 is the reference: never a candidate
    tops = top_candidates(enc, cfg, 50, include_relevant=cfg.split != "test1",
                          progress=progress)
    refs = [needs[-1] for needs in (split.needs or [])]
    members = [[c for c in dict.fromkeys(needs[:-1]) if c != ref]
               for needs, ref in zip(split.needs or [], refs, strict=True)]
    scores, _ = rank_candidates(enc.queries, enc.gallery, members, [[0]] * len(members),
                                device=cfg.device)
    recall: dict[str, Any] = {"version": "rc2", "metric": "recall"}
    subset: dict[str, Any] = {"version": "rc2", "metric": "recall_subset"}
    for i, qid in enumerate(split.query_ids):
        recall[str(qid)] = [names[c] for c in tops[i]]
        order = np.argsort(-scores[i, : len(members[i])], kind="stable")[:3]
        subset[str(qid)] = [names[members[i][j]] for j in order]
    out = Path(out_dir)
    files = {"recall": (out / f"cirr_{cfg.split}_recall.json", recall),
             "recall_subset": (out / f"cirr_{cfg.split}_recall_subset.json", subset)}
    if is_main_process():  # every rank ranked the same split: rank 0 alone writes
        for path, content in files.values():
            atomic_write_text(path, json.dumps(content))
    return {kind: path for kind, (path, _) in files.items()}


# Official counts, counted in the published annotation files: https://github.com/
# Cuberick-Orion/CIRR (branch cirr_dataset, commit 910278c29d2a5602eae0119d6af906c3bae366bc
# "upload cirr_rc2"): captions/cap.rc2.val.json 4,181 queries, image_splits/split.rc2.val.json
# 2,297 images; captions/cap.rc2.test1.json 4,148 queries, image_splits/split.rc2.test1.json
# 2,315 images.
OFFICIAL_QUERIES = {"val": 4181, "test1": 4148}
OFFICIAL_IMAGES = {"val": 2297, "test1": 2315}
_ANNOTATIONS_SOURCE = ("git clone -b cirr_dataset https://github.com/Cuberick-Orion/CIRR "
                       "(file {file})")
_IMAGES_SOURCE = ("NLVR2 raw images: fill in the NLVR team's form (https://github.com/"
                  "lil-lab/nlvr/tree/master/nlvr2#direct-image-download), then unzip into "
                  "img_raw/ (CIRR README, 'Raw Images')")


def _check(cfg: CirrConfig, progress: ProgressFactory = no_progress) -> Any:
    """The split's official files, query and image counts, duplicate pairids and image
    names, and every image of the split decoded (``condsim data check cirr``)."""
    from condsim.benchmarks.datacheck import (
        DataReport,
        duplicate_values,
        file_items,
        json_keys_twice,
        read_or_report,
        report_images,
        require_file,
    )
    from condsim.data.jsonio import load_json

    report = DataReport("cirr", cfg.to_dict())
    root = Path(cfg.root)
    split_file = root / "image_splits" / f"split.rc2.{cfg.split}.json"
    cap_file = root / "captions" / f"cap.rc2.{cfg.split}.json"
    sources = {p: _ANNOTATIONS_SOURCE.format(file=p.relative_to(root))
               for p in (split_file, cap_file)}
    present = [require_file(report, p, "CIRR annotation file", sources[p])
               for p in (split_file, cap_file)]
    if present[0]:
        for name in json_keys_twice(split_file):
            report.issue("duplicate", f"{split_file} image {name!r}", "image name listed twice "
                         "(the reader refuses it)", sources[split_file], blocking=True)
    data = None
    if present[1]:
        data = read_or_report(report, str(cap_file), sources[cap_file],
                              lambda: load_json(cap_file, "CIRR file"))
        if isinstance(data, list):
            ids = [e.get("pairid") if isinstance(e, dict) else None for e in data]
            for pid, pos in duplicate_values([i for i in ids if i is not None]).items():
                report.issue("duplicate", f"{cap_file} entries {pos}", f"pairid {pid} "
                             f"repeated {len(pos)} times (the reader refuses it)",
                             sources[cap_file], blocking=True)
    src = "https://github.com/Cuberick-Orion/CIRR (commit 910278c) {}"
    read = None
    if all(present) and not report.issues:
        read = read_or_report(report, f"CIRR {cfg.split}", sources[cap_file],
                              lambda: read_cirr(cfg.root, cfg.split, cfg.img_root))
    if read is None:
        report.count(f"{cfg.split} queries", len(data) if isinstance(data, list) else None,
                     OFFICIAL_QUERIES[cfg.split], src.format(cap_file.relative_to(root)),
                     note="entries in the file; the reader stopped")
        names = read_or_report(report, str(split_file), sources[split_file],
                               lambda: load_json(split_file, "CIRR file")) \
            if present[0] else None
        if not isinstance(names, dict):
            return report
        # the images can still be checked: the split file's paths, as read_cirr builds them
        images_dir = Path(cfg.img_root) if cfg.img_root else root / "img_raw"
        paths = [str(images_dir / str(rel).lstrip("./")) for rel in names.values()]
    else:
        queries, gallery = read
        report.count(f"{cfg.split} queries", len(queries), OFFICIAL_QUERIES[cfg.split],
                     src.format(cap_file.relative_to(root)))
        paths = [ref.path for ref in gallery.values()]
    report.count(f"{cfg.split} images", len(set(paths)), OFFICIAL_IMAGES[cfg.split],
                 src.format(split_file.relative_to(root)))
    items = file_items(paths)
    report_images(report, items, cfg, progress, what=f"CIRR {cfg.split} images",
                  source=_IMAGES_SOURCE)
    return report


def _synthetic(out: Path, seed: int) -> dict[str, Any]:
    from condsim.synthetic.cirr import write_cirr

    return {"root": str(write_cirr(out, n_queries=40, n_train=20, seed=seed))}


def _chance(result: RunResult) -> float:
    """R@1 of a constant model: every other image ties, ``1 / (gallery size - 1)``."""
    return 1.0 / (result.metrics["gallery_size"] - 1)


SPEC = register_benchmark(BenchmarkSpec(
    name="cirr", description="CIRR val: global recall (reference removed) and R_subset",
    main_score="recall_at_1", split="val", protocol_version="1",
    reference="https://github.com/Cuberick-Orion/CIRR",
    dataset_type="Cuberick-Orion/CIRR", dataset_name="CIRR",
    config=CirrConfig, evaluate=evaluate, synthetic=_synthetic,
    pairing=Pairing("queries", "R@1", "recall_at_1"),
    submit=write_submissions, submit_splits=("test1",), chance=_chance, check=_check,
))
