"""FashionIQ val (dress, shirt, toptee): Recall@10 and @50 per category and their average.

Files: ``captions/cap.<cat>.val.json`` (``candidate``, ``target``, two relative
``captions``), ``image_splits/split.<cat>.val.json`` (the category's gallery of asins),
``images/<asin>.png|jpg``. The two captions are joined into one condition by a *declared*
rule (it changes the numbers): ``and`` = "c1 and c2" (default), ``dot`` = "c1. c2",
``first`` = c1 only, ``clip4cir`` = CLIP4Cir's "C1 and c2" (ends stripped of ``.?, ``, the
first capitalised). The candidate stays in the gallery (as in the common evaluation code).
Recall is tie-safe (:func:`condsim.metrics.expected_recall_at_k`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from condsim.benchmarks.base import BenchmarkMeta, register_function_benchmark
from condsim.benchmarks.retrieval import (
    FileDigests,
    average_ci,
    encode_unique,
    save_run,
    summarize_recalls,
)
from condsim.cache.store import EmbeddingCache
from condsim.data.crops import ImageRef
from condsim.data.jsonio import load_json
from condsim.errors import DataError
from condsim.metrics.recall import expected_recall_at_k
from condsim.models.base import require_condition_kind
from condsim.paths import default_cache_dir
from condsim.progress import ProgressFactory, no_progress
from condsim.results.failures import collect_failures, file_ref
from condsim.results.run_result import RunResult

KS = (10, 50)
CATEGORIES = ("dress", "shirt", "toptee")


def _clip4cir_join(c: Sequence[str]) -> str:
    """CLIP4Cir's rule: both captions stripped of ``.?, `` at the ends, the first passed
    through ``str.capitalize`` (which also lower-cases the rest), joined by " and "."""
    return f"{c[0].strip('.?, ').capitalize()} and {c[1].strip('.?, ')}"


JOIN_RULES: dict[str, Callable[[Sequence[str]], str]] = {
    "and": lambda c: f"{c[0]} and {c[1]}", "dot": lambda c: f"{c[0]}. {c[1]}",
    "first": lambda c: c[0], "clip4cir": _clip4cir_join,
}
META = BenchmarkMeta(
    name="fashioniq", description="FashionIQ val: R@10/50 per category",
    main_score="average_recall", split="val", protocol_version="1",
    reference="https://github.com/XiaoxiaoGuo/fashion-iq",
)


@dataclass
class FashionIQConfig:
    root: str
    categories: tuple[str, ...] = CATEGORIES
    join: str = "and"
    seed: int = 0
    n_bootstrap: int = 1000
    max_missing: int = 0
    batch_size: int = 64
    num_workers: int = 0
    cache_dir: str | None = None


def _image(root: Path, asin: str) -> ImageRef | None:
    for ext in (".png", ".jpg"):
        if (root / "images" / f"{asin}{ext}").is_file():
            return ImageRef(str(root / "images" / f"{asin}{ext}"))
    return None


def read_category(root: Path, cat: str, join: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The category's val gallery (asins, duplicates removed) and validated caption entries;
    errors name the file and the entry."""
    split_path = root / "image_splits" / f"split.{cat}.val.json"
    names = load_json(split_path, "FashionIQ file")
    if not isinstance(names, list) or not names or not all(isinstance(a, str) for a in names):
        raise DataError(f"{split_path}: expected a non-empty list of asins")
    asins = list(dict.fromkeys(names))
    caps_path = root / "captions" / f"cap.{cat}.val.json"
    caps = load_json(caps_path, "FashionIQ file")
    if not isinstance(caps, list) or not caps:
        raise DataError(f"{caps_path}: expected a non-empty list of queries")
    known = set(asins)
    for i, e in enumerate(caps):
        if not isinstance(e, dict) or not {"candidate", "target", "captions"} <= set(e):
            raise DataError(f"{caps_path} entry {i}: needs candidate, target, captions")
        c = e["captions"]
        if (not isinstance(c, list) or len(c) < (1 if join == "first" else 2)
                or not all(isinstance(t, str) for t in c)):
            raise DataError(f"{caps_path} entry {i}: needs two caption strings")
        for a in (e["candidate"], e["target"]):
            if a not in known:
                raise DataError(f"{caps_path} entry {i}: {a!r} not in {split_path}")
    return asins, caps


def evaluate_fashioniq(model: Any, cfg: FashionIQConfig, out_dir: str | Path | None = None,
                       *, progress: ProgressFactory = no_progress) -> RunResult:
    """Score FashionIQ val per category and (with ``out_dir``) write ``results.json``.
    Missing images (at most ``max_missing``) leave the gallery; their queries are skipped."""
    require_condition_kind(model, "text", "FashionIQ")
    if cfg.join not in JOIN_RULES:
        raise DataError(f"caption join rule must be one of {sorted(JOIN_RULES)}")
    root = Path(cfg.root)
    data = {cat: read_category(root, cat, cfg.join) for cat in cfg.categories}
    located = {a: _image(root, a) for asins, _ in data.values() for a in asins}
    absent = sorted(a for a, r in located.items() if r is None)
    if len(absent) > cfg.max_missing:
        raise DataError(f"FashionIQ: {len(absent)} image(s) missing from {root / 'images'} "
                        f"(allowed: {cfg.max_missing}), e.g. {absent[:3]} (.png or .jpg); "
                        "check the folder or raise --max-missing")
    cache = EmbeddingCache(cfg.cache_dir or default_cache_dir(), model.meta)
    digests = FileDigests()
    metrics: dict[str, Any] = {"categories": {}}
    skipped: dict[str, Any] = {"missing_files": len(absent), "queries": {}}
    failures: list[dict[str, Any]] = []
    columns: dict[int, list[np.ndarray]] = {k: [] for k in KS}
    enc = {"batch_size": cfg.batch_size, "num_workers": cfg.num_workers}
    for ci, cat in enumerate(cfg.categories):
        all_asins, all_caps = data[cat]
        asins = [a for a in all_asins if located[a] is not None]
        kept = [i for i, e in enumerate(all_caps)
                if located[e["candidate"]] is not None and located[e["target"]] is not None]
        caps = [all_caps[i] for i in kept]
        qids = [f"{i}:{all_caps[i]['candidate']}->{all_caps[i]['target']}" for i in kept]
        skipped["queries"][cat] = len(all_caps) - len(caps)
        if not caps:
            raise DataError(f"FashionIQ {cat}: every query needs a missing image")
        index = {a: i for i, a in enumerate(asins)}
        refs = [located[a] for a in asins]
        g, g_err, _ = encode_unique(model, cache, refs, digests,
                                    progress=progress(f"encode {cat} gallery", len(refs)),
                                    what=f"FashionIQ {cat}", **enc)
        texts = [JOIN_RULES[cfg.join](e["captions"]) for e in caps]
        q, q_err, _ = encode_unique(model, cache, [refs[index[e["candidate"]]] for e in caps],
                                    digests, texts,
                                    progress=progress(f"encode {cat} queries", len(caps)),
                                    what=f"FashionIQ {cat} queries", **enc)
        if g_err or q_err:
            raise DataError(f"FashionIQ {cat}: {len(g_err) + len(q_err)} undecodable images")
        scores = q @ g.T
        tgt = np.array([index[e["target"]] for e in caps])
        rec = expected_recall_at_k(scores, tgt, KS)
        paths = [r.path for r in refs]
        failures += collect_failures(
            scores, tgt, query_image=[file_ref(paths[index[e["candidate"]]]) for e in caps],
            condition=texts, candidate_image=lambda i, j, paths=paths: file_ref(paths[j]),
            query_ids=qids, group=cat, limit=4)
        metrics["categories"][cat] = {
            "recall": summarize_recalls(rec, KS, seed=cfg.seed + 10 * ci,
                                        n_resamples=cfg.n_bootstrap),
            "n_queries": len(caps), "gallery_size": len(asins),
            "per_query": {f"recall_at_{k}": rec[:, j].tolist() for j, k in enumerate(KS)},
            "query_ids": qids}
        for j, k in enumerate(KS):
            columns[k].append(rec[:, j])
    for k in KS:
        metrics[f"average_recall_at_{k}"] = average_ci(columns[k], seed=cfg.seed + k,
                                                       n_resamples=cfg.n_bootstrap)
    avg = float(np.mean([metrics[f"average_recall_at_{k}"]["mean"] for k in KS]))
    res = RunResult(
        benchmark="fashioniq", model=model.meta.to_dict(),
        protocol={**META.to_dict(), "ks": list(KS), "caption_join": cfg.join,
                  "categories": list(cfg.categories), "reference_removed": False,
                  "bootstrap": {"n_resamples": cfg.n_bootstrap, "seed": cfg.seed}},
        seed=cfg.seed, headline={"name": "average_recall", "mean": avg}, metrics=metrics,
        skipped=skipped, extra={"config": asdict(cfg), "failures": failures},
    )
    save_run(res, out_dir)
    return res


FashionIQBenchmark = register_function_benchmark("fashioniq", META, evaluate_fashioniq)
