"""The Combiner of CLIP4Cir / GeneCIS on frozen CLIP features.

With ``i``/``t`` the (normalised) CLIP image/text features::

    p_t = Dropout(ReLU(W_t t)),  p_i = Dropout(ReLU(W_i i)),  r = [p_t, p_i]
    c   = Dropout(ReLU(W_c r))
    a   = Sigmoid(W_a2 Dropout(ReLU(W_a1 r)))          (learned dynamic scalar)
    q   = normalise(W_o c + a * t + (1 - a) * i)

GeneCIS sizes: projection 2560, hidden 5120, dropout 0.5.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from condsim.errors import ModelError
from condsim.io import atomic_write_text
from condsim.models.base import PixelEncoder, encode_texts_once, module_digest
from condsim.registry import register_model
from condsim.types import ModelMeta

CONFIG_NAME = "combiner_config.json"
WEIGHTS_NAME = "combiner.safetensors"


@dataclass(frozen=True)
class CombinerConfig:
    clip_dim: int
    projection_dim: int = 2560
    hidden_dim: int = 5120
    dropout: float = 0.5
    backbone: str = ""  # a condsim model name giving the frozen CLIP features


class Combiner(nn.Module):
    """``forward(image_features, text_features) -> normalised query embedding``."""

    def __init__(self, cfg: CombinerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, p, h = cfg.clip_dim, cfg.projection_dim, cfg.hidden_dim
        self.text_proj = nn.Sequential(nn.Linear(d, p), nn.ReLU(), nn.Dropout(cfg.dropout))
        self.image_proj = nn.Sequential(nn.Linear(d, p), nn.ReLU(), nn.Dropout(cfg.dropout))
        self.combine = nn.Sequential(nn.Linear(2 * p, h), nn.ReLU(), nn.Dropout(cfg.dropout))
        self.scalar = nn.Sequential(nn.Linear(2 * p, h), nn.ReLU(), nn.Dropout(cfg.dropout),
                                    nn.Linear(h, 1), nn.Sigmoid())
        self.out = nn.Linear(h, d)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        raw = torch.cat([self.text_proj(text), self.image_proj(image)], dim=-1)
        a = self.scalar(raw)
        return F.normalize(self.out(self.combine(raw)) + a * text + (1 - a) * image, dim=-1)

    def save(self, directory: str | Path) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
                  str(out / WEIGHTS_NAME))
        atomic_write_text(out / CONFIG_NAME, json.dumps(asdict(self.cfg), indent=2))
        return out

    @classmethod
    def load(cls, directory: str | Path) -> Combiner:
        d = Path(directory)
        if not (d / CONFIG_NAME).is_file() or not (d / WEIGHTS_NAME).is_file():
            raise ModelError(f"{d}: not a Combiner checkpoint (needs {CONFIG_NAME} and "
                             f"{WEIGHTS_NAME})")
        model = cls(CombinerConfig(**json.loads((d / CONFIG_NAME).read_text())))
        model.load_state_dict(load_file(str(d / WEIGHTS_NAME)))
        return model.eval()


class CombinerEncoder(PixelEncoder):
    """Queries = Combiner(CLIP image feature, CLIP text feature of the condition); targets =
    the backbone's normalised image features."""

    def __init__(self, combiner: Combiner, backbone: Any, name: str, revision: str = "") -> None:
        if not hasattr(backbone, "encode_texts"):
            raise ModelError(f"Combiner backbone {backbone.meta.name} has no text tower")
        self.combiner = combiner.to(backbone.device).eval()
        self.backbone = backbone
        self.preprocessor = backbone.preprocessor
        self.device = backbone.device
        self.meta = ModelMeta(
            name=name, embedding_dim=backbone.meta.embedding_dim,
            preprocessing_id=backbone.meta.preprocessing_id,
            conditions=backbone.meta.conditions,
            revision=f"{backbone.meta.revision}+{revision or module_digest(combiner)}",
            extra={"backbone": backbone.meta.name, **asdict(combiner.cfg)},
        )

    composes_from_targets = True

    def encode_image_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode_image_pixels(pixels)

    @torch.inference_mode()
    def compose_queries(self, target_emb: torch.Tensor, conditions: Sequence[str]
                        ) -> torch.Tensor:
        """Combiner(target embedding = backbone image feature, text feature of the condition)."""
        with self.autocast():
            text = encode_texts_once(self.backbone.encode_texts, conditions)
            return self.combiner(target_emb.to(self.device), text).float().cpu()

    def encode_query_pixels(self, pixels: torch.Tensor, conditions: Sequence[str]) -> torch.Tensor:
        return self.combiner(self.backbone.encode_image_pixels(pixels),
                             self.backbone.encode_texts(conditions))


@register_model("combiner:", scheme=True,
                description="Combiner checkpoint dir (combiner_config.json names its backbone)")
def create_combiner(rest: str, **kwargs: Any) -> CombinerEncoder:
    from condsim.registry import create_model

    combiner = Combiner.load(rest)
    if not combiner.cfg.backbone:
        raise ModelError(f"{rest}: {CONFIG_NAME} does not name its CLIP backbone")
    return CombinerEncoder(combiner, create_model(combiner.cfg.backbone, **kwargs),
                           name=f"combiner:{rest}")
