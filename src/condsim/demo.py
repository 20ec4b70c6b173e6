"""``condsim demo``: the whole story on a laptop, offline, in a few minutes.

1. Writes a synthetic LRVS-F world (test set + a disjoint training set) and a synthetic
   GeneCIS set, in the real formats.
2. Evaluates the unconditional / naive baselines on ``test/tiny-clip`` (image-only, text-only,
   image+text).
3. Trains two small CondViTs on the training products, on CPU: one with a category token, one
   with a projected caption embedding (the paper's two models), and evaluates them with the
   same protocol, seeds and folds: LRVS-F with category conditions and with captions
   (``blip2_caption1``); each CondViT in the conditioning it was trained for.
4. Trains a Combiner on synthetic CIRR's train split (GeneCIS' "Combiner trained on CIRR"
   baseline) and scores it on CIRR val and, zero-shot, on GeneCIS. CIRR, GeneCIS and LRVS-F
   with captions also run the condition test (``condition_test=True``: conditions shuffled
   among the queries / emptied; the main metrics are unchanged): ``summary.json``'s
   ``shuffled_condition_drop`` holds each model's headline drop under shuffled conditions.
5. Writes every run's ``results.json`` (+ ``model_card.yaml`` for LRVS-F) and ``summary.json``
   stating whether each conditional model beats every baseline by more than the spread of
   the folds (mean - std > baseline mean + std on the headline recall), in its conditioning.
6. Writes the HTML report of all runs (``condsim report OUT/runs``) to ``OUT/report/``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from condsim.benchmarks.cirr import CirrConfig
from condsim.benchmarks.genecis import GenecisConfig
from condsim.benchmarks.lrvsf import LRVSFConfig
from condsim.benchmarks.run import run_benchmark
from condsim.io import atomic_write_text
from condsim.progress import ProgressFactory, no_progress
from condsim.registry import create_model
from condsim.results.run_result import RunResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoSize:
    products: int
    distractors: int
    n_dists: tuple[int, ...]
    train_products: int
    epochs: int
    genecis_per_task: int


SIZES = {
    "tiny": DemoSize(200, 400, (50, 200), 1000, 25, 10),
    "small": DemoSize(200, 2000, (100, 500, 2000), 1500, 30, 40),
    "medium": DemoSize(500, 10000, (100, 1000, 10000), 4000, 30, 100),
}

BASELINES = (
    "test/tiny-clip",
    "combine:image-only/test/tiny-clip",
    "combine:text-only/test/tiny-clip",
)
HEADLINE_K = "10"


def _run_dir(out: Path, bench: str, name: str) -> Path:
    return out / "runs" / f"{bench}__{name.replace('/', '_').replace(':', '_')}"


def run_demo(
    out: str | Path, size: str = "small", *, seed: int = 0, workers: int = 2,
    progress: ProgressFactory = no_progress, train: bool = True,
) -> dict[str, Any]:
    """Run the demo; returns ``{"lrvsf": {model: RunResult}, "genecis": {...}, "summary": {},
    "report": <path of the HTML report>}``."""
    from condsim.synthetic.genecis import write_genecis
    from condsim.synthetic.lrvsf import write_lrvsf

    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}")
    spec = SIZES[size]
    out = Path(out)
    data = out / "data"
    if not (data / "lrvsf" / "products.parquet").exists():
        write_lrvsf(data / "lrvsf", n_products=spec.products, n_distractors=spec.distractors,
                    seed=seed)
    if not (data / "lrvsf-train" / "products.parquet").exists():
        write_lrvsf(data / "lrvsf-train", n_products=spec.train_products, n_distractors=10,
                    seed=seed + 1, files=1)
    if not (data / "genecis" / "annotations").exists():
        write_genecis(data / "genecis", n_per_task=spec.genecis_per_task, seed=seed)
    if not (data / "cirr" / "captions").exists():
        from condsim.synthetic.cirr import write_cirr

        write_cirr(data / "cirr", n_queries=200, n_train=CIRR_TRAIN["queries"], seed=seed)

    models: dict[str, Any] = {name: create_model(name) for name in BASELINES}
    trained: dict[str, str] = {}  # trained model -> the conditioning it is evaluated with
    if train:
        for name, conditioning in TRAINED.items():
            models[name] = _train_condvit(out, data / "lrvsf-train", spec, seed, progress,
                                          conditioning)
            trained[name] = conditioning
    lrvsf: dict[str, RunResult] = {}
    lrvsf_text: dict[str, RunResult] = {}
    for name, model in models.items():
        for conditioning, runs, bench in (("category", lrvsf, "lrvsf"),
                                          ("text", lrvsf_text, "lrvsf-text")):
            if trained.get(name, conditioning) != conditioning:
                continue
            cfg = LRVSFConfig(data_root=str(data / "lrvsf"), conditioning=conditioning,
                              n_dists=spec.n_dists, seed=seed, folds="seeded",
                              num_workers=workers, cache_dir=str(out / "cache"),
                              condition_test=conditioning == "text")
            runs[name] = run_benchmark(model, cfg, _run_dir(out, bench, name),
                                        progress=progress)
    if train:
        models[COMBINER] = _train_combiner(out, data / "cirr", seed, progress, models)
    cirr: dict[str, RunResult] = {}
    for name in [*BASELINES, *([COMBINER] if train else [])]:
        cirr[name] = run_benchmark(models[name], CirrConfig(
            root=str(data / "cirr"), seed=seed, cache_dir=str(out / "cache"), n_bootstrap=500,
            condition_test=True),
            _run_dir(out, "cirr", name), progress=progress)
    genecis: dict[str, RunResult] = {}
    g = data / "genecis"
    for name in [*BASELINES, *([COMBINER] if train else [])]:
        cfg_g = GenecisConfig(
            annotations=str(g / "annotations"), coco_root=str(g / "coco" / "val2017"),
            vg_roots=(str(g / "vg" / "VG_100K"), str(g / "vg" / "VG_100K_2")), seed=seed,
            num_workers=0, cache_dir=str(out / "cache"), n_bootstrap=500, condition_test=True,
        )
        genecis[name] = run_benchmark(models[name], cfg_g, _run_dir(out, "genecis", name),
                                         progress=progress)
    summary = summarize(lrvsf, spec.n_dists[0])
    text_summary = summarize(lrvsf_text, spec.n_dists[0])
    summary.update({
        "size": size, "seed": seed,
        "metric_captions": text_summary["metric"] + " (caption conditioning)",
        "models_captions": text_summary["models"],
        "conditional_beats_baselines": {**summary["conditional_beats_baselines"],
                                        **text_summary["conditional_beats_baselines"]},
    })
    summary["cirr"] = {name: {k: r.headline[k] for k in ("mean", "ci_low", "ci_high")}
                       for name, r in cirr.items()}
    if COMBINER in cirr:  # beats every baseline: its CI lies above every baseline's CI
        low = cirr[COMBINER].headline["ci_low"]
        summary["conditional_beats_baselines"][COMBINER] = all(
            low > cirr[b].headline["ci_high"] for b in BASELINES)
    summary["shuffled_condition_drop"] = {
        bench: {name: _shuffled_drop(r) for name, r in runs.items()
                if "condition_reliance" in r.metrics}
        for bench, runs in (("cirr", cirr), ("genecis", genecis), ("lrvsf_captions", lrvsf_text))}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    from condsim.results.report import build_report

    report = build_report([out / "runs"], out / "report" / "report.html")["html"]
    return {"lrvsf": lrvsf, "lrvsf_text": lrvsf_text, "cirr": cirr, "genecis": genecis,
            "summary": summary, "report": report}


def _shuffled_drop(result: RunResult) -> dict[str, Any]:
    """The headline drop under shuffled conditions (``metrics.condition_reliance``):
    ``{mean, ci_low, ci_high, significant, top1_changed}``."""
    entry = result.metrics["condition_reliance"]["shuffled"]
    return {**entry["drop"], "top1_changed": entry["top1_changed"]}


#: the Combiner of the demo: trained on synthetic CIRR's train split (GeneCIS' "Combiner
#: trained on CIRR" baseline), scored on CIRR val and zero-shot on GeneCIS
COMBINER = "combiner (trained on CIRR)"
#: synthetic CIRR train queries (every distinct edit) and the Combiner's training schedule
CIRR_TRAIN = {"queries": 336, "epochs": 20, "batch_size": 56}


def _train_combiner(out: Path, cirr_root: Path, seed: int, progress: ProgressFactory,
                    models: dict[str, Any]) -> Any:
    from condsim.models.combiner import Combiner, CombinerEncoder
    from condsim.training.recipes import train_combiner
    from condsim.training.trainer import TrainConfig

    ckpt = out / "models" / "combiner-cirr"
    if not (ckpt / "last" / "combiner_config.json").exists():
        epochs, batch = CIRR_TRAIN["epochs"], CIRR_TRAIN["batch_size"]
        cfg = TrainConfig(out_dir=str(ckpt), epochs=epochs, batch_size=batch, lr=3e-3,
                          logit_scale=30.0, schedule="cosine", seed=seed)
        train_combiner(None, None, cfg, cirr_root=cirr_root, projection_dim=128,
                       hidden_dim=256, dropout=0.1, cache_dir=str(out / "cache"),
                       progress=progress("train Combiner (CIRR)",
                                         epochs * (CIRR_TRAIN["queries"] // batch)))
    return CombinerEncoder(Combiner.load(ckpt / "last"), models["test/tiny-clip"],
                           name="combiner:demo-cirr")


#: the trained models of the demo and the LRVS-F conditioning each is trained for
TRAINED = {"condvit (trained)": "category", "condvit-text (trained)": "text"}


def _train_condvit(out: Path, train_root: Path, spec: DemoSize, seed: int,
                   progress: ProgressFactory, conditioning: str = "category") -> Any:
    from condsim.models.condvit import CondViT, CondViTEncoder
    from condsim.models.tiny import tiny_clip_dir
    from condsim.training.recipes import train_condvit
    from condsim.training.trainer import TrainConfig

    ckpt = out / "models" / ("condvit" if conditioning == "category" else "condvit-text")
    if not (ckpt / "last" / "condvit_config.json").exists():
        steps = spec.epochs * (spec.train_products // 100)
        cfg = TrainConfig(out_dir=str(ckpt), epochs=spec.epochs, batch_size=100, lr=1e-3,
                          logit_scale=20.0, schedule="cosine", warmup_steps=5, seed=seed)
        train_condvit(train_root, cfg, conditioning=conditioning,
                      progress=progress(f"train CondViT ({conditioning})", steps))
    from condsim.models.clip_hf import create_hf

    clip = create_hf(str(tiny_clip_dir()))
    return CondViTEncoder(CondViT.load(ckpt / "last"), clip.preprocessor,
                          name=f"condvit:demo-{conditioning}",
                          text_encoder=clip if conditioning == "text" else None)


def summarize(lrvsf: dict[str, RunResult], n: int) -> dict[str, Any]:
    """Headline R@10 (mean ± std over folds) at ``n`` distractors per model, and whether each
    trained conditional model beats every baseline by more than the fold spread."""
    rows = {}
    for name, res in lrvsf.items():
        r = res.metrics["recall"][str(n)][HEADLINE_K]
        rows[name] = {"mean": r["mean"], "std": r["std"]}
    base = [rows[b] for b in BASELINES if b in rows]
    verdict = {}
    for name, r in rows.items():
        if name in BASELINES:
            continue
        verdict[name] = all(r["mean"] - r["std"] > b["mean"] + b["std"] for b in base)
    return {"metric": f"lrvsf recall@{HEADLINE_K} +{n} distractors", "models": rows,
            "conditional_beats_baselines": verdict}
