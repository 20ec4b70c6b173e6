"""transformers CLIP / SigLIP checkpoints (``hf:<local-dir-or-hub-id>``).

Queries combine image and condition text the GeneCIS way (mean of the normalised image and
text features, renormalised); targets are normalised image features. Other combinations
(``image-only``, ``text-only``) are available through ``combine:<mode>/<model>``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from condsim.errors import ModelError
from condsim.models.base import PixelEncoder, default_device, encode_texts_once
from condsim.models.preprocess import ImagePreprocessor
from condsim.registry import register_model
from condsim.types import ModelMeta

logger = logging.getLogger(__name__)

COMBINE_MODES = ("image+text", "image-only", "text-only")


def _features(out: Any) -> torch.Tensor:
    """transformers 5 returns model outputs from ``get_*_features``; 4.x returns tensors."""
    if isinstance(out, torch.Tensor):
        return out
    for attr in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(out, attr, None)
        if isinstance(value, torch.Tensor):
            return value
    raise ModelError(f"cannot find features in model output of type {type(out).__name__}")


def _read_preprocessor_config(path: Path) -> dict[str, Any]:
    pre = path / "preprocessor_config.json"
    if pre.is_file():
        return json.loads(pre.read_text())
    proc = path / "processor_config.json"
    if proc.is_file():
        data = json.loads(proc.read_text())
        if "image_processor" in data:
            return data["image_processor"]
    raise ModelError(
        f"{path}: no preprocessor_config.json or processor_config.json with an image "
        "processor; save the processor with `processor.save_pretrained(dir)`"
    )


def _weights_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=8)
    for name in sorted(os.listdir(path)):
        if name.endswith((".json", ".safetensors", ".bin")):
            with open(path / name, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 22), b""):  # noqa: B023
                    h.update(chunk)
    return h.hexdigest()


def resolve_checkpoint(name_or_path: str) -> Path:
    """A local checkpoint directory, or a hub id resolved through the local HF cache/hub."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            held = sorted(p.name for p in path.iterdir())[:8] if path.is_dir() else []
            raise ModelError(
                f"{path}: not a transformers checkpoint directory (no config.json"
                + (f"; it holds {held}" if path.is_dir() else "")
                + "); save one with `model.save_pretrained(dir)`"
            )
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path))
    except Exception as exc:
        raise ModelError(
            f"cannot load {name_or_path!r}: not a local directory and the hub is unreachable "
            f"or has no such model ({type(exc).__name__}: {exc}). Download it once, then pass "
            "the local directory (works offline with HF_HUB_OFFLINE=1)"
        ) from exc


class DualEncoder(PixelEncoder):
    """A CLIP-style image/text dual encoder. Queries combine the image and the condition text
    by ``mode``: ``image+text`` is the GeneCIS baseline
    ``q = normalize(normalize(f_img(x)) + normalize(f_txt(c)))``; ``image-only`` is
    ``normalize(f_img(x))``; ``text-only`` is ``normalize(f_txt(c))``. Targets are
    ``normalize(f_img(y))``."""

    mode: str = "image+text"
    #: the tokenizer's ``padding``: ``True`` (to the batch's longest text) or ``"max_length"``
    text_padding: bool | str = True

    @abstractmethod
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Normalised text features of ``texts``."""

    def encode_query_pixels(
        self, pixels: torch.Tensor, conditions: Sequence[str]
    ) -> torch.Tensor:
        if self.mode == "image-only":
            return self.encode_image_pixels(pixels)
        text = self.encode_texts(conditions)
        if self.mode == "text-only":
            return text
        return F.normalize(self.encode_image_pixels(pixels) + text, dim=-1)

    @property
    def composes_from_targets(self) -> bool:  # type: ignore[override]
        return self.mode != "text-only"  # text-only queries need no image feature at all

    @torch.inference_mode()
    def compose_queries(self, target_emb: torch.Tensor, conditions: Sequence[str]
                        ) -> torch.Tensor:
        """``image-only``: the target embedding itself; ``image+text``:
        ``normalize(t + normalize(f_txt(c)))`` with ``t = normalize(f_img(x))`` the cached target
        embedding (the formula of :meth:`encode_query_pixels`)."""
        image = target_emb.to(self.device, torch.float32)
        if self.mode == "image-only":
            return image.cpu()
        with self.autocast():
            text = encode_texts_once(self.encode_texts, conditions).float()
        return F.normalize(image + text, dim=-1).cpu()

    def _dual_meta(self, base: str, dim: int, revision: str, extra: dict[str, Any]) -> ModelMeta:
        mode = self.mode
        return ModelMeta(
            name=base if mode == "image+text" else f"combine:{mode}/{base}",
            embedding_dim=dim,
            # "+txtpad": text features from max_length padding (SigLIP), unlike earlier
            # condsim versions, so their cached queries are never reused
            preprocessing_id=f"{self.preprocessor.id}+{mode}"
            + ("+txtpad" if self.text_padding == "max_length" else ""),
            conditions=("category", "text"),
            revision=revision,
            extra={**extra, "mode": mode},
            precision=self.precision,
        )

    def with_mode(self, mode: str) -> DualEncoder:
        """A view of this encoder with another image/text combination (shares the weights)."""
        if mode not in COMBINE_MODES:
            raise ModelError(f"unknown combination {mode!r}; choose from {COMBINE_MODES}")
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.mode = mode
        base = self.meta.extra.get("base_name", self.meta.name)
        clone.meta = clone._dual_meta(base, self.meta.embedding_dim, self.meta.revision,
                                      self.meta.extra)
        return clone


#: transformers model types whose text tower needs texts padded to ``max_length``
PAD_TO_MAX_LENGTH = ("siglip", "siglip2")


class HFClipEncoder(DualEncoder):
    """A CLIP-family dual encoder from a transformers checkpoint."""

    def __init__(
        self,
        name_or_path: str,
        *,
        mode: str = "image+text",
        device: str | torch.device | None = None,
        name: str | None = None,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        if mode not in COMBINE_MODES:
            raise ModelError(f"unknown combination {mode!r}; choose from {COMBINE_MODES}")
        path = resolve_checkpoint(name_or_path)
        try:
            self.model = AutoModel.from_pretrained(path).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path}: cannot load model/tokenizer ({exc})") from exc
        if not hasattr(self.model, "get_image_features"):
            raise ModelError(f"{path}: {type(self.model).__name__} has no image/text towers")
        if self.model.config.model_type == "siglip2":
            raise ModelError(
                f"{path}: SigLIP 2 NaFlex checkpoints (variable-resolution patch sequences) are "
                "not supported yet; the fixed-resolution SigLIP 2 checkpoints (e.g. "
                "google/siglip2-base-patch16-224, model type 'siglip') are")
        self.device = torch.device(device) if device is not None else default_device()
        self.model.to(self.device)
        self.preprocessor = ImagePreprocessor.from_hf_config(_read_preprocessor_config(path))
        self.mode = mode
        cfg = self.model.config
        dim = int(getattr(cfg, "projection_dim", 0) or cfg.text_config.hidden_size)
        self.max_length = int(getattr(cfg.text_config, "max_position_embeddings", 77))
        # SigLIP pools the *last* position and was trained on texts padded to max_length:
        # padding to the longest text of a batch changes every shorter text's features (and
        # makes them depend on their batch-mates). CLIP pools the EOS token: padding is inert.
        self.text_padding = "max_length" if cfg.model_type in PAD_TO_MAX_LENGTH else True
        # SigLIP 2 was trained on lowercased text and its Gemma tokenizer keeps case (its
        # fixed-resolution checkpoints load as model type "siglip"; SigLIP 1's own tokenizer
        # lowercases by itself, so lowercasing first changes nothing there)
        self.lowercase_text = cfg.model_type in PAD_TO_MAX_LENGTH
        base = name or f"hf:{name_or_path}"
        self.meta = self._dual_meta(base, dim, _weights_digest(path), {
            "path": str(path), "architecture": type(self.model).__name__, "base_name": base,
            "text_padding": str(self.text_padding)})

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Un-normalised image features ``f_img(x)`` (the projected pooled vision output)."""
        return _features(self.model.get_image_features(pixel_values=pixels))

    def encode_image_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_features(pixels), dim=-1)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Normalised text features of ``texts``."""
        texts = [t.lower() for t in texts] if self.lowercase_text else texts
        tok = self.tokenizer(
            list(texts), padding=self.text_padding, truncation=True, max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        return F.normalize(_features(self.model.get_text_features(**tok)), dim=-1)


@register_model("hf:", scheme=True, description="transformers CLIP/SigLIP checkpoint (dir or id)")
def create_hf(rest: str, **kwargs: Any) -> HFClipEncoder:
    return HFClipEncoder(rest, **kwargs)


@register_model(
    "combine:", scheme=True,
    description="GeneCIS baselines: combine:image-only|text-only|image+text/<clip model>",
)
def create_combine(rest: str, **kwargs: Any) -> PixelEncoder:
    from condsim.registry import create_model

    mode, sep, base = rest.partition("/")
    if not sep or mode not in COMBINE_MODES:
        raise ModelError(
            f"expected combine:<mode>/<model> with mode in {COMBINE_MODES}, got 'combine:{rest}'"
        )
    model = create_model(base, **kwargs)
    if not isinstance(model, DualEncoder):
        raise ModelError(f"combine: needs a CLIP dual encoder, {base!r} is not one")
    return model.with_mode(mode)
