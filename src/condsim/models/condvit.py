"""CondViT (LRVS-F): a CLIP ViT whose token sequence gets one extra conditioning token.

Query: ``[CLS, c, patches]`` where ``c`` is a learned category embedding (or a linear
projection of a frozen CLIP text embedding of the caption); target: ``[CLS, patches]`` (no
condition). Output: post-layernorm CLS -> visual projection -> L2 normalisation.
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

from condsim.data.lrvsf import CATEGORIES
from condsim.errors import ModelError
from condsim.models.base import PixelEncoder
from condsim.models.preprocess import ImagePreprocessor
from condsim.registry import register_model
from condsim.results.run_result import atomic_write_text
from condsim.types import ModelMeta

CONFIG_NAME = "condvit_config.json"
COND_WEIGHTS = "conditioning.safetensors"


@dataclass(frozen=True)
class CondViTConfig:
    conditioning: str = "category"  # category | text
    categories: tuple[str, ...] = CATEGORIES
    text_dim: int = 0  # dimension of the frozen text embeddings (conditioning="text")
    text_backbone: str = ""  # condsim model name giving text embeddings (conditioning="text")


class CondViT(nn.Module):
    """``forward(pixels, conditions=None)``: conditions are category names (or text
    embeddings ``(B, text_dim)`` for text conditioning); ``None`` encodes targets."""

    def __init__(self, vision: nn.Module, cfg: CondViTConfig) -> None:
        super().__init__()
        self.vision = vision  # transformers CLIPVisionModelWithProjection
        self.cfg = cfg
        hidden = vision.config.hidden_size
        if cfg.conditioning == "category":
            self.cond = nn.Embedding(len(cfg.categories), hidden)
            nn.init.normal_(self.cond.weight, std=0.02)
        elif cfg.conditioning == "text":
            if cfg.text_dim <= 0:
                raise ModelError("text conditioning needs text_dim > 0")
            self.cond = nn.Linear(cfg.text_dim, hidden)
        else:
            raise ModelError(f"conditioning must be category or text, got {cfg.conditioning!r}")
        self._index = {c: i for i, c in enumerate(cfg.categories)}

    def category_ids(self, conditions: Sequence[str], device: torch.device) -> torch.Tensor:
        try:
            ids = [self._index[c] for c in conditions]
        except KeyError as exc:
            raise ModelError(
                f"unknown category {exc.args[0]!r}; known: {', '.join(self.cfg.categories)}"
            ) from None
        return torch.tensor(ids, device=device)

    def forward(self, pixels: torch.Tensor, conditions: Any = None) -> torch.Tensor:
        vm = self.vision.vision_model
        x = vm.embeddings(pixels)  # (B, 1 + patches, H)
        if conditions is not None:
            if isinstance(conditions, torch.Tensor):
                token = self.cond(conditions.to(x.dtype))
            else:
                token = self.cond(self.category_ids(conditions, x.device))
            x = torch.cat([x[:, :1], token[:, None, :].to(x.dtype), x[:, 1:]], dim=1)
        x = vm.pre_layrnorm(x)
        x = vm.encoder(inputs_embeds=x).last_hidden_state
        pooled = vm.post_layernorm(x[:, 0])
        return F.normalize(self.vision.visual_projection(pooled), dim=-1)

    def save(self, directory: str | Path, preprocessor_config: dict | None = None) -> Path:
        """Write vision tower (``save_pretrained``), conditioning weights, config and, when
        given, the image-processor config that ``condvit:<dir>`` loads."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.vision.save_pretrained(out)
        if preprocessor_config is not None:
            atomic_write_text(out / "preprocessor_config.json",
                              json.dumps(preprocessor_config, indent=2))
        save_file({k: v.detach().cpu().contiguous() for k, v in self.cond.state_dict().items()},
                  str(out / COND_WEIGHTS))
        atomic_write_text(out / CONFIG_NAME, json.dumps(asdict(self.cfg), indent=2))
        return out

    @classmethod
    def load(cls, directory: str | Path) -> CondViT:
        from transformers import CLIPVisionModelWithProjection

        d = Path(directory)
        if not (d / CONFIG_NAME).is_file() or not (d / "config.json").is_file():
            raise ModelError(f"{d}: not a CondViT checkpoint (needs config.json and "
                             f"{CONFIG_NAME})")
        raw = json.loads((d / CONFIG_NAME).read_text())
        raw["categories"] = tuple(raw.get("categories", CATEGORIES))
        model = cls(CLIPVisionModelWithProjection.from_pretrained(d), CondViTConfig(**raw))
        model.cond.load_state_dict(load_file(str(d / COND_WEIGHTS)))
        return model.eval()


def condvit_from_clip(clip_dir: str | Path, cfg: CondViTConfig | None = None,
                      seed: int = 0) -> CondViT:
    """A CondViT initialised from a CLIP checkpoint's vision tower (+ seeded new token)."""
    from transformers import CLIPModel, CLIPVisionModelWithProjection

    clip = CLIPModel.from_pretrained(clip_dir)
    vcfg = clip.config.vision_config
    vcfg.projection_dim = clip.config.projection_dim
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vision = CLIPVisionModelWithProjection(vcfg)
        vision.vision_model.load_state_dict(clip.vision_model.state_dict())
        vision.visual_projection.load_state_dict(clip.visual_projection.state_dict())
        return CondViT(vision.eval(), cfg or CondViTConfig())


class CondViTEncoder(PixelEncoder):
    """A :class:`CondViT` as a condsim encoder (category conditioning)."""

    def __init__(self, model: CondViT, preprocessor: ImagePreprocessor, name: str,
                 device: str | torch.device | None = None, revision: str = "") -> None:
        from condsim.models.base import default_device, module_digest

        self.device = torch.device(device) if device else default_device()
        self.model = model.to(self.device).eval()
        self.preprocessor = preprocessor
        self.meta = ModelMeta(
            name=name, embedding_dim=int(model.vision.config.projection_dim),
            preprocessing_id=preprocessor.id, conditions=(model.cfg.conditioning,),
            revision=revision or module_digest(model),
            extra={"conditioning": model.cfg.conditioning},
        )

    def encode_image_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixels)

    def encode_query_pixels(self, pixels: torch.Tensor, conditions: Sequence[str]) -> torch.Tensor:
        if self.model.cfg.conditioning != "category":
            raise ModelError("text-conditioned CondViT needs text embeddings; use category")
        return self.model(pixels, list(conditions))


@register_model("condvit:", scheme=True, description="CondViT checkpoint directory (category)")
def create_condvit(rest: str, **kwargs: Any) -> CondViTEncoder:
    from condsim.models.clip_hf import _read_preprocessor_config, _weights_digest

    model = CondViT.load(rest)
    pre = ImagePreprocessor.from_hf_config(_read_preprocessor_config(Path(rest)))
    return CondViTEncoder(model, pre, name=f"condvit:{rest}", revision=_weights_digest(
        Path(rest)), **kwargs)
