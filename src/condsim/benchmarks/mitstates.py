"""MIT-States as GeneCIS evaluates it: change an object's state (adjective).

Layout ``images/<adj> <noun>/*.jpg`` (folders without a space, and adjective ``adj``, are
skipped). Test split = images of the 49 test nouns. Queries: every test image x every other
adjective seen with its noun; condition = the target adjective (or "<adj> <noun>" with
``complete_text``); relevant = every test image captioned "<target adj> <noun>"; gallery =
all test images with the reference removed. Recall@{1,5,10} = P(any relevant in the top K)
under random tie-breaking (:func:`condsim.metrics.recall.expected_any_hit_at_k`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
)
from condsim.benchmarks.spec import (
    BenchmarkSpec,
    Pairing,
    SharedOptions,
    option,
)
from condsim.data.crops import ImageRef
from condsim.errors import DataError
from condsim.metrics.recall import any_hit_from_counts
from condsim.models.base import require_condition_kind
from condsim.progress import ProgressFactory, no_progress
from condsim.registry import register_benchmark
from condsim.results.run_result import RunResult

KS = (1, 5, 10)
TEST_NOUNS = (
    "armor", "bracelet", "bush", "camera", "candy", "castle", "ceramic", "cheese", "clock",
    "clothes", "coffee", "fan", "fig", "fish", "foam", "forest", "fruit", "furniture", "garden",
    "gate", "glass", "horse", "island", "laptop", "lead", "lightning", "mirror", "orange",
    "paint", "persimmon", "plastic", "plate", "potato", "road", "rubber", "sand", "shell", "sky",
    "smoke", "steel", "stream", "table", "tea", "tomato", "vacuum", "wax", "wheel", "window",
    "wool",
)
FAILURE_LIMIT = 12


@dataclass(frozen=True, kw_only=True)
class MitStatesConfig(SharedOptions):
    root: str = option(path="dir", help="Folder holding images/<adj> <noun>/.")
    complete_text: bool = option(False, help='Condition "<adj> <noun>" instead of "<adj>".')
    query_block: int = option(1024, ge=1, help="Queries scored together.")
    gallery_block: int = option(8192, ge=1, help="Gallery rows read at a time.")


def read_test_images(root: str | Path) -> list[tuple[str, str, Path]]:
    """``(adj, noun, path)`` of the test split, sorted."""
    folder = Path(root) / "images"
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder (expected images/<adj> <noun>/)")
    out = []
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        if " " not in d.name:
            continue
        adj, noun = d.name.split(" ", 1)
        if adj == "adj" or noun not in TEST_NOUNS:
            continue
        out += [(adj, noun, p) for p in sorted(d.glob("*.jpg"))]
    if not out:
        raise DataError(f"{folder}: no test images (nouns: {', '.join(TEST_NOUNS[:5])}, ...)")
    return out


def read_split(cfg: MitStatesConfig) -> CIRSplit:
    """Every test image x every other adjective of its noun; relevant = the images of the
    asked state, the reference excluded."""
    items = read_test_images(cfg.root)
    adjs_of: dict[str, list[str]] = {}
    for adj, noun, _ in items:
        adjs_of.setdefault(noun, [])
        if adj not in adjs_of[noun]:
            adjs_of[noun].append(adj)
    queries = [(i, a) for i, (adj, noun, _) in enumerate(items)
               for a in adjs_of[noun] if a != adj]
    if not queries:
        raise DataError("MIT-States: no noun has two adjectives in the test split")
    by_label: dict[str, list[int]] = {}
    for j, (adj, noun, _) in enumerate(items):
        by_label.setdefault(f"{adj} {noun}", []).append(j)
    refs = [ImageRef(str(p)) for _, _, p in items]
    return CIRSplit(
        label="MIT-States", gallery=refs, queries=[refs[i] for i, _ in queries],
        conditions=[f"{a} {items[i][1]}" if cfg.complete_text else a for i, a in queries],
        query_ids=[f"{items[i][2].parent.name}/{items[i][2].name}->{a}" for i, a in queries],
        relevant=[by_label[f"{a} {items[i][1]}"] for i, a in queries],
        excluded=[[i] for i, _ in queries],
    )


def evaluate(model: Any, cfg: MitStatesConfig, *, progress: ProgressFactory = no_progress
             ) -> RunResult:
    """Score MIT-States (module docstring): any-hit recall, one pass over the gallery per
    query block whatever the number of relevant images."""
    require_condition_kind(model, "text", "MIT-States")
    split = read_split(cfg)
    cache = open_cache(model, cfg)
    budget = MissingBudget(cfg.max_missing)
    enc = encode_split(model, cache, split, cfg, budget, progress)
    ranks = rank_split(enc, cfg, thresholds="best", progress=progress)
    rec = any_hit_from_counts(*ranks.best_counts(), KS)
    per_query = {"recall": (rec, KS)}
    metrics = {**summarize(per_query, seed=cfg.seed, n_resamples=cfg.n_bootstrap),
               "n_queries": len(enc.split.queries), "gallery_size": enc.gallery_size,
               **per_query_block({"recall": (rec[:, :1], KS[:1])}, enc.split.query_ids)}
    if cfg.condition_test:  # the headline's per-query values: expected any-hit R@1
        metrics["condition_reliance"] = reliance_metrics({"": condition_runs_split(
            model, cache, enc, ranks, cfg, progress,
            lambda r: any_hit_from_counts(*r.best_counts(), KS[:1])[:, 0],
            thresholds="best")}, cfg, metric=SPEC.main_score)
    return make_result(
        SPEC, model, cfg, metrics,
        protocol={"ks": list(KS), "complete_text": cfg.complete_text,
                  "reference_removed": True, "tie_rule": "expected any-hit"},
        skipped={**budget.counts(), "queries": enc.skipped_queries},
        failures=failure_cases(enc.split, ranks, limit=FAILURE_LIMIT), cache=cache,
        extra={"n_relevant": ranks.n_relevant.tolist()})


# The 49 test nouns are GeneCIS's (https://github.com/facebookresearch/genecis, commit
# 0c5c968, datasets/mit_states_dataset.py, ``test_nouns``; the same list as TEST_NOUNS). No
# official source gives the number of test images, so that count is reported as found.
_IMAGES_SOURCE = ("MIT-States: http://web.mit.edu/phillipi/Public/states_and_transformations/"
                  "index.html (release_dataset.zip: images/<adj> <noun>/*.jpg; GeneCIS "
                  "DOWNLOAD.md)")


def _check(cfg: MitStatesConfig, progress: ProgressFactory = no_progress) -> Any:
    """The images/ layout, the 49 test nouns, and every test image decoded (``condsim data
    check mitstates``)."""
    from condsim.benchmarks.datacheck import (
        DataReport,
        file_items,
        read_or_report,
        report_images,
    )

    report = DataReport("mitstates", cfg.to_dict())
    items = read_or_report(report, str(Path(cfg.root) / "images"), _IMAGES_SOURCE,
                           lambda: read_test_images(cfg.root))
    if items is None:
        report.count("test nouns", None, len(TEST_NOUNS), "genecis datasets/"
                     "mit_states_dataset.py test_nouns (commit 0c5c968)")
        return report
    adjs: dict[str, set[str]] = {}
    for adj, noun, _ in items:
        adjs.setdefault(noun, set()).add(adj)
    report.count("test nouns", len(adjs), len(TEST_NOUNS), "genecis datasets/"
                 "mit_states_dataset.py test_nouns (commit 0c5c968)")
    report.count("test images", len(items), None, "not verified: no official count")
    absent = [n for n in TEST_NOUNS if n not in adjs]
    if absent:
        report.notes.append(f"{len(absent)} test noun(s) without any images/<adj> <noun>/ "
                            f"folder: {', '.join(absent[:10])}"
                            f"{' ...' if len(absent) > 10 else ''}")
    single = sorted(n for n, a in adjs.items() if len(a) < 2)
    if single:
        report.notes.append(f"test nouns with one adjective (no query; GeneCIS asserts two): "
                            f"{', '.join(single)}")
    files = file_items(str(p) for _, _, p in items)
    report_images(report, files, cfg, progress, what="MIT-States test images",
                  source=_IMAGES_SOURCE)
    return report


def _synthetic(out: Path, seed: int) -> dict[str, Any]:
    from condsim.synthetic.mitstates import write_mitstates

    return {"root": str(write_mitstates(out, seed=seed))}


def _chance(result: RunResult) -> float:
    """Any-hit R@1 of a constant model: ``R / (N - 1)`` for a query with ``R`` images of the
    asked state among the ``N - 1`` other images, averaged over queries."""
    n = result.metrics["gallery_size"]
    return float(sum(r / (n - 1) for r in result.extra["n_relevant"]) /
                 len(result.extra["n_relevant"]))


SPEC = register_benchmark(BenchmarkSpec(
    name="mitstates", description="MIT-States state change (GeneCIS protocol, 49 test nouns)",
    main_score="recall_at_1", split="test", protocol_version="1",
    reference="https://github.com/facebookresearch/genecis",
    dataset_type="mit-states", dataset_name="MIT-States",
    config=MitStatesConfig, evaluate=evaluate, synthetic=_synthetic,
    pairing=Pairing("queries", "R@1", "recall_at_1"), variants=("complete_text",),
    chance=_chance, check=_check,
))
