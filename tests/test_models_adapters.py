"""hf: adapter round-trips: random-init CLIP and SigLIP checkpoints saved with
save_pretrained and reloaded offline; preprocessing equals the checkpoint's own processor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from condsim import create_model
from condsim.models.tiny import tiny_clip_dir


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory):
    from transformers import AutoTokenizer, SiglipConfig, SiglipModel

    d = tmp_path_factory.mktemp("siglip")
    tok = AutoTokenizer.from_pretrained(tiny_clip_dir())
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    torch.manual_seed(0)
    cfg = SiglipConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2,
                         max_position_embeddings=64, pad_token_id=eos, bos_token_id=eos,
                         eos_token_id=eos),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, image_size=32, patch_size=16))
    SiglipModel(cfg).eval().save_pretrained(d)
    tok.save_pretrained(d)
    try:
        from transformers import SiglipImageProcessorPil as Proc
    except ImportError:  # transformers 4.x
        from transformers import SiglipImageProcessor as Proc
    Proc(size={"height": 32, "width": 32}).save_pretrained(d)
    return d


def _image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (57, 83, 3), dtype=np.uint8))


def test_siglip_round_trip_offline(siglip_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = create_model(f"hf:{siglip_dir}", device="cpu")
    assert enc.meta.extra["architecture"] == "SiglipModel"
    assert enc.preprocessor.resize == 0 and enc.preprocessor.mean == (0.5, 0.5, 0.5)
    q = enc.encode_queries([_image()], ["a red bag"])
    t = enc.encode_targets([_image()])
    assert q.shape == t.shape == (1, enc.meta.embedding_dim)
    again = create_model(f"hf:{siglip_dir}", device="cpu")
    assert torch.equal(again.encode_targets([_image()]), t)


@pytest.mark.parametrize("which", ["clip", "clip224", "siglip"])
def test_preprocessing_matches_the_checkpoints_processor(which, siglip_dir):
    from transformers import AutoImageProcessor, CLIPImageProcessor

    from condsim.models.preprocess import ImagePreprocessor

    if which == "clip224":  # OpenAI CLIP's processor: shortest edge 224, centre crop 224
        proc = CLIPImageProcessor()
        pre = ImagePreprocessor.from_hf_config(proc.to_dict())
    else:
        path = tiny_clip_dir() if which == "clip" else siglip_dir
        proc = AutoImageProcessor.from_pretrained(path)
        pre = create_model(f"hf:{path}", device="cpu").preprocessor
    rng = np.random.default_rng(0)
    # aspect ratios whose resized long side rounds up (451 -> 336.75) and down (500 -> 336.3)
    sizes = [(300, 451), (451, 300), (257, 1000), (333, 500), (640, 481), (200, 200)]
    images = [_image()] + [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
                           for w, h in sizes]
    for img in images:
        ref = proc(images=img, return_tensors="np")["pixel_values"][0]
        ours = pre(img)
        assert ours.shape == ref.shape
        assert np.abs(ours - ref).max() < 1e-5, img.size  # float rounding only


def test_siglip_texts_are_padded_to_max_length_as_trained(siglip_dir):
    """SigLIP pools the last position: texts must be padded to max_length (64), as SigLIP was
    trained and as its processor does; padding to the batch's longest text changed every
    shorter text's features and made them depend on their batch-mates."""
    from transformers import AutoTokenizer, SiglipModel

    enc = create_model(f"hf:{siglip_dir}", device="cpu")
    model, tok = SiglipModel.from_pretrained(siglip_dir).eval(), AutoTokenizer.from_pretrained(
        siglip_dir)
    texts = ["red", "a long striped shirt with many more words than the others"]
    with torch.no_grad():
        ids = tok(texts, padding="max_length", max_length=64, truncation=True,
                  return_tensors="pt")
        out = model.get_text_features(**ids)
    want = torch.nn.functional.normalize(getattr(out, "pooler_output", out), dim=-1)
    with torch.inference_mode():
        both, alone = enc.encode_texts(texts), enc.encode_texts(texts[:1])
    torch.testing.assert_close(both, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(alone[0], both[0], rtol=0, atol=1e-6)
    assert enc.meta.preprocessing_id.endswith("+txtpad")
    clip = create_model(f"hf:{tiny_clip_dir()}", device="cpu")
    assert clip.text_padding is True and "txtpad" not in clip.meta.preprocessing_id
    image_only = create_model(f"combine:image-only/hf:{siglip_dir}", device="cpu")
    assert image_only.meta.preprocessing_id.endswith("+image-only+txtpad")


def test_siglip_texts_are_lowercased_and_naflex_is_refused(siglip_dir, tmp_path):
    enc = create_model(f"hf:{siglip_dir}", device="cpu")
    seen, tokenizer = [], enc.tokenizer

    def recording(texts, **kw):  # SigLIP 2's Gemma tokenizer keeps case: check what it gets
        seen.extend(texts)
        return tokenizer(texts, **kw)

    enc.tokenizer = recording
    with torch.inference_mode():
        enc.encode_texts(["A Red BAG", "stripes"])
    assert seen == ["a red bag", "stripes"]
    clip = create_model(f"hf:{tiny_clip_dir()}", device="cpu")
    assert clip.lowercase_text is False  # CLIP's tokenizer lowercases by itself
    from transformers import Siglip2Config, Siglip2Model

    cfg = Siglip2Config(
        text_config=dict(vocab_size=100, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, num_patches=16, patch_size=16))
    Siglip2Model(cfg).save_pretrained(tmp_path / "naflex")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(siglip_dir).save_pretrained(tmp_path / "naflex")
    from condsim.errors import ModelError

    with pytest.raises(ModelError, match="NaFlex"):
        create_model(f"hf:{tmp_path / 'naflex'}", device="cpu")
