"""End-to-end training recipes behind ``condsim train``.

- :func:`train_combiner`: mined triplets (``condsim mine``) + image folder -> frozen backbone
  features (through the embedding cache) -> Combiner trained with the batch contrastive loss;
  checkpoints load with ``combiner:<out>/best`` (or ``/last``).
- :func:`train_condvit`: an LRVS-F-layout training set (``products.parquet``: COMPLEX_IMG,
  CATEGORY -> SIMPLE_IMG) -> CondViT initialised from a CLIP checkpoint; ``condvit:<out>/...``.
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from condsim.benchmarks.retrieval import FileDigests, encode_unique
from condsim.cache.store import EmbeddingCache
from condsim.data.crops import ImageRef
from condsim.distributed import collective_device, maybe_init_distributed, rank_world
from condsim.errors import ConfigError, DataError
from condsim.models.base import encode_texts_once
from condsim.paths import default_cache_dir
from condsim.registry import create_model
from condsim.training.tasks import (
    CombinerPair,
    CondViTPair,
    FeatureTripletTask,
    PixelTripletTask,
    preprocess_all,
)
from condsim.training.trainer import (
    TrainConfig,
    Trainer,
    TrainState,
    require_int,
)

logger = logging.getLogger(__name__)


def _resolve(images_dir: Path, name: str) -> Path:
    p = Path(name)
    return p if p.is_absolute() else images_dir / p


def combiner_task_from_triplets(
    triplets_dir: str | Path, images_dir: str | Path, backbone: Any, *,
    cache_dir: str | None = None, num_workers: int = 0,
) -> tuple[FeatureTripletTask, dict[str, Any]]:
    """Frozen features for every unique image and condition of the mined triplets."""
    from condsim.training.mining import read_triplets

    table = read_triplets(triplets_dir, ["reference_image", "target_image", "condition"])
    images_dir = Path(images_dir)
    refs = [_resolve(images_dir, n) for n in table.column("reference_image").to_pylist()]
    tgts = [_resolve(images_dir, n) for n in table.column("target_image").to_pylist()]
    return _combiner_task(refs, table.column("condition").to_pylist(), tgts, backbone,
                          where=f"under {images_dir}", cache_dir=cache_dir,
                          num_workers=num_workers)


def combiner_task_from_cirr(
    cirr_root: str | Path, backbone: Any, *, cache_dir: str | None = None,
    num_workers: int = 0,
) -> tuple[FeatureTripletTask, dict[str, Any]]:
    """Frozen features of CIRR's train split: (reference, caption, target_hard) triplets,
    the training data of the "Combiner trained on CIRR" baseline of GeneCIS (and CLIP4Cir)."""
    from condsim.data.cirr import read_cirr

    queries, gallery = read_cirr(cirr_root, "train")
    refs = [Path(gallery[q.reference].path) for q in queries]
    tgts = [Path(gallery[str(q.target)].path) for q in queries]
    return _combiner_task(refs, [q.caption for q in queries], tgts, backbone,
                          where=f"in {cirr_root} (CIRR train)", cache_dir=cache_dir,
                          num_workers=num_workers)


def _combiner_task(
    refs: list[Path], conds: list[str], tgts: list[Path], backbone: Any, *, where: str,
    cache_dir: str | None, num_workers: int,
) -> tuple[FeatureTripletTask, dict[str, Any]]:
    """Frozen backbone features of every unique image (through the embedding cache) and
    every distinct condition of ``(reference, condition, target)`` triplets."""
    paths = list(dict.fromkeys(refs + tgts))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing)} triplet image(s) not found {where}, e.g. "
                        f"{missing[:3]}: training data and images do not match")
    feats = _frozen_image_features(backbone, cache_dir or default_cache_dir(),
                                   [ImageRef(str(p)) for p in paths], num_workers)
    cond_names = list(dict.fromkeys(conds))
    with torch.inference_mode():
        text = encode_texts_once(backbone.encode_texts, cond_names).float().cpu().numpy()
    img_index = {n: i for i, n in enumerate(paths)}
    cond_index = {c: i for i, c in enumerate(cond_names)}
    trip = np.array([(img_index[r], cond_index[c], img_index[t])
                     for r, c, t in zip(refs, conds, tgts, strict=True)], dtype=np.int64)
    info = {"triplets": len(trip), "images": len(paths), "conditions": len(cond_names)}
    return FeatureTripletTask(feats, text, trip), info


def _frozen_image_features(backbone: Any, cache_dir: str | Path, refs: list[ImageRef],
                           num_workers: int) -> np.ndarray:
    """Backbone features of ``refs`` through the embedding cache. Under ``torch.distributed``
    each rank encodes its own contiguous share first (the cache takes concurrent writers),
    so the ranks split the work instead of each encoding every image; then every rank reads
    all rows back. An undecodable image stops every rank with the same error."""
    import torch.distributed as dist

    rank, world = rank_world()
    digests = FileDigests()
    if world > 1:
        n = len(refs)
        share = refs[rank * n // world:(rank + 1) * n // world]
        _, errors, _ = encode_unique(backbone, EmbeddingCache(cache_dir, backbone.meta), share,
                                     digests, num_workers=num_workers,
                                     what=f"triplet images (rank {rank})")
        bad = torch.tensor([len(errors)], device=collective_device())
        dist.all_reduce(bad)
        if int(bad.item()):
            raise DataError(f"{int(bad.item())} triplet images cannot be decoded"
                            + (f"; first on rank {rank}: {next(iter(errors.values()))}"
                               if errors else ""))
    feats, errors, _ = encode_unique(backbone, EmbeddingCache(cache_dir, backbone.meta), refs,
                                     digests, num_workers=num_workers, what="triplet images")
    if errors:
        raise DataError(f"{len(errors)} triplet images cannot be decoded; first: "
                        f"{next(iter(errors.values()))}")
    return feats


VALIDATION_KINDS = ("cirr", "genecis")
CONDITIONINGS = ("category", "text")


def check_combiner_options(projection_dim: int, hidden_dim: int, dropout: float) -> None:
    """The Combiner's architecture options: dimensions >= 1, dropout in ``[0, 1)``
    (:class:`~condsim.errors.ConfigError` naming the flag)."""
    require_int("--projection-dim", projection_dim, 1)
    require_int("--hidden-dim", hidden_dim, 1)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
            or not 0 <= dropout < 1:
        raise ConfigError(f"--dropout must be in [0, 1), got {dropout!r}")


def check_combiner_data(triplets_dir: str | Path | None, images_dir: str | Path | None,
                        cirr_root: str | Path | None) -> None:
    """Mined triplets (``triplets_dir`` + ``images_dir``) or CIRR (``cirr_root``), not both,
    and the folders given exist."""
    if (cirr_root is None) == (triplets_dir is None or images_dir is None):
        raise ConfigError("train a Combiner on mined triplets (--triplets and --images) or on "
                          "CIRR (--cirr-root), not both")
    for flag, folder in (("--cirr-root", cirr_root), ("--triplets", triplets_dir),
                         ("--images", images_dir)):
        if folder is not None and not Path(folder).exists():
            raise ConfigError(f"{flag} {folder} does not exist")


def parse_validation(spec: str) -> tuple[str, Path]:
    """``--val KIND:ROOT`` of Combiner training: ``(kind, root)`` with ``kind`` in
    :data:`VALIDATION_KINDS` and ``root`` an existing folder."""
    kind, sep, root = spec.partition(":")
    if not sep or kind not in VALIDATION_KINDS or not root:
        raise ConfigError(f"--val must be cirr:<CIRR root> or genecis:<root>, got {spec!r}")
    if not Path(root).is_dir():
        raise ConfigError(f"--val {spec}: {root} is not a folder")
    return kind, Path(root)


def check_condvit_options(train_root: str | Path, conditioning: str,
                          val_root: str | Path | None = None, val_dists: int = 1000,
                          val_k: int = 1) -> None:
    """CondViT training options that need nothing loaded: the training (and validation)
    folder exists, the conditioning is known, the validation distractors >= 0 and K >= 1."""
    if conditioning not in CONDITIONINGS:
        raise ConfigError(f"--conditioning must be {' or '.join(CONDITIONINGS)}, got "
                          f"{conditioning!r}")
    for flag, folder in (("--train-root", train_root), ("--val-root", val_root)):
        if folder is not None and not Path(folder).is_dir():
            raise ConfigError(f"{flag} {folder} is not a folder")
    require_int("--val-dists", val_dists, 0)
    require_int("--val-k", val_k, 1)


def train_combiner(
    triplets_dir: str | Path | None, images_dir: str | Path | None, cfg: TrainConfig, *,
    backbone: str = "test/tiny-clip", projection_dim: int = 2560, hidden_dim: int = 5120,
    dropout: float = 0.5, validate: Callable[[Any], float] | None = None,
    cache_dir: str | None = None, resume: bool = True,
    progress: Callable[[int], None] | None = None, cirr_root: str | Path | None = None,
) -> TrainState:
    """Train a Combiner on frozen ``backbone`` features: on mined triplets (the GeneCIS
    recipe: ``triplets_dir`` + ``images_dir``) or on CIRR's train split (``cirr_root``: the
    GeneCIS paper's "Combiner trained on CIRR" baseline)."""
    from condsim.models.combiner import Combiner, CombinerConfig

    check_combiner_data(triplets_dir, images_dir, cirr_root)
    check_combiner_options(projection_dim, hidden_dim, dropout)
    maybe_init_distributed()
    bb = create_model(backbone)
    task, info = (combiner_task_from_cirr(cirr_root, bb, cache_dir=cache_dir)
                  if cirr_root is not None else
                  combiner_task_from_triplets(str(triplets_dir), str(images_dir), bb,
                                              cache_dir=cache_dir))
    logger.info("combiner training data: %s", info)
    torch.manual_seed(cfg.seed)
    comb = Combiner(CombinerConfig(bb.meta.embedding_dim, projection_dim, hidden_dim, dropout,
                                   backbone=backbone))
    trainer = Trainer(CombinerPair(comb), task, cfg, validate=validate,
                      save_model=lambda m, d: m.combiner.save(d))
    if resume:
        trainer.resume()
    return trainer.fit(progress)


def train_condvit(
    train_root: str | Path, cfg: TrainConfig, *, init: str = "test/tiny-clip",
    conditioning: str = "category",
    validate: Callable[[Any], float] | None = None, resume: bool = True,
    progress: Callable[[int], None] | None = None,
) -> TrainState:
    """Train a CondViT on an LRVS-F-layout training set, conditioned on the product category
    (a learned embedding per category) or on its caption (``blip2_caption1``, embedded by the
    frozen text tower of the ``init`` CLIP and linearly projected to the conditioning token,
    the paper's text model)."""
    from condsim.data.lrvsf import read_products
    from condsim.models.clip_hf import HFClipEncoder, _read_preprocessor_config
    from condsim.models.condvit import CondViTConfig, condvit_from_clip

    check_condvit_options(train_root, conditioning)
    maybe_init_distributed()
    clip = create_model(init)
    if not isinstance(clip, HFClipEncoder):
        raise DataError(f"--init must be a CLIP checkpoint (hf:<dir> or test/tiny-clip), "
                        f"got {init!r}")
    clip_dir = Path(clip.meta.extra["path"])
    products = read_products(train_root, conditioning)
    pre = clip.preprocessor
    conds: Any = products.conditions
    model_cfg = CondViTConfig()
    if conditioning == "text":
        with torch.inference_mode():
            conds = encode_texts_once(clip.encode_texts, products.conditions).float().cpu()
        model_cfg = CondViTConfig(conditioning="text", text_dim=int(conds.shape[1]),
                                  text_backbone=init,
                                  text_backbone_revision=clip.meta.revision)
    task = PixelTripletTask(preprocess_all(pre, products.query_images), conds,
                            preprocess_all(pre, products.target_images))
    model = condvit_from_clip(clip_dir, model_cfg, seed=cfg.seed)
    pre_cfg = _read_preprocessor_config(clip_dir)
    trainer = Trainer(CondViTPair(model), task, cfg, validate=validate,
                      save_model=lambda m, d: m.condvit.save(d, preprocessor_config=pre_cfg))
    if resume:
        trainer.resume()
    state = trainer.fit(progress)
    (Path(cfg.out_dir) / "recipe.json").write_text(json.dumps(
        {"recipe": "condvit", "init": init, "conditioning": conditioning,
         "train_root": str(train_root)}, indent=2))
    return state


def condvit_validator(val_root: str | Path, preprocessor: Any, *, n_dist: int = 1000,
                      k: int = 1, seed: int = 0, num_workers: int = 0,
                      text_encoder: Any = None) -> Callable[[Any], float]:
    """Per-epoch validation score of a CondViT being trained: LRVS-F recall@``k`` with
    ``n_dist`` distractors, mean over the 20 seeded bootstrap folds, on an LRVS-F-layout
    validation set (the score that selects ``best/``). Embeddings go to a throw-away cache:
    every epoch's weights differ."""
    import shutil
    import tempfile

    from condsim.benchmarks.lrvsf import LRVSFConfig
    from condsim.benchmarks.run import run_benchmark
    from condsim.models.condvit import CondViTEncoder

    def score(pair: Any) -> float:
        device = next(pair.condvit.parameters()).device
        enc = CondViTEncoder(pair.condvit, preprocessor, name="condvit:training",
                             device=device, revision="training",
                             text_encoder=text_encoder if pair.condvit.cfg.conditioning == "text"
                             else None)
        tmp = tempfile.mkdtemp(prefix="condsim-val-")
        try:
            res = run_benchmark(enc, LRVSFConfig(
                data_root=str(val_root), conditioning=pair.condvit.cfg.conditioning,
                n_dists=(n_dist,),
                ks=(k,), seed=seed, folds="seeded", num_workers=num_workers, cache_dir=tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return float(res.headline["mean"])

    return score


def combiner_validator(kind: str, root: str | Path, backbone: Any,
                       cache_dir: str | None = None) -> Callable[[Any], float]:
    """Per-epoch validation score of a Combiner being trained: ``cirr`` (CIRR val R@1, the
    GeneCIS recipe's model selection) or ``genecis`` (average R@1; ``root`` holds
    ``annotations/``, ``coco/val2017`` and ``vg/VG_100K*``, the synthetic layout)."""
    from condsim.models.combiner import CombinerEncoder

    def score(pair: Any) -> float:
        enc = CombinerEncoder(pair.combiner, backbone, name="combiner:training")
        if kind == "cirr":
            from condsim.benchmarks.cirr import CirrConfig
            from condsim.benchmarks.run import run_benchmark

            res = run_benchmark(enc, CirrConfig(root=str(root), cache_dir=cache_dir,
                                                n_bootstrap=10))
        elif kind == "genecis":
            from condsim.benchmarks.genecis import GenecisConfig
            from condsim.benchmarks.run import run_benchmark

            r = Path(root)
            res = run_benchmark(enc, GenecisConfig(
                annotations=str(r / "annotations"), coco_root=str(r / "coco" / "val2017"),
                vg_roots=tuple(str(p) for p in sorted((r / "vg").glob("VG_100K*"))),
                cache_dir=cache_dir, n_bootstrap=10))
        else:
            raise ConfigError(f"validation benchmark must be one of {VALIDATION_KINDS}, got "
                              f"{kind!r}")
        return float(res.headline["mean"])

    return score


def slurm_script(argv: list[str], *, nodes: int, gpus_per_node: int, hours: int,
                 partition: str | None, out_dir: str | Path) -> str:
    """An sbatch script running ``condsim <argv>`` under torchrun on every node."""
    part = f"#SBATCH --partition={partition}\n" if partition else ""
    cmd = shlex.join(argv)  # paths with spaces stay one argument
    return f"""#!/bin/bash
#SBATCH --job-name=condsim-train
#SBATCH --nodes={nodes}
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node={gpus_per_node}
#SBATCH --time={hours}:00:00
#SBATCH --output={out_dir}/slurm-%j.out
{part}
head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
srun torchrun --nnodes {nodes} --nproc-per-node {gpus_per_node} \\
    --rdzv-backend c10d --rdzv-endpoint "$head:29500" --rdzv-id "$SLURM_JOB_ID" \\
    -m condsim.cli {cmd}
"""
