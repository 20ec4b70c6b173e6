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
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from condsim.data.lrvsf import CATEGORIES
from condsim.errors import ModelError
from condsim.io import atomic_write_text
from condsim.models.base import PixelEncoder, encode_texts_once, module_digest
from condsim.models.preprocess import ImagePreprocessor
from condsim.registry import register_model
from condsim.types import ModelMeta

CONFIG_NAME = "condvit_config.json"
COND_WEIGHTS = "conditioning.safetensors"


@dataclass(frozen=True)
class CondViTConfig:
    conditioning: str = "category"  # category | text
    categories: tuple[str, ...] = CATEGORIES
    text_dim: int = 0  # dimension of the frozen text embeddings (conditioning="text")
    text_backbone: str = ""  # condsim model name giving text embeddings (conditioning="text")
    #: the backbone's ``meta.revision`` at training time: a text-conditioned CondViT only
    #: makes sense with the very text features it was trained on
    text_backbone_revision: str = ""


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
    """A :class:`CondViT` as a condsim encoder. Category conditioning takes category names;
    text conditioning takes free text, embedded by ``text_encoder`` (a CLIP-style model with
    ``encode_texts``: the frozen backbone the CondViT was trained with)."""

    def __init__(self, model: CondViT, preprocessor: ImagePreprocessor, name: str,
                 device: str | torch.device | None = None, revision: str = "",
                 text_encoder: Any = None) -> None:
        from condsim.models.base import default_device

        self.device = torch.device(device) if device else default_device()
        self.model = model.to(self.device).eval()
        self.preprocessor = preprocessor
        self.text_encoder = text_encoder
        if model.cfg.conditioning == "text" and text_encoder is None:
            raise ModelError("a text-conditioned CondViT needs its text encoder "
                             f"({model.cfg.text_backbone or 'its CLIP backbone'})")
        text_rev = "" if text_encoder is None else f"+text:{text_encoder.meta.revision}"
        self.meta = ModelMeta(
            name=name, embedding_dim=int(model.vision.config.projection_dim),
            preprocessing_id=preprocessor.id, conditions=(model.cfg.conditioning,),
            revision=(revision or module_digest(model)) + text_rev,
            extra={"conditioning": model.cfg.conditioning,
                   **({"text_backbone": model.cfg.text_backbone} if text_encoder else {})},
        )

    def encode_image_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixels)

    def encode_query_pixels(self, pixels: torch.Tensor, conditions: Sequence[str]) -> torch.Tensor:
        if self.model.cfg.conditioning == "text":
            text = encode_texts_once(self.text_encoder.encode_texts, list(conditions))
            return self.model(pixels, text.to(pixels.device, torch.float32))
        return self.model(pixels, list(conditions))


def load_text_backbone(cfg: CondViTConfig, **kwargs: Any) -> Any:
    """The frozen CLIP text encoder a text-conditioned CondViT was trained with, checked
    against the revision recorded at training time."""
    from condsim.registry import create_model

    if not cfg.text_backbone:
        raise ModelError("this text-conditioned CondViT names no text backbone")
    backbone = create_model(cfg.text_backbone, **kwargs)
    if cfg.text_backbone_revision and backbone.meta.revision != cfg.text_backbone_revision:
        raise ModelError(
            f"text backbone {cfg.text_backbone} has weights {backbone.meta.revision}, but this "
            f"CondViT was trained on text features of {cfg.text_backbone_revision}")
    if not hasattr(backbone, "encode_texts"):
        raise ModelError(f"text backbone {cfg.text_backbone} has no text tower")
    return backbone


#: The authors' evaluation transform (CondViT-LRVSF ``valid_tf``): white square padding,
#: bilinear resize to 224 x 224, CLIP normalisation.
AUTHORS_PREPROCESSOR = ImagePreprocessor(resize=0, crop_h=224, crop_w=224,
                                         resample=int(Image.Resampling.BILINEAR), pad_square=255)
_AUTHORS_FILES = ("model.safetensors", "pytorch_model.bin")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (any unreadable file: one clear error)
        raise ModelError(f"{path}: cannot read the checkpoint ({type(exc).__name__}: {exc})"
                         ) from exc
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ModelError(f"{path}: expected a state dict, got {type(sd).__name__}")
    return sd


def _authors_weights(path: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """The authors' ``ConditionalViT`` state dict from a file or a hub-style directory, with
    any wrapper prefix (``module.`` from DDP, ``model.`` from a hub wrapper) removed."""
    file = path
    if path.is_dir():
        found = [path / f for f in _AUTHORS_FILES if (path / f).is_file()] + sorted(
            path.glob("*.pth")) + sorted(path.glob("*.pt"))
        if not found:
            raise ModelError(f"{path}: not a CondViT checkpoint: no {CONFIG_NAME} (condsim's "
                             f"layout) and no {' / '.join(_AUTHORS_FILES)} / *.pth (authors')")
        file = found[0]
    sd = _read_state_dict(file)
    prefix = next((k[: -len("conv1.weight")] for k in sd if k.endswith("conv1.weight")), None)
    if prefix is None or f"{prefix}class_embedding" not in sd:
        raise ModelError(f"{file}: not a CondViT-LRVSF checkpoint (no conv1.weight / "
                         "class_embedding keys)")
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}, file


def condvit_from_authors(path: str | Path, heads: int | None = None) -> CondViT:
    """A :class:`CondViT` from the authors' checkpoint (``lrvsf.model.ConditionalViT`` state
    dict: a ``.pth`` of their training code, or a directory with ``model.safetensors`` /
    ``pytorch_model.bin`` as on the hub), converted exactly.

    The architecture is read off the weights as their ``load_chkpt`` does (width, patch size,
    grid, depth, output dim, number of categories); heads default to ``width // 64`` (CLIP's
    rule) unless a ``config.json`` beside the weights names them. Their category token sits
    after the patches with its own positional embedding ``c_pos``; attention has no mask, so
    the token's place in the sequence is irrelevant and ``c_embedding[i] + c_pos`` is exactly
    condsim's category token ``i``. Their categories are ``constants.categories``, the same
    order as :data:`~condsim.data.lrvsf.CATEGORIES`.
    """
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    sd, file = _authors_weights(Path(path))
    if "c_embedding.weight" not in sd:
        raise ModelError(f"{file}: an unconditional ViT (no c_embedding); condvit: needs the "
                         "categorical CondViT")
    width, _, patch, _ = sd["conv1.weight"].shape
    n_pos = sd["positional_embedding"].shape[0] - 1
    grid = round(n_pos ** 0.5)
    layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("transformer.resblocks."))
    n_cat = sd["c_embedding.weight"].shape[0]
    if n_cat != len(CATEGORIES):
        raise ModelError(f"{file}: {n_cat} category embeddings, expected {len(CATEGORIES)} "
                         f"({', '.join(CATEGORIES)})")
    if heads is None:
        cfg_file = (file.parent / "config.json")
        raw = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
        heads = int(raw.get("heads", raw.get("num_attention_heads", max(1, width // 64))))
    vcfg = CLIPVisionConfig(
        hidden_size=width, intermediate_size=sd["transformer.resblocks.0.mlp.c_fc.weight"]
        .shape[0], num_hidden_layers=layers, num_attention_heads=heads,
        image_size=grid * patch, patch_size=patch, projection_dim=sd["proj"].shape[1],
        hidden_act="quick_gelu", layer_norm_eps=1e-5,
    )
    new: dict[str, torch.Tensor] = {
        "vision_model.embeddings.class_embedding": sd["class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": sd["conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": sd["positional_embedding"],
        "visual_projection.weight": sd["proj"].t(),
    }
    for ours, theirs in (("pre_layrnorm", "ln_pre"), ("post_layernorm", "ln_post")):
        for p in ("weight", "bias"):
            new[f"vision_model.{ours}.{p}"] = sd[f"{theirs}.{p}"]
    for i in range(layers):
        a, b = f"transformer.resblocks.{i}.", f"vision_model.encoder.layers.{i}."
        for p in ("weight", "bias"):
            q, k, v = sd[f"{a}attn.in_proj_{p}"].chunk(3, dim=0)
            new.update({f"{b}self_attn.q_proj.{p}": q, f"{b}self_attn.k_proj.{p}": k,
                        f"{b}self_attn.v_proj.{p}": v,
                        f"{b}self_attn.out_proj.{p}": sd[f"{a}attn.out_proj.{p}"],
                        f"{b}layer_norm1.{p}": sd[f"{a}ln_1.{p}"],
                        f"{b}layer_norm2.{p}": sd[f"{a}ln_2.{p}"],
                        f"{b}mlp.fc1.{p}": sd[f"{a}mlp.c_fc.{p}"],
                        f"{b}mlp.fc2.{p}": sd[f"{a}mlp.c_proj.{p}"]})
    vision = CLIPVisionModelWithProjection(vcfg)
    missing, unexpected = vision.load_state_dict(new, strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise ModelError(f"{file}: conversion left missing {missing} / unexpected {unexpected}")
    model = CondViT(vision, CondViTConfig(conditioning="category"))
    with torch.no_grad():
        model.cond.weight.copy_(sd["c_embedding.weight"] + sd["c_pos_embedding"].reshape(1, -1))
    return model.eval()


@register_model(
    "condvit:", scheme=True, conditions=("category", "text"),
    description="CondViT: condsim checkpoint dir, or the authors' (.pth, hub dir or id)")
def create_condvit(rest: str, **kwargs: Any) -> CondViTEncoder:
    from condsim.models.clip_hf import _read_preprocessor_config, _weights_digest

    path = Path(rest).expanduser()
    if not path.exists():  # a hub id (e.g. Slep/CondViT-B16-cat) from the local HF cache/hub
        from condsim.models.clip_hf import resolve_checkpoint

        path = resolve_checkpoint(rest)
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        model = CondViT.load(path)
        pre = ImagePreprocessor.from_hf_config(_read_preprocessor_config(path))
        text = load_text_backbone(model.cfg, **kwargs) if model.cfg.conditioning == "text" \
            else None
        return CondViTEncoder(model, pre, name=f"condvit:{rest}",
                              revision=_weights_digest(path), text_encoder=text, **kwargs)
    model = condvit_from_authors(path)
    return CondViTEncoder(model, AUTHORS_PREPROCESSOR, name=f"condvit:{rest}",
                          revision=module_digest(model), **kwargs)
