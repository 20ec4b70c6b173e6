"""The authors' CondViT checkpoints (CondViT-LRVSF ``ConditionalViT`` state dicts) load into
condsim's CondViT exactly: a small reference model written from their forward pass, random
weights, saved as their training code saves it (``.pth``) and as a hub-style directory."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from condsim import create_model
from condsim.data.lrvsf import CATEGORIES
from condsim.errors import ModelError
from condsim.models.condvit import AUTHORS_PREPROCESSOR
from condsim.models.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from stubs import jpegs


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads)
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.mlp = nn.Sequential(OrderedDict(c_fc=nn.Linear(d, 4 * d), gelu=QuickGELU(),
                                             c_proj=nn.Linear(4 * d, d)))

    def forward(self, x):  # LND
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, d: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.Sequential(*[Block(d, heads) for _ in range(layers)])


class ReferenceCondViT(nn.Module):
    """The authors' architecture: [CLS, patches, category] with a positional embedding for
    the category token, pre-LN transformer, ln_post(CLS) @ proj (not normalised)."""

    def __init__(self, res=32, patch=8, width=64, layers=2, heads=1, out=24, n_cat=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, patch, patch, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width))
        self.c_embedding = nn.Embedding(n_cat, width)
        self.c_pos_embedding = nn.Parameter(torch.randn(1, width))
        self.positional_embedding = nn.Parameter(torch.randn((res // patch) ** 2 + 1, width))
        self.ln_pre, self.ln_post = nn.LayerNorm(width), nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.logit_scale = nn.Parameter(torch.ones([]) * 4.6052)
        self.proj = nn.Parameter(torch.randn(width, out) * width ** -0.5)

    def forward(self, imgs, c=None):
        x = self.conv1(imgs).flatten(2).permute(0, 2, 1)
        tokens = [self.class_embedding.tile(x.shape[0], 1, 1), x]
        pos = [self.positional_embedding]
        if c is not None:
            tokens.append(self.c_embedding(c)[:, None])
            pos.append(self.c_pos_embedding)
        x = torch.cat(tokens, 1) + torch.cat(pos, 0)[None]
        x = self.ln_pre(x).permute(1, 0, 2)
        x = self.transformer.resblocks(x).permute(1, 0, 2)
        return self.ln_post(x[:, 0]) @ self.proj


def _reference(seed: int = 0, **kw) -> ReferenceCondViT:
    torch.manual_seed(seed)
    ref = ReferenceCondViT(**kw).eval()
    with torch.no_grad():  # LayerNorm/bias parameters off their defaults: every key matters
        for name, p in ref.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight")):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn_like(p))
    return ref


def _authors_pixels(data: bytes, size: int) -> torch.Tensor:
    """SquarePad(255) + Resize(size) (bilinear) + ToTensor + Normalize, as their valid_tf."""
    import io

    img = Image.open(io.BytesIO(data)).convert("RGB")
    side = max(img.size)
    left, top = (side - img.size[0]) // 2, (side - img.size[1]) // 2
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(img, (left, top))
    x = np.asarray(canvas.resize((size, size), Image.Resampling.BILINEAR), np.float32) / 255
    x = (x - np.asarray(OPENAI_CLIP_MEAN, np.float32)) / np.asarray(OPENAI_CLIP_STD, np.float32)
    return torch.from_numpy(x.transpose(2, 0, 1).copy())


def _check_equal(enc, ref: ReferenceCondViT) -> None:
    imgs = jpegs(6, seed=3)
    cats = [CATEGORIES[i] for i in (0, 3, 9, 7, 4, 4)]
    px = torch.stack([_authors_pixels(im, 32) for im in imgs])
    with torch.no_grad():
        want_q = torch.nn.functional.normalize(
            ref(px, torch.tensor([CATEGORIES.index(c) for c in cats])), dim=-1)
        want_t = torch.nn.functional.normalize(ref(px), dim=-1)
    got_q = enc.encode_queries(imgs, cats)
    got_t = enc.encode_targets(imgs)
    torch.testing.assert_close(got_q, want_q, rtol=0, atol=2e-5)
    torch.testing.assert_close(got_t, want_t, rtol=0, atol=2e-5)
    assert not torch.allclose(got_q, got_t, atol=1e-3)  # the category token does something


def test_authors_pth_checkpoint_loads_exactly(tmp_path):
    ref = _reference(heads=1)
    torch.save(ref.state_dict(), tmp_path / "condvit.pth")
    enc = create_model(f"condvit:{tmp_path / 'condvit.pth'}", device="cpu",
                       precision="fp32")
    assert enc.meta.embedding_dim == 24 and enc.meta.conditions == ("category",)
    # the authors' preprocessing at this checkpoint's input size
    enc.preprocessor = AUTHORS_PREPROCESSOR.__class__(
        **{**AUTHORS_PREPROCESSOR.__dict__, "crop_h": 32, "crop_w": 32})
    _check_equal(enc, ref)


def test_authors_hub_style_directory_with_prefix_and_heads_from_config(tmp_path):
    ref = _reference(seed=1, heads=2)
    d = tmp_path / "CondViT-B16-cat"
    d.mkdir()
    save_file({f"model.{k}": v.contiguous() for k, v in ref.state_dict().items()},
              str(d / "model.safetensors"))
    (d / "config.json").write_text('{"heads": 2}')
    enc = create_model(f"condvit:{d}", device="cpu")
    enc.preprocessor = AUTHORS_PREPROCESSOR.__class__(
        **{**AUTHORS_PREPROCESSOR.__dict__, "crop_h": 32, "crop_w": 32})
    _check_equal(enc, ref)


def test_authors_preprocessing_pads_white_and_has_its_own_cache_identity():
    from condsim.models.preprocess import ImagePreprocessor

    img = Image.new("RGB", (40, 20), (0, 0, 0))
    out = AUTHORS_PREPROCESSOR.__class__(
        **{**AUTHORS_PREPROCESSOR.__dict__, "crop_h": 40, "crop_w": 40}).to_uint8(img)
    assert out.shape == (40, 40, 3)
    assert (out[:8] == 255).all() and (out[-8:] == 255).all() and (out[15:25] == 0).all()
    plain = ImagePreprocessor(resize=0, resample=AUTHORS_PREPROCESSOR.resample)
    assert plain.id != AUTHORS_PREPROCESSOR.id  # padding is part of the cache identity


def test_bad_authors_checkpoints(tmp_path):
    torch.save({"foo": torch.zeros(2)}, tmp_path / "x.pth")
    with pytest.raises(ModelError, match="not a CondViT-LRVSF checkpoint"):
        create_model(f"condvit:{tmp_path / 'x.pth'}")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read the checkpoint"):
        create_model(f"condvit:{tmp_path / 'junk.pth'}")
    sd = {k: v for k, v in _reference().state_dict().items() if not k.startswith("c_")}
    torch.save(sd, tmp_path / "vit.pth")
    with pytest.raises(ModelError, match="unconditional ViT"):
        create_model(f"condvit:{tmp_path / 'vit.pth'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not a CondViT checkpoint: no condvit_config.json"):
        create_model(f"condvit:{tmp_path / 'empty'}")
