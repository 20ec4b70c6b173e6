"""Textual-inversion adapters (pic2word:, searle:, lincir:): the authors' checkpoint layouts
load through the public names, queries equal the text tower run by hand with the pseudo token
injected, bad checkpoints are refused by tensor name, and the CLI runs them end to end with
each image through the image tower once (none on a second run; the gallery of an earlier
plain-CLIP run reused)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from condsim import create_model
from condsim.cache.encode import encode_cached
from condsim.cache.store import EmbeddingCache
from condsim.errors import ModelError
from condsim.models.clip_hf import HFClipEncoder
from stubs import jpegs

TOKEN_WIDTH, IMAGE_WIDTH = 64, 32  # tiny-clip's text token width and image feature width


class AuthorsPhi(nn.Module):
    """SEARLE src/phi.py (LinCIR models.py copies it), verbatim structure."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, dropout: float):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_dim, hidden_dim), nn.GELU(), nn.Dropout(p=dropout),
            nn.Linear(hidden_dim, hidden_dim), nn.GELU(), nn.Dropout(p=dropout),
            nn.Linear(hidden_dim, output_dim))

    def forward(self, x):
        return self.layers(x)


class AuthorsIM2TEXT(nn.Module):
    """Pic2Word model/model.py IM2TEXT, verbatim structure."""

    def __init__(self, embed_dim=512, middle_dim=512, output_dim=512, n_layer=2, dropout=0.1):
        super().__init__()
        self.fc_out = nn.Linear(middle_dim, output_dim)
        layers = []
        dim = embed_dim
        for _ in range(n_layer):
            layers.append(nn.Sequential(nn.Linear(dim, middle_dim), nn.Dropout(dropout),
                                        nn.ReLU()))
            dim = middle_dim
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.fc_out(x)


def save_checkpoint(method: str, path, image_width=IMAGE_WIDTH, token_width=TOKEN_WIDTH,
                    seed=0):
    """A random-init mapping network saved the way its authors' code saves/loads it."""
    torch.manual_seed(seed)
    if method == "pic2word":  # main.py: torch.save({..., "state_dict_img2text": ddp sd})
        net = AuthorsIM2TEXT(embed_dim=image_width, middle_dim=48, output_dim=token_width)
        sd = {"module." + k: v for k, v in net.state_dict().items()}
        torch.save({"epoch": 1, "name": "pic2word", "state_dict_img2text": sd}, path)
    else:  # hubconf.py / validate.py: torch.load(...)["Phi"]
        net = AuthorsPhi(image_width, 4 * image_width, token_width, dropout=0.5)
        torch.save({"Phi": net.state_dict()}, path)
    return net.eval()


PLACEHOLDER = {"pic2word": "*", "searle": "$", "lincir": "$"}
PROMPT = {"pic2word": "a photo of * , {}", "searle": "a photo of $ that {}",
          "lincir": "a photo of $ that {}"}


def by_hand(clip, net, method, images, conditions):
    """The query feature with the transformers modules called directly."""
    m = clip.model
    px = torch.from_numpy(np.stack([clip.preprocessor(im) for im in images]))
    with torch.no_grad():
        f = m.visual_projection(m.vision_model(pixel_values=px).pooler_output)  # unnormalised
        w = net(f)
        tok = clip.tokenizer([PROMPT[method].format(c) for c in conditions],
                             padding="max_length", max_length=77, return_tensors="pt")
        ids = tok["input_ids"]
        pid = clip.tokenizer(PLACEHOLDER[method], add_special_tokens=False)["input_ids"][0]
        tm = m.text_model
        x = tm.embeddings.token_embedding(ids)
        for b in range(len(ids)):
            where = (ids[b] == pid).nonzero().flatten()
            for j in (where if method == "lincir" else where[:1]):
                x[b, j] = w[b]
        x = x + tm.embeddings.position_embedding(torch.arange(ids.shape[1]))[None]
        mask = torch.full((ids.shape[1], ids.shape[1]), float("-inf")).triu(1)[None, None]
        h = tm.encoder(inputs_embeds=x, attention_mask=mask.expand(len(ids), 1, -1, -1))
        h = tm.final_layer_norm(h.last_hidden_state if hasattr(h, "last_hidden_state") else h[0])
        pooled = h[torch.arange(len(ids)), ids.argmax(dim=-1)]  # EOT: the highest id
        return F.normalize(m.text_projection(pooled), dim=-1)


CONDS = ["red", "a striped shirt", "costs $5 now", "red"]


@pytest.mark.parametrize("method", ["pic2word", "searle", "lincir"])
def test_query_equals_the_text_tower_run_by_hand(method, tmp_path, tiny_clip):
    ckpt = tmp_path / f"{method}.pt"
    net = save_checkpoint(method, ckpt)
    model = create_model(f"{method}:{ckpt}/test/tiny-clip", device="cpu")
    assert model.meta.extra["prompt"] == PROMPT[method].format("{caption}")
    imgs = jpegs(4, seed=2)
    want = by_hand(tiny_clip, net, method, imgs, CONDS)
    got = model.encode_queries(imgs, CONDS)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    cache = EmbeddingCache(tmp_path / "cache", model.meta)  # composed from cached features
    rows, errors = encode_cached(model, cache, imgs, CONDS, batch_size=3)
    assert not errors
    np.testing.assert_allclose(cache.read(rows), want.numpy(), rtol=0, atol=1e-6)
    targets = model.encode_targets(imgs)
    torch.testing.assert_close(targets, tiny_clip.encode_targets(imgs), rtol=0, atol=1e-6)
    # the placeholder is injected: queries depend on the image through it
    assert not torch.allclose(got[0], got[3]) and model.meta.cache_id == tiny_clip.meta.cache_id


def test_lincir_replaces_every_placeholder_searle_the_first(tmp_path):
    ckpt = tmp_path / "phi.pt"
    save_checkpoint("searle", ckpt)
    imgs = jpegs(1, seed=4)
    s = create_model(f"searle:{ckpt}/test/tiny-clip", device="cpu")
    lin = create_model(f"lincir:{ckpt}::test/tiny-clip", device="cpu")
    same = ["red"]
    twice = ["a $ b"]
    torch.testing.assert_close(s.encode_queries(imgs, same), lin.encode_queries(imgs, same))
    assert not torch.allclose(s.encode_queries(imgs, twice), lin.encode_queries(imgs, twice))
    assert s.meta.query_namespace != lin.meta.query_namespace


def test_prompt_option_is_part_of_the_identity(tmp_path):
    ckpt = tmp_path / "phi.pt"
    save_checkpoint("searle", ckpt)
    base = create_model(f"searle:{ckpt}/test/tiny-clip", device="cpu")
    other = create_model(f"searle:{ckpt}/test/tiny-clip?prompt=$ {{caption}}", device="cpu")
    kw = create_model(f"searle:{ckpt}/test/tiny-clip", device="cpu", prompt="$ {caption}")
    assert other.meta == kw.meta and other.meta.name.endswith("?prompt=$ {caption}")
    assert other.meta.query_namespace != base.meta.query_namespace
    assert other.meta.cache_id == base.meta.cache_id  # the same targets
    imgs = jpegs(1, seed=1)
    assert not torch.allclose(base.encode_queries(imgs, ["red"]),
                              other.encode_queries(imgs, ["red"]))
    with pytest.raises(ModelError, match="no placeholder token"):
        create_model(f"searle:{ckpt}/test/tiny-clip", device="cpu", prompt="a {caption}")
    with pytest.raises(ModelError, match="no \\{caption\\} field"):
        create_model(f"searle:{ckpt}/test/tiny-clip", device="cpu", prompt="a $")


def test_wrong_width_and_wrong_method_are_refused(tmp_path):
    wide = tmp_path / "wide.pt"
    save_checkpoint("searle", wide, image_width=48)
    with pytest.raises(ModelError, match=r"searle checkpoint .*wide.pt: layers.0.weight has "
                                         r"shape \(192, 48\), the CLIP image width is 32"):
        create_model(f"searle:{wide}/test/tiny-clip", device="cpu")
    narrow = tmp_path / "narrow.pt"
    save_checkpoint("pic2word", narrow, token_width=96)
    with pytest.raises(ModelError, match=r"fc_out.weight has shape \(96, 48\), the CLIP text "
                                         r"token width is 64"):
        create_model(f"pic2word:{narrow}/test/tiny-clip", device="cpu")
    p2w, phi = tmp_path / "p2w.pt", tmp_path / "phi.pt"
    save_checkpoint("pic2word", p2w)
    save_checkpoint("lincir", phi)
    with pytest.raises(ModelError, match="layout of a pic2word checkpoint; load it as pic2word"):
        create_model(f"searle:{p2w}/test/tiny-clip", device="cpu")
    with pytest.raises(ModelError, match="layout of a searle checkpoint"):
        create_model(f"pic2word:{phi}/test/tiny-clip", device="cpu")
    bare = tmp_path / "bare.pt"  # a bare IM2TEXT state dict given to searle:
    torch.save(AuthorsIM2TEXT(32, 48, 64).state_dict(), bare)
    with pytest.raises(ModelError, match="Pic2Word's IM2TEXT"):
        create_model(f"searle:{bare}/test/tiny-clip", device="cpu")
    with pytest.raises(ModelError, match="no '/'-prefix of it is an existing checkpoint"):
        create_model(f"searle:{tmp_path}/missing.pt/test/tiny-clip", device="cpu")
    with pytest.raises(ModelError, match="not the combination"):
        create_model(f"searle:{phi}/combine:image-only/test/tiny-clip", device="cpu")


@pytest.fixture()
def tower_passes(monkeypatch):
    """Rows through the CLIP image tower (every hf: image path goes through image_features)."""
    count = {"rows": 0}
    real = HFClipEncoder.image_features

    def counting(self, pixels):
        count["rows"] += int(pixels.shape[0])
        return real(self, pixels)

    monkeypatch.setattr(HFClipEncoder, "image_features", counting)
    return count


def _synth(kind, root):
    from condsim.cli.main import main

    assert main(["synth", kind, "--out", str(root)]) == 0
    if kind == "genecis":
        return ["--annotations", str(root / "annotations"), "--coco-root",
                str(root / "coco" / "val2017"), "--vg-root", str(root / "vg" / "VG_100K"),
                "--vg-root", str(root / "vg" / "VG_100K_2")]
    return ["--root", str(root)]


@pytest.mark.parametrize("kind", ["cirr", "circo", "genecis"])
def test_cli_end_to_end_with_cached_reference_features(kind, tmp_path, tower_passes):
    from condsim.cli.main import main

    data = _synth(kind, tmp_path / "data")
    ckpt = tmp_path / "searle.pt"
    save_checkpoint("searle", ckpt)
    name = f"searle:{ckpt}/test/tiny-clip"

    def run(model, out, cache):
        before = tower_passes["rows"]
        argv = ["eval", kind, "--model", model, "--out", str(tmp_path / out), "--cache-dir",
                str(tmp_path / cache), "--n-bootstrap", "20", *data]
        assert main(argv) == 0
        return tower_passes["rows"] - before, json.loads(
            (tmp_path / out / "results.json").read_text())

    clip_rows, clip_res = run("test/tiny-clip", "clip", "c1")  # each unique image once
    ti_rows, ti_res = run(name, "ti", "c2")
    assert ti_rows == clip_rows > 0  # the same once-per-unique-image passes as the CLIP
    again, again_res = run(name, "ti2", "c2")
    assert again == 0 and again_res["metrics"] == ti_res["metrics"]
    after_clip, shared_res = run(name, "ti3", "c1")  # gallery cached by the plain CLIP run
    assert 0 < after_clip < clip_rows  # only the references' un-normalised features
    assert shared_res["metrics"] == ti_res["metrics"]
    assert ti_res["model"]["name"] == name and ti_res["model"]["extra"]["method"] == "searle"
    assert ti_res["metrics"] != clip_res["metrics"]
    clip_again, clip_res2 = run("test/tiny-clip", "clip2", "c1")  # its queries untouched
    assert clip_again == 0 and clip_res2["metrics"] == clip_res["metrics"]
