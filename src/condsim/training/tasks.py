"""Contrastive tasks for :class:`condsim.training.trainer.Trainer`.

- :class:`FeatureTripletTask`: the GeneCIS recipe: a Combiner on *frozen* CLIP features,
  precomputed once (through the embedding cache) for every unique image and condition.
- :class:`PixelTripletTask`: end-to-end training of an image model with a condition input
  (CondViT): pixels are preprocessed once and kept in memory.
Both models are wrapped so that one ``forward`` returns ``(queries, targets)`` (DDP-friendly).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from condsim.errors import CondsimError


class CombinerPair(nn.Module):
    """``forward(ref_img_feat, text_feat, target_img_feat) -> (combiner(ref, text), target)``."""

    def __init__(self, combiner: nn.Module) -> None:
        super().__init__()
        self.combiner = combiner

    def forward(self, ref: torch.Tensor, text: torch.Tensor, tgt: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.combiner(ref, text), F.normalize(tgt, dim=-1)


class CondViTPair(nn.Module):
    """``forward(query_pixels, conditions, target_pixels) -> (condvit(q, c), condvit(t))``."""

    def __init__(self, condvit: nn.Module) -> None:
        super().__init__()
        self.condvit = condvit

    def forward(self, qpx: torch.Tensor, conds: list[str] | torch.Tensor, tpx: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.condvit(qpx, conds), self.condvit(tpx)


class FeatureTripletTask:
    """Triplets ``(reference image, condition, target image)`` over precomputed features.

    ``image_feats`` ``(I, D)`` and ``text_feats`` ``(C, D)`` are frozen CLIP features;
    ``triplets`` ``(n, 3)`` int rows ``(reference image, condition, target image)``.
    """

    def __init__(self, image_feats: np.ndarray, text_feats: np.ndarray,
                 triplets: np.ndarray) -> None:
        triplets = np.asarray(triplets, dtype=np.int64)
        if triplets.ndim != 2 or triplets.shape[1] != 3:
            raise CondsimError(f"triplets must be (n, 3) index rows, got {triplets.shape}")
        if triplets.size and (triplets[:, [0, 2]].max() >= len(image_feats)
                              or triplets[:, 1].max() >= len(text_feats) or triplets.min() < 0):
            raise CondsimError("triplets reference images/conditions that have no features "
                               "(training data and image features do not match)")
        self.img = torch.from_numpy(np.ascontiguousarray(image_feats, np.float32))
        self.txt = torch.from_numpy(np.ascontiguousarray(text_feats, np.float32))
        self.triplets = torch.from_numpy(triplets)

    def __len__(self) -> int:
        return int(self.triplets.shape[0])

    def embed(self, model: nn.Module, idx: np.ndarray, device: torch.device
              ) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.triplets[torch.from_numpy(np.asarray(idx))]
        return model(self.img[t[:, 0]].to(device), self.txt[t[:, 1]].to(device),
                     self.img[t[:, 2]].to(device))


class PixelTripletTask:
    """``(query pixels, condition, target pixels)`` examples held in memory; conditions are
    category names or a ``(n, text_dim)`` tensor of frozen text embeddings."""

    def __init__(self, query_px: torch.Tensor, conditions: Sequence[str] | torch.Tensor,
                 target_px: torch.Tensor) -> None:
        if not (len(query_px) == len(conditions) == len(target_px)):
            raise CondsimError("queries, conditions and targets must have the same length")
        self.q = query_px
        self.c = conditions if isinstance(conditions, torch.Tensor) else list(conditions)
        self.t = target_px

    def __len__(self) -> int:
        return len(self.c)

    def embed(self, model: nn.Module, idx: np.ndarray, device: torch.device
              ) -> tuple[torch.Tensor, torch.Tensor]:
        i = torch.from_numpy(np.asarray(idx))
        conds = self.c[i].to(device) if isinstance(self.c, torch.Tensor) else [
            self.c[j] for j in idx.tolist()]
        return model(self.q[i].to(device), conds, self.t[i].to(device))


def preprocess_all(preprocessor: Any, images: Sequence[Any]) -> torch.Tensor:
    """Stack preprocessed pixels of ``images`` (small training sets)."""
    return torch.from_numpy(np.stack([preprocessor(im) for im in images]))
