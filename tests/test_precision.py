"""Forward precision: autocast bf16 on request (the default on CUDA), recorded in the cache
identity; channels-last inputs give the same embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from condsim import create_model
from condsim.errors import ModelError
from condsim.models.base import encode_images, resolve_precision
from stubs import jpegs


def test_auto_is_fp32_on_cpu_and_bad_values_are_refused():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ModelError, match="fp16 autocast needs a CUDA"):
        resolve_precision("fp16", cpu)
    with pytest.raises(ModelError, match="precision must be one of"):
        resolve_precision("int8", cpu)


def test_bf16_autocast_is_close_to_fp32_and_has_its_own_cache_identity():
    imgs = jpegs(12)
    fp32 = create_model("test/tiny-clip", device="cpu")
    bf16 = create_model("test/tiny-clip", device="cpu", precision="bf16")
    assert fp32.meta.precision == "fp32" and bf16.meta.precision == "bf16"
    assert bf16.meta.cache_id == fp32.meta.cache_id + "~bf16"
    a = encode_images(fp32, imgs, batch_size=5).embeddings
    b = encode_images(bf16, imgs, batch_size=5).embeddings
    assert b.dtype == np.float32
    assert not np.array_equal(a, b)  # the forward really ran in bf16
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99
    qa = fp32.encode_queries(imgs[:3], ["red", "blue", "shirt"]).numpy()
    qb = bf16.encode_queries(imgs[:3], ["red", "blue", "shirt"]).numpy()
    assert np.abs(qa - qb).max() < 0.05 and not np.array_equal(qa, qb)


def test_precision_reaches_a_wrapped_backbone(tmp_path):
    from condsim.models.combiner import Combiner, CombinerConfig

    bb = create_model("test/tiny-clip", device="cpu")
    Combiner(CombinerConfig(clip_dim=bb.meta.embedding_dim, projection_dim=16, hidden_dim=32,
                            backbone="test/tiny-clip")).save(tmp_path / "comb")
    enc = create_model(f"combiner:{tmp_path / 'comb'}", device="cpu", precision="bf16")
    assert enc.meta.precision == "bf16" and enc.backbone.meta.precision == "bf16"


def test_channels_last_inputs_give_the_same_embeddings():
    imgs = jpegs(6)
    plain = create_model("test/tiny-clip", device="cpu")
    cl = create_model("test/tiny-clip", device="cpu", channels_last=True)
    assert cl.channels_last and not plain.channels_last
    np.testing.assert_allclose(encode_images(cl, imgs).embeddings,
                               encode_images(plain, imgs).embeddings, rtol=0, atol=1e-5)


def test_models_cli_lists_dims_and_conditions_and_describes_one(capsys):
    from condsim.cli.main import main

    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    for scheme in ("hf:", "open_clip:", "combine:", "combiner:", "condvit:"):
        assert scheme in listing
    assert "test/tiny-clip" in listing and "32" in listing
    assert main(["models", "test/tiny-clip", "--precision", "bf16", "--device", "cpu"]) == 0
    shown = capsys.readouterr().out
    assert "bf16" in shown and "category, text" in shown and "~bf16" in shown
    assert main(["models", "test/tiny-clipp"]) == 2
    err = capsys.readouterr()
    assert "Did you mean 'test/tiny-clip'" in err.out + err.err
