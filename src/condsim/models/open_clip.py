"""open_clip models (``open_clip:<arch>/<pretrained tag or checkpoint file>``,
``open_clip:hf-hub:<org/repo>``, ``open_clip:local-dir:<dir>``); needs the ``open_clip``
extra (``pip install 'condsim[open_clip]'``).

Weights, architecture and tokenizer come from open_clip itself; the image preprocessing is
condsim's PIL + numpy pipeline built from the model's ``preprocess_cfg``, reproducing
open_clip's evaluation transform (torchvision semantics: shortest-edge resize with the long
side truncated, centre crop anchored at ``round((size - crop) / 2)``), so decoding runs in
condsim's decode workers and no torchvision transform is called.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from condsim.errors import ModelError
from condsim.io import file_digest
from condsim.models.base import default_device, module_digest
from condsim.models.clip_hf import COMBINE_MODES, DualEncoder
from condsim.models.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ImagePreprocessor
from condsim.registry import register_model

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
             "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}


def preprocessor_from_open_clip(cfg: dict[str, Any]) -> ImagePreprocessor:
    """condsim's preprocessing equal to open_clip's eval transform for ``cfg`` (its
    ``PreprocessCfg`` fields: size, mean, std, interpolation, resize_mode, fill_color)."""
    size = cfg.get("size", 224)
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    interpolation = cfg.get("interpolation", "bicubic")
    if interpolation not in _RESAMPLE:
        raise ModelError(f"open_clip interpolation {interpolation!r} is not supported "
                         f"(known: {', '.join(_RESAMPLE)})")
    mode = cfg.get("resize_mode", "shortest")
    fit = ""
    if mode == "shortest":
        if h != w:
            raise ModelError(f"open_clip resize_mode 'shortest' with a non-square size {size} "
                             "is not supported")
        resize = h
    elif mode == "squash":
        resize = 0
    elif mode == "longest":
        resize, fit = 0, "longest"
    else:
        raise ModelError(f"open_clip resize_mode {mode!r} is not supported "
                         "(shortest, longest, squash)")
    return ImagePreprocessor(
        resize=resize, crop_h=h, crop_w=w,
        mean=tuple(float(x) for x in cfg.get("mean", OPENAI_CLIP_MEAN)),  # type: ignore[arg-type]
        std=tuple(float(x) for x in cfg.get("std", OPENAI_CLIP_STD)),  # type: ignore[arg-type]
        resample=int(_RESAMPLE[interpolation]), crop_anchor="round", fit=fit,
        fill=int(cfg.get("fill_color", 0) or 0),
    )


def import_open_clip() -> Any:
    """The ``open_clip`` module, or a :class:`ModelError` saying how to get it."""
    try:
        import open_clip
    except Exception as exc:  # noqa: BLE001 (not installed; torchvision missing or broken)
        raise ModelError(
            f"open_clip models need the open_clip_torch package and a working torchvision "
            f"(pip install 'condsim[open_clip]'); importing it failed: {exc}") from exc
    return open_clip


def parse_open_clip_name(rest: str) -> tuple[str, str | None]:
    """``<arch>/<pretrained>`` -> (arch, pretrained); ``hf-hub:...`` / ``local-dir:...``
    pass through (their weights come with the config)."""
    if rest.startswith(("hf-hub:", "local-dir:")):
        return rest, None
    arch, sep, pretrained = rest.partition("/")
    if not sep or not arch or not pretrained:
        raise ModelError(
            f"expected open_clip:<arch>/<pretrained tag or checkpoint path> (e.g. "
            f"open_clip:ViT-B-32/laion2b_s34b_b79k), open_clip:hf-hub:<org/repo> or "
            f"open_clip:local-dir:<dir>; got 'open_clip:{rest}'")
    return arch, pretrained


class OpenClipEncoder(DualEncoder):
    """An open_clip CLIP model as a condsim dual encoder (see :class:`DualEncoder`)."""

    def __init__(self, rest: str, *, mode: str = "image+text",
                 device: str | torch.device | None = None) -> None:
        if mode not in COMBINE_MODES:
            raise ModelError(f"unknown combination {mode!r}; choose from {COMBINE_MODES}")
        open_clip = import_open_clip()
        arch, pretrained = parse_open_clip_name(rest)
        looks_like_file = pretrained is not None and ("/" in pretrained or bool(
            Path(pretrained).suffix))
        if looks_like_file and not Path(str(pretrained)).expanduser().is_file():
            raise ModelError(f"open_clip:{rest}: checkpoint file {pretrained} not found")
        self.device = torch.device(device) if device is not None else default_device()
        try:
            self.model = open_clip.create_model(
                arch, pretrained=pretrained, device=self.device, precision="fp32",
                require_pretrained=True,
            ).eval()
            self.tokenizer = open_clip.get_tokenizer(arch)
        except Exception as exc:  # noqa: BLE001 (open_clip raises many types: one message)
            raise ModelError(f"open_clip:{rest}: cannot load ({type(exc).__name__}: {exc})"
                             ) from exc
        getter = getattr(open_clip, "get_model_preprocess_cfg", None)
        cfg = getter(self.model) if getter else getattr(self.model.visual, "preprocess_cfg", {})
        self.preprocessor = preprocessor_from_open_clip(dict(cfg))
        self.mode = mode
        dim = int(self.model.text_projection.shape[-1]) if isinstance(
            getattr(self.model, "text_projection", None), torch.Tensor) else None
        if dim is None:
            with torch.inference_mode():
                dim = int(self.encode_texts(["a"]).shape[-1])
        revision = file_digest(Path(pretrained)) if pretrained and Path(
            pretrained).is_file() else (pretrained or module_digest(self.model))
        base = f"open_clip:{rest}"
        self.meta = self._dual_meta(base, dim, revision, {
            "architecture": arch, "pretrained": pretrained, "base_name": base,
            "preprocess_cfg": {k: (list(v) if isinstance(v, tuple) else v)
                               for k, v in dict(cfg).items()}})

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Un-normalised image features ``f_img(x)`` (``model.encode_image``)."""
        return self.model.encode_image(pixels)

    def encode_image_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_features(pixels), dim=-1)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(texts)).to(self.device)
        return F.normalize(self.model.encode_text(tokens), dim=-1)


@register_model(
    "open_clip:", scheme=True,
    description="open_clip:<arch>/<tag-or-file> | hf-hub:<repo> | local-dir:<dir> "
                "(extra: open_clip)")
def create_open_clip(rest: str, **kwargs: Any) -> OpenClipEncoder:
    return OpenClipEncoder(rest, **kwargs)
