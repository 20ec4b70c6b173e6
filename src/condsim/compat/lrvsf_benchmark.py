"""Drop-in replacement for the official ``lrvsf_benchmark`` package.

Change one import line::

    # from lrvsf_benchmark import LRVSF, LRVSFModel
    from condsim.compat.lrvsf_benchmark import LRVSF, LRVSFModel

and an existing wrapper runs unchanged: ``encode_queries(imgs, conds)`` receives a pandas
Series of raw JPEG bytes (``Image.open(BytesIO(imgs.iloc[i]))`` works) and a list of str,
``encode_targets(imgs)`` a Series of bytes; ``run(model, model_name, output_folder=".")``
writes ``<model_name with "/" -> "_">.yaml`` in the leaderboard format.

Differences from the original, all on the side of correctness: the bootstrap folds ship with
condsim (no ``bootstrapped_indices.pt`` read from the working directory); distractor draws are
seeded (``seed=0``) and recorded; no logging configured at import; scores are computed
exactly in one pass (:func:`condsim.search.exact.fold_rank_counts`) instead of calling
``model.topk`` 80 times. ``use_model_topk=True`` calls the model's ``topk`` per fold like the
original (same seeded draws).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from condsim.benchmarks.lrvsf import (
    DIST_COUNTS,
    KS,
    NFOLDS,
    load_folds,
    seeded_draw_rows,
    seeded_draws,
)
from condsim.benchmarks.lrvsf_core import recalls_from_fold_counts
from condsim.data import lrvsf as data
from condsim.errors import CondsimError
from condsim.metrics.recall import weighted_mean_std
from condsim.results.yaml_card import lrvsf_model_index, write_yaml
from condsim.search.exact import fold_rank_counts
from condsim.types import as_float32_rows

logger = logging.getLogger(__name__)

__all__ = ["LRVSF", "LRVSFModel"]


class LRVSFModel(ABC, torch.nn.Module):
    """The official abstract model: implement ``encode_queries``, ``encode_targets``, ``topk``."""

    @abstractmethod
    def encode_queries(self, imgs: Any, conds: list[str]) -> torch.Tensor:
        """Embeddings ``(len(imgs), D)`` of query images with their conditions."""

    @abstractmethod
    def encode_targets(self, imgs: Any) -> torch.Tensor:
        """Embeddings ``(len(imgs), D)`` of target images."""

    @abstractmethod
    def topk(self, q_embs: torch.Tensor, t_embs: torch.Tensor, topk: int) -> torch.Tensor:
        """Indices ``(len(q_embs), topk)`` of the most similar targets per query."""


class LRVSF:
    """The official evaluator's interface, scored exactly and reproducibly."""

    K_EVALUATIONS = [k - 1 for k in KS]
    DIST_EVALUATIONS = list(DIST_COUNTS)
    NFOLDS = NFOLDS

    def __init__(
        self,
        data_root: str,
        conditioning: str,
        dist_img_col: str = "jpg",
        aggregate_batches: int = 100_000,
        fragments_readahead: int = 2,
        dev_run: bool = False,
        *,
        seed: int = 0,
        folds: str = "official",
        use_model_topk: bool = False,
        n_dists: tuple[int, ...] = DIST_COUNTS,
    ) -> None:
        data.check_data_root(data_root)
        if conditioning not in data.CONDITION_COLUMNS:
            raise CondsimError(f"conditioning must be 'text' or 'category', got {conditioning!r}")
        self.data_root = data_root
        self.conditioning_type = conditioning
        self.conditioning_col = data.CONDITION_COLUMNS[conditioning]
        self.dist_img_col = dist_img_col
        self.aggregate_batches = aggregate_batches
        self.fragments_readahead = fragments_readahead
        self.dev_run = dev_run
        self.seed = seed
        self.folds_spec = folds
        self.use_model_topk = use_model_topk
        self.DIST_EVALUATIONS = list(n_dists)
        self.last_recalls: dict[int, tuple[list[float], list[float]]] = {}

    def _embed(self, out: Any, n: int, what: str) -> np.ndarray:
        dim = int(out.shape[1]) if getattr(out, "ndim", 0) == 2 else -1
        return as_float32_rows(out, n, dim, what)

    def get_products_embeddings(self, model: LRVSFModel) -> tuple[np.ndarray, np.ndarray]:
        products = data.read_products(self.data_root, self.conditioning_type)
        complex_imgs = pd.Series(products.query_images, dtype=object)
        simple_imgs = pd.Series(products.target_images, dtype=object)
        with torch.no_grad():
            q = model.encode_queries(complex_imgs, list(products.conditions))
            t = model.encode_targets(simple_imgs)
        n = len(products)
        return self._embed(q, n, "encode_queries"), self._embed(t, n, "encode_targets")

    def get_distractors_embeddings(self, model: LRVSFModel) -> np.ndarray:
        parts = []
        for batch in data.iter_distractor_batches(
            self.data_root, self.dist_img_col, self.aggregate_batches,
            self.fragments_readahead, self.dev_run,
        ):
            imgs = pd.Series(batch, dtype=object)
            with torch.no_grad():
                out = model.encode_targets(imgs)
            parts.append(self._embed(out, len(batch), "encode_targets(distractors)"))
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    def _topk_recalls(
        self, model: LRVSFModel, q: np.ndarray, t: np.ndarray, d: np.ndarray,
        folds: np.ndarray, draws: list[np.ndarray],
    ) -> np.ndarray:
        """The original loop: per fold, gather the gallery and call ``model.topk``."""
        out = np.zeros((folds.shape[0], len(draws), len(KS)))
        qt, tt, dt = (torch.from_numpy(x) for x in (q, t, d))
        for li, dr in enumerate(draws):
            for f in range(folds.shape[0]):
                uniq, counts = np.unique(folds[f], return_counts=True)
                gallery = torch.cat([tt[uniq], dt[dr[f]]])
                top = model.topk(qt[uniq], gallery, min(100, gallery.shape[0]))
                hits = torch.as_tensor(top).cpu() == torch.arange(len(uniq))[:, None]
                first = hits.float().cumsum(1) > 0
                w = torch.from_numpy(counts).double()
                for j, k in enumerate(KS):
                    col = first[:, min(k, first.shape[1]) - 1].double()
                    out[f, li, j] = float((col * w).sum() / w.sum())
        return out

    def run(self, model: LRVSFModel, model_name: str, output_folder: str = ".") -> dict:
        """Encode, score all folds and distractor counts, write ``<model_name>.yaml``."""
        q, t = self.get_products_embeddings(model)
        d = self.get_distractors_embeddings(model)
        if d.shape[0] == 0:
            raise CondsimError("no distractors were encoded")
        if d.shape[1] != q.shape[1]:
            raise CondsimError(f"distractor dim {d.shape[1]} != query dim {q.shape[1]}")
        if d.shape[0] < 1_000_000:
            logger.warning(
                "Only %d distractors available. This benchmark is intended for at least 1M.",
                d.shape[0],
            )
        folds, _ = load_folds(self.folds_spec, q.shape[0], self.seed)
        if self.use_model_topk:
            rows = list(seeded_draw_rows(
                self.seed, self.DIST_EVALUATIONS, folds.shape[0], d.shape[0]))
            nf = folds.shape[0]
            draws = [np.stack(rows[i * nf:(i + 1) * nf]) for i in range(len(self.DIST_EVALUATIONS))]
            rec = self._topk_recalls(model, q, t, d, folds, draws)
        else:
            dd = seeded_draws(self.seed, self.DIST_EVALUATIONS, folds.shape[0], d.shape[0])
            rec = recalls_from_fold_counts(fold_rank_counts(q, t, d, folds, dd), KS)
        recalls = {}
        for li, n in enumerate(self.DIST_EVALUATIONS):
            mean, std = weighted_mean_std(rec[:, li, :], axis=0)
            recalls[n] = (mean.tolist(), std.tolist())
        self.last_recalls = recalls
        card = lrvsf_model_index(
            model_name, recalls, KS, d.shape[0], q.shape[1], self.conditioning_type
        )
        write_yaml(Path(output_folder) / (model_name.replace("/", "_") + ".yaml"), card)
        return card
