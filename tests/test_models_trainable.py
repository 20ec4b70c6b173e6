"""Combiner and CondViT: formulas/shapes, save/load equality, registry loading, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from condsim import create_model
from condsim.errors import ModelError
from condsim.models.combiner import Combiner, CombinerConfig
from condsim.models.condvit import CondViT, condvit_from_clip
from condsim.models.tiny import tiny_clip_dir
from condsim.training.tasks import CombinerPair, FeatureTripletTask
from condsim.training.trainer import TrainConfig, Trainer


def test_combiner_formula_and_save_load(tmp_path):
    torch.manual_seed(0)
    c = Combiner(CombinerConfig(clip_dim=8, projection_dim=16, hidden_dim=32, dropout=0.5,
                                backbone="test/tiny-clip")).eval()
    img, txt = torch.randn(5, 8), torch.randn(5, 8)
    raw = torch.cat([c.text_proj(txt), c.image_proj(img)], dim=1)
    a = c.scalar(raw)
    want = torch.nn.functional.normalize(c.out(c.combine(raw)) + a * txt + (1 - a) * img, dim=1)
    assert torch.allclose(c(img, txt), want)
    assert torch.allclose(c(img, txt).norm(dim=1), torch.ones(5))
    c.save(tmp_path / "comb")
    assert torch.equal(Combiner.load(tmp_path / "comb")(img, txt), c(img, txt))


def test_combiner_registry_round_trip_and_encoder(tmp_path):
    c = Combiner(CombinerConfig(clip_dim=32, projection_dim=16, hidden_dim=16,
                                backbone="test/tiny-clip"))
    c.save(tmp_path / "comb")
    enc = create_model(f"combiner:{tmp_path / 'comb'}", device="cpu")
    from PIL import Image

    ims = [Image.new("RGB", (80, 64), (200, 30, 30)), Image.new("RGB", (64, 90), (0, 90, 200))]
    q = enc.encode_queries(ims, ["Bags", "Head"])
    t = enc.encode_targets(ims)
    assert q.shape == t.shape == (2, 32) and enc.meta.embedding_dim == 32
    back = enc.backbone
    assert torch.allclose(t, back.encode_targets(ims))
    with torch.inference_mode():
        want = enc.combiner(back.encode_targets(ims), back.encode_texts(["Bags", "Head"]))
    assert torch.allclose(q, want, atol=1e-6)


def test_condvit_shapes_condition_changes_query_and_save_load(tmp_path):
    cv = condvit_from_clip(tiny_clip_dir(), seed=0).eval()
    px = torch.randn(3, 3, 64, 64)
    t = cv(px)
    q1, q2 = cv(px, ["Bags", "Head", "Feet"]), cv(px, ["Head", "Head", "Head"])
    assert t.shape == q1.shape == (3, 32)
    assert not torch.allclose(q1[0], q2[0]) and torch.allclose(q1[1], q2[1])
    cfg = json.loads((tiny_clip_dir() / "processor_config.json").read_text())["image_processor"]
    cv.save(tmp_path / "cv", preprocessor_config=cfg)
    loaded = CondViT.load(tmp_path / "cv")
    assert torch.equal(loaded(px, ["Bags", "Head", "Feet"]), q1)
    enc = create_model(f"condvit:{tmp_path / 'cv'}", device="cpu")
    assert enc.meta.conditions == ("category",)
    with pytest.raises(ModelError, match="unknown category"):
        cv(px[:1], ["Hat"])


def test_bad_checkpoints_and_names(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not a Combiner checkpoint"):
        create_model(f"combiner:{tmp_path / 'empty'}")
    with pytest.raises(ModelError, match="not a CondViT checkpoint"):
        create_model(f"condvit:{tmp_path / 'empty'}")
    with pytest.raises(ModelError, match="config.json"):
        create_model(f"hf:{tmp_path / 'empty'}")
    with pytest.raises(ModelError, match="Did you mean 'test/tiny-clip'"):
        create_model("test/tiny_clip")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_clip_dir(), broken)
    (broken / "processor_config.json").unlink()
    with pytest.raises(ModelError, match="preprocessor_config"):
        create_model(f"hf:{broken}")


def test_trained_combiner_learns_a_conditional_rule(tmp_path):
    """Features: targets = the reference with the condition's block of dimensions replaced.
    A trained Combiner must beat the untrained image+text mean (the GeneCIS baseline)."""
    rng = np.random.default_rng(0)
    n_img, d, n_cond = 400, 16, 4
    base = rng.normal(size=(n_img, d)).astype(np.float32)
    text = rng.normal(size=(n_cond, d)).astype(np.float32)
    img = np.concatenate([base, base], 0)
    trip = []
    for i in range(n_img):
        c = int(rng.integers(n_cond))
        img[n_img + i] = base[i]
        img[n_img + i, c * 4:(c + 1) * 4] = text[c, c * 4:(c + 1) * 4] * 3
        trip.append((i, c, n_img + i))
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    trip = np.array(trip)
    task = FeatureTripletTask(img, text, trip)
    torch.manual_seed(0)
    comb = Combiner(CombinerConfig(clip_dim=d, projection_dim=64, hidden_dim=64, dropout=0.1))
    Trainer(CombinerPair(comb), task, TrainConfig(out_dir=str(tmp_path), epochs=40,
            batch_size=100, lr=3e-3, logit_scale=20), device="cpu").fit()
    comb.eval()

    def r1(q):
        s = q @ img[trip[:, 2]].T
        return float(np.mean(np.argmax(s, axis=1) == np.arange(len(trip))))

    with torch.no_grad():
        trained = comb(torch.from_numpy(img[trip[:, 0]]), torch.from_numpy(text[trip[:, 1]]))
    baseline = img[trip[:, 0]] + text[trip[:, 1]]
    assert r1(trained.numpy()) > r1(baseline) + 0.2


def test_genecis_baselines_follow_their_formulas():
    from PIL import Image

    ims = [Image.new("RGB", (70, 64), (200, 30, 30)), Image.new("RGB", (64, 64), (0, 90, 200))]
    conds = ["Bags", "a red bag"]
    both = create_model("test/tiny-clip", device="cpu")
    img_only = create_model("combine:image-only/test/tiny-clip", device="cpu")
    txt_only = create_model("combine:text-only/test/tiny-clip", device="cpu")
    with torch.inference_mode():
        i = both.encode_targets(ims)
        t = both.encode_texts(conds)
    n = torch.nn.functional.normalize
    assert torch.allclose(img_only.encode_queries(ims, conds), i, atol=1e-6)
    assert torch.allclose(txt_only.encode_queries(ims, conds), t, atol=1e-6)
    assert torch.allclose(both.encode_queries(ims, conds), n(n(i, dim=1) + n(t, dim=1), dim=1),
                          atol=1e-6)
    assert img_only.meta.cache_id != both.meta.cache_id != txt_only.meta.cache_id
