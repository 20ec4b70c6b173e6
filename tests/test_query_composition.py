"""Queries of CLIP-style models and Combiners are composed from cached target embeddings: the
same embeddings as encoding them directly, the image tower run once per unique image (zero
times for references already in the gallery), the text tower once per distinct condition."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from condsim import create_model
from condsim.cache.encode import encode_cached
from condsim.cache.store import EmbeddingCache
from condsim.models.combiner import Combiner, CombinerConfig
from stubs import jpegs

CONDS = ["red", "a striped shirt", "red", "blue", "red", "a striped shirt"]


def _counting(model):
    """Wrap the model's towers to count the rows they encode."""
    counts = {"image": 0, "text": 0}
    backbone = getattr(model, "backbone", model)
    image_fn, text_fn = backbone.encode_image_pixels, backbone.encode_texts

    def image(px):
        counts["image"] += px.shape[0]
        return image_fn(px)

    def text(texts):
        counts["text"] += len(texts)
        return text_fn(texts)

    backbone.encode_image_pixels, backbone.encode_texts = image, text
    return counts


def _models():
    torch.manual_seed(0)
    comb = Combiner(CombinerConfig(clip_dim=32, projection_dim=16, hidden_dim=16,
                                   backbone="test/tiny-clip")).eval()
    from condsim.models.combiner import CombinerEncoder

    return {
        "image+text": lambda: create_model("test/tiny-clip", device="cpu"),
        "image-only": lambda: create_model("combine:image-only/test/tiny-clip", device="cpu"),
        "text-only": lambda: create_model("combine:text-only/test/tiny-clip", device="cpu"),
        "combiner": lambda: CombinerEncoder(
            comb, create_model("test/tiny-clip", device="cpu"), name="combiner:test"),
    }


@pytest.mark.parametrize("kind", ["image+text", "image-only", "text-only", "combiner"])
def test_composed_queries_equal_direct_ones(kind, tmp_path):
    model = _models()[kind]()
    imgs = jpegs(6, seed=3)
    direct = model.encode_queries(imgs, CONDS).numpy()
    cache = EmbeddingCache(tmp_path, model.meta)
    rows, errors = encode_cached(model, cache, imgs, CONDS, batch_size=4)
    assert not errors and (rows >= 0).all()
    np.testing.assert_allclose(cache.read(rows), direct, rtol=0, atol=2e-6)
    assert model.composes_from_targets == (kind != "text-only")


def test_references_in_the_gallery_cost_no_image_forward(tmp_path):
    model = create_model("test/tiny-clip", device="cpu")
    counts = _counting(model)
    gallery = jpegs(8, seed=5)
    cache = EmbeddingCache(tmp_path, model.meta)
    encode_cached(model, cache, gallery, batch_size=4)
    assert counts == {"image": 8, "text": 0}
    refs = [gallery[i] for i in (0, 1, 1, 2, 2, 2)]  # six queries on three gallery images
    rows, _ = encode_cached(model, cache, refs, CONDS, batch_size=4)
    assert counts == {"image": 8, "text": 3}  # no image forward; 3 distinct conditions
    fresh = create_model("test/tiny-clip", device="cpu")
    np.testing.assert_allclose(cache.read(rows), fresh.encode_queries(refs, CONDS).numpy(),
                               rtol=0, atol=2e-6)
    # queries on new images: each unique image through the image tower once
    new = jpegs(2, seed=9)
    encode_cached(model, cache, [new[0], new[1], new[0]], ["red", "red", "blue"],
                  batch_size=4)
    assert counts == {"image": 10, "text": 5}


def test_an_undecodable_reference_is_an_error_not_a_query(tmp_path):
    model = create_model("test/tiny-clip", device="cpu")
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(buf, "JPEG")
    good, bad = buf.getvalue(), b"\xff\xd8 not a jpeg"
    cache = EmbeddingCache(tmp_path, model.meta)
    rows, errors = encode_cached(model, cache, [good, bad, good], ["red", "red", "blue"])
    assert rows[1] == -1 and set(errors) == {1} and (rows[[0, 2]] >= 0).all()


def test_nan_text_features_are_caught(tmp_path):
    model = create_model("test/tiny-clip", device="cpu")
    text_fn = model.encode_texts
    model.encode_texts = lambda texts: text_fn(texts) * float("nan")
    from condsim.errors import EmbeddingError

    with pytest.raises(EmbeddingError, match="composed"):
        encode_cached(model, EmbeddingCache(tmp_path, model.meta), jpegs(2), ["red", "blue"])


def test_repeats_within_one_call_are_encoded_once(tmp_path):
    model = create_model("test/tiny-clip", device="cpu")
    counts = _counting(model)
    a, b = jpegs(2, seed=11)
    bad = b"\xff\xd8 not a jpeg"
    cache = EmbeddingCache(tmp_path, model.meta)
    rows, errors = encode_cached(model, cache, [a, b, a, bad, a, bad], batch_size=2)
    assert counts["image"] == 2 and rows[0] == rows[2] == rows[4] >= 0
    assert set(errors) == {3, 5} and errors[3] == errors[5]
