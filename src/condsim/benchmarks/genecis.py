"""GeneCIS: zero-shot conditional similarity, four tasks of per-query galleries.

Per query: reference image + text condition vs 1 target + gallery distractors (15 candidates
for the object tasks). Metric: tie-safe expected R@1/2/3 per task
(:func:`condsim.metrics.expected_recall_at_k`: never depends on where the target sits; the
reference code put it first and sorted unstably, so ties favoured it), seeded bootstrap CIs
over queries, headline = average R@1 over the tasks. Every unique (image, crop) is encoded
once across all queries and tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from condsim.benchmarks.base import BenchmarkMeta
from condsim.benchmarks.retrieval import (
    EncodeCounts,
    FileDigests,
    average_ci,
    check_files,
    encode_unique,
    ref_keys,
    save_run,
    summarize_recalls,
)
from condsim.cache.store import EmbeddingCache
from condsim.data.crops import CROP_MODES
from condsim.data.genecis import (
    DUPLICATE_POLICIES,
    TASKS,
    GenecisQuery,
    ImageLocator,
    check_boxes,
    read_task,
)
from condsim.errors import CondsimError, DataError
from condsim.metrics.recall import expected_recall_at_k
from condsim.models.base import require_condition_kind
from condsim.paths import default_cache_dir
from condsim.progress import ProgressFactory, no_progress
from condsim.registry import register_benchmark
from condsim.results.run_result import RunResult

logger = logging.getLogger(__name__)

KS = (1, 2, 3)
META = BenchmarkMeta(
    name="genecis",
    description="GeneCIS v0: focus/change x attribute/object conditional retrieval",
    main_score="average_recall_at_1",
    split="test",
    protocol_version="1",
    reference="https://github.com/facebookresearch/genecis",
)


@dataclass
class GenecisConfig:
    annotations: str
    coco_root: str | None = None
    vg_roots: tuple[str, ...] = ()
    tasks: tuple[str, ...] = TASKS
    crop: str = "official"
    seed: int = 0
    n_bootstrap: int = 1000
    max_missing: int = 0
    max_bad_boxes: int = 0
    on_duplicate: str = "drop"
    batch_size: int = 64
    num_workers: int = 0
    cache_dir: str | None = None


def _task_file(root: Path, task: str) -> Path:
    for name in (f"{task}.json", f"genecis_{task}.json"):
        if (root / name).is_file():
            return root / name
    return root / f"{task}.json"


class GenecisBenchmark:
    meta = META

    def __init__(self, cfg: GenecisConfig) -> None:
        bad = [t for t in cfg.tasks if t not in TASKS]
        if bad or not cfg.tasks:
            raise CondsimError(f"unknown task(s) {bad}; tasks: {', '.join(TASKS)}")
        if cfg.crop not in CROP_MODES:
            raise CondsimError(f"--crop must be one of {CROP_MODES}, got {cfg.crop!r}")
        if cfg.on_duplicate not in DUPLICATE_POLICIES:
            raise CondsimError(f"on_duplicate must be one of {DUPLICATE_POLICIES}")
        self.cfg = cfg

    def files(self) -> dict[str, Path]:
        """Annotation file of each configured task."""
        root = Path(self.cfg.annotations)
        return {t: _task_file(root, t) for t in self.cfg.tasks}

    def load(self) -> dict[str, list[GenecisQuery]]:
        loc = ImageLocator(self.cfg.coco_root, self.cfg.vg_roots)
        return {t: read_task(f, t, loc, self.cfg.crop, self.cfg.on_duplicate)
                for t, f in self.files().items()}

    def run(self, model: Any, *, progress: ProgressFactory = no_progress) -> RunResult:
        cfg = self.cfg
        require_condition_kind(model, "text", "GeneCIS")
        tasks = self.load()
        refs = [r for qs in tasks.values() for q in qs for r in (q.reference, *q.candidates)]
        missing = check_files(refs, cfg.max_missing, "GeneCIS")
        skipped: dict[str, Any] = {
            "missing_files": len(missing), "queries": {},
            "duplicate_candidates": {t: sum(q.dropped for q in qs) for t, qs in tasks.items()},
        }
        for task, qs in tasks.items():
            keep = [q for q in qs if not ({q.reference.path, *(c.path for c in q.candidates)}
                                          & missing)]
            skipped["queries"][task] = len(qs) - len(keep)
            if not keep:
                raise DataError(f"GeneCIS {task}: every query has a missing image")
            tasks[task] = keep
        box_counts, bad_boxes = check_boxes(self.files(), tasks, cfg.max_bad_boxes)
        skipped.update(box_counts)
        if bad_boxes:
            for task, qs in tasks.items():
                keep = [q for q in qs if not bad_boxes.intersection((q.reference, *q.candidates))]
                skipped["queries"][task] += len(qs) - len(keep)
                if not keep:
                    raise DataError(f"GeneCIS {task}: every query has a box outside its image")
                tasks[task] = keep

        cache = EmbeddingCache(cfg.cache_dir or default_cache_dir(), model.meta)
        digests = FileDigests()
        cand_refs = list(dict.fromkeys(c for qs in tasks.values() for q in qs
                                       for c in q.candidates))
        query_pairs = list(dict.fromkeys((q.reference, q.condition)
                                         for qs in tasks.values() for q in qs))
        # image-encoder passes: a model composing queries from target embeddings runs the
        # image tower once per unique image (candidates and references together)
        composes = bool(getattr(model, "composes_from_targets", False))
        images = list(dict.fromkeys([*cand_refs, *(r for r, _ in query_pairs)]))
        new_images = int((cache.lookup(ref_keys(images, digests)) < 0).sum())
        counts = EncodeCounts(
            per_query_loop=sum(1 + len(q.candidates) for qs in tasks.values() for q in qs),
            unique_items=len(images) if composes else len(cand_refs) + len(query_pairs),
        )
        enc = {"batch_size": cfg.batch_size, "num_workers": cfg.num_workers}
        cand_emb, cand_err, n1 = encode_unique(
            model, cache, cand_refs, digests,
            progress=progress("encode gallery images", len(cand_refs)), what="GeneCIS gallery",
            **enc,
        )
        q_emb, q_err, n2 = encode_unique(
            model, cache, [r for r, _ in query_pairs], digests, [c for _, c in query_pairs],
            progress=progress("encode queries", len(query_pairs)), what="GeneCIS queries", **enc,
        )
        counts.encoded_now = new_images if composes else n1 + n2
        if cand_err or q_err:
            tasks = self._drop_undecodable(tasks, skipped, len(missing),
                                           {cand_refs[i] for i in cand_err},
                                           {query_pairs[i] for i in q_err},
                                           next(iter({**cand_err, **q_err}.values())))
        logger.info(
            "GeneCIS encoder passes: %d per-query loop vs %d unique (%.1fx fewer); %d encoded now",
            counts.per_query_loop, counts.unique_items, counts.ratio, counts.encoded_now,
        )
        cand_index = {r: i for i, r in enumerate(cand_refs)}
        query_index = {p: i for i, p in enumerate(query_pairs)}

        metrics: dict[str, Any] = {"tasks": {}}
        failures: list[dict[str, Any]] = []
        r1_columns = []
        for ti, (task, qs) in enumerate(tasks.items()):
            g = max(len(q.candidates) for q in qs)
            scores = np.full((len(qs), g), -np.inf)
            for i, q in enumerate(qs):
                rows = [cand_index[c] for c in q.candidates]
                scores[i, : len(rows)] = cand_emb[rows] @ q_emb[query_index[(q.reference,
                                                                           q.condition)]]
            per_query = expected_recall_at_k(scores, np.zeros(len(qs), int), KS)
            failures += _failures(task, qs, scores, per_query[:, 0])
            metrics["tasks"][task] = {
                "n_queries": len(qs),
                "gallery_size": g,
                "chance_recall_at_1": float(np.mean([1 / len(q.candidates) for q in qs])),
                "recall": summarize_recalls(per_query, KS, seed=cfg.seed + 1000 * ti,
                                            n_resamples=cfg.n_bootstrap),
                "per_query": {str(k): per_query[:, j].tolist() for j, k in enumerate(KS)},
                "query_ids": [q.index for q in qs],
            }
            r1_columns.append(per_query[:, 0])
        avg = average_ci(r1_columns, seed=cfg.seed, n_resamples=cfg.n_bootstrap)
        metrics["average_recall_at_1"] = avg
        protocol = {
            **META.to_dict(), "tasks": list(tasks), "ks": list(KS), "crop": cfg.crop,
            "duplicate_candidates": cfg.on_duplicate,
            "tie_rule": "expected recall under uniformly random tie-breaking",
            "bootstrap": {"n_resamples": cfg.n_bootstrap, "seed": cfg.seed, "level": 0.95,
                          "unit": "query"},
            "encoder_passes": {"per_query_loop": counts.per_query_loop,
                               "unique": counts.unique_items, "ratio": counts.ratio,
                               "encoded_now": counts.encoded_now},
        }
        return RunResult(
            benchmark="genecis", model=model.meta.to_dict(), protocol=protocol, seed=cfg.seed,
            headline={"name": "average_recall_at_1", **avg}, metrics=metrics, skipped=skipped,
            extra={"config": asdict(cfg), "failures": failures},
        )


    def _drop_undecodable(
        self, tasks: dict[str, list[GenecisQuery]], skipped: dict[str, Any], n_missing: int,
        bad_cands: set[Any], bad_queries: set[Any], first: str,
    ) -> dict[str, list[GenecisQuery]]:
        """Undecodable images count with the missing ones against ``max_missing``; below
        it, the queries that need them are skipped (and counted)."""
        bad_files = {r.path for r in bad_cands} | {r.path for r, _ in bad_queries}
        if n_missing + len(bad_files) > self.cfg.max_missing:
            raise DataError(f"GeneCIS: {len(bad_files)} image file(s) could not be decoded or "
                            f"cropped ({n_missing} missing; allowed together: "
                            f"{self.cfg.max_missing}); first: {first}")
        logger.warning("GeneCIS: %d undecodable image files; their queries are skipped",
                       len(bad_files))
        skipped["undecodable_files"] = len(bad_files)
        out = {}
        for task, qs in tasks.items():
            keep = [q for q in qs if (q.reference, q.condition) not in bad_queries
                    and not bad_cands.intersection(q.candidates)]
            skipped["queries"][task] += len(qs) - len(keep)
            if not keep:
                raise DataError(f"GeneCIS {task}: every query has an undecodable image")
            out[task] = keep
        return out


register_benchmark("genecis")(GenecisBenchmark)


def _failures(task: str, qs: Sequence[GenecisQuery], scores: np.ndarray, r1: np.ndarray,
              limit: int = 4) -> list[dict[str, Any]]:
    """Up to ``limit`` failed queries of ``task`` (:func:`condsim.results.failures.
    collect_failures`), images as file refs with their GeneCIS crop."""
    from condsim.results.failures import collect_failures, file_ref

    def ref(r: Any) -> dict[str, Any]:
        return file_ref(r.path, r.bbox, r.crop_mode if r.bbox else None)

    return collect_failures(
        scores, np.zeros(len(qs), int),
        query_image=lambda i: ref(qs[i].reference), condition=lambda i: qs[i].condition,
        candidate_image=lambda i, j: ref(qs[i].candidates[j]),
        query_ids=[q.index for q in qs], group=task, limit=limit,
    )


def evaluate_genecis(
    model: Any, cfg: GenecisConfig, out_dir: str | Path | None = None,
    *, progress: ProgressFactory = no_progress,
) -> RunResult:
    """Run GeneCIS and (with ``out_dir``) write ``results.json``."""
    result = GenecisBenchmark(cfg).run(model, progress=progress)
    save_run(result, out_dir)
    return result


def task_table_rows(result: RunResult) -> list[tuple[str, ...]]:
    """(task, n, R@1, R@2, R@3) rows with CIs, percent, for CLI tables."""
    rows = []
    for task, m in result.metrics["tasks"].items():
        cells = []
        for k in KS:
            r = m["recall"][str(k)]
            cells.append(f"{r['mean'] * 100:.1f} [{r['ci_low'] * 100:.1f},"
                         f"{r['ci_high'] * 100:.1f}]")
        rows.append((task, str(m["n_queries"]), *cells))
    return rows


def paired_task_comparison(a: RunResult, b: RunResult, *, seed: int = 0,
                           n_resamples: int = 2000) -> list[dict[str, Any]]:
    """Per task, paired bootstrap of R@1 differences ``b - a`` over the same queries (see
    :func:`condsim.benchmarks.retrieval.paired_comparison`, which also gives the average)."""
    from condsim.benchmarks.retrieval import paired_comparison

    cmp = paired_comparison(a, b, seed=seed, n_resamples=n_resamples)
    return [{"task": r["group"], **r} for r in cmp["groups"]]
