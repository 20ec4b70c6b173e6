"""open_clip adapter: weights, architecture and tokenizer through the real open_clip package
(random-init tiny model saved and reloaded offline); preprocessing by condsim from the model's
preprocess_cfg with torchvision's crop/resize arithmetic.

open_clip imports torchvision at module level. Where torchvision is missing or broken (the
PyPI torchvision does not load with the CPU torch wheel used here), the package is imported
with a stand-in whose transforms raise when used: the adapter never calls them. The tests
that need open_clip are skipped when open_clip_torch is not installed (CI installs it with
``--no-deps``)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from condsim import create_model
from condsim.errors import ModelError
from condsim.models.open_clip import preprocessor_from_open_clip
from stubs import jpegs

TINY = {"embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8,
                       "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                     "layers": 1}}


def _torchvision_stand_in() -> dict[str, types.ModuleType]:
    class Unavailable:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("torchvision stand-in: condsim must not use open_clip's "
                               "torchvision transforms")

    class Mode:
        BICUBIC, BILINEAR, NEAREST = "bicubic", "bilinear", "nearest"

    def attr(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return Mode if name == "InterpolationMode" else type(name, (Unavailable,), {})

    names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional",
             "torchvision.ops", "torchvision.ops.misc")
    mods = {n: types.ModuleType(n) for n in names}
    for n, m in mods.items():
        m.__spec__ = importlib.machinery.ModuleSpec(n, None)
        m.__getattr__ = attr  # type: ignore[method-assign]
        parent, _, child = n.rpartition(".")
        if parent:
            setattr(mods[parent], child, m)
    return mods


@pytest.fixture(scope="module")
def open_clip():
    if importlib.util.find_spec("open_clip") is None:
        pytest.skip("open_clip_torch is not installed")
    try:
        import open_clip as oc

        return oc
    except Exception:  # noqa: BLE001 (torchvision missing or broken)
        pass
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] == "torchvision"}
    for k in list(sys.modules):
        if k.split(".")[0] in ("torchvision", "open_clip"):
            del sys.modules[k]
    stand_in = _torchvision_stand_in()
    sys.modules.update(stand_in)
    try:
        import open_clip as oc
    finally:
        for k in stand_in:
            sys.modules.pop(k, None)
        sys.modules.update(saved)
    return oc


@pytest.fixture(scope="module")
def tiny_open_clip(open_clip, tmp_path_factory):
    d = tmp_path_factory.mktemp("open_clip")
    (d / "condsim-tiny-oc.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(str(d / "condsim-tiny-oc.json"))
    torch.manual_seed(0)
    model = open_clip.create_model("condsim-tiny-oc").eval()
    torch.save(model.state_dict(), d / "tiny.pt")
    return model, d


def _reference(model, tokenizer, pixels, texts=None):
    with torch.no_grad():
        img = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1)
        if texts is None:
            return img
        txt = torch.nn.functional.normalize(model.encode_text(tokenizer(texts)), dim=-1)
        return img, txt


def test_state_dict_file_round_trip_offline(open_clip, tiny_open_clip, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, d = tiny_open_clip
    enc = create_model(f"open_clip:condsim-tiny-oc/{d / 'tiny.pt'}", device="cpu")
    assert enc.meta.embedding_dim == 16 and enc.meta.conditions == ("category", "text")
    assert enc.preprocessor.crop_h == 32 and enc.preprocessor.crop_anchor == "round"
    imgs, conds = jpegs(5, seed=7), ["red", "a striped shirt", "blue", "bag", "hat"]
    px = torch.stack([torch.from_numpy(enc.preprocessor(im)) for im in imgs])
    img, txt = _reference(model, open_clip.get_tokenizer("condsim-tiny-oc"), px, conds)
    torch.testing.assert_close(enc.encode_targets(imgs), img, rtol=0, atol=1e-5)
    want = torch.nn.functional.normalize(img + txt, dim=-1)  # GeneCIS image+text baseline
    torch.testing.assert_close(enc.encode_queries(imgs, conds), want, rtol=0, atol=1e-5)
    text_only = create_model(f"combine:text-only/open_clip:condsim-tiny-oc/{d / 'tiny.pt'}",
                             device="cpu")
    torch.testing.assert_close(text_only.encode_queries(imgs, conds), txt, rtol=0, atol=1e-5)
    assert text_only.meta.cache_id != enc.meta.cache_id


def test_local_dir_with_its_preprocess_cfg(open_clip, tiny_open_clip):
    from safetensors.torch import save_file

    model, d = tiny_open_clip
    local = d / "local"
    local.mkdir()
    pre_cfg = {"size": 32, "interpolation": "bilinear", "resize_mode": "squash",
               "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    (local / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": TINY, "preprocess_cfg": pre_cfg}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(local / "open_clip_model.safetensors"))
    enc = create_model(f"open_clip:local-dir:{local}", device="cpu")
    assert enc.preprocessor.resize == 0 and enc.preprocessor.mean == (0.5, 0.5, 0.5)
    assert enc.preprocessor.resample == int(Image.Resampling.BILINEAR)
    imgs = jpegs(3, seed=2)
    px = torch.stack([torch.from_numpy(enc.preprocessor(im)) for im in imgs])
    torch.testing.assert_close(enc.encode_targets(imgs), _reference(model, None, px),
                               rtol=0, atol=1e-5)


def test_bad_open_clip_names(open_clip, tiny_open_clip, tmp_path):
    _, d = tiny_open_clip
    with pytest.raises(ModelError, match="expected open_clip:<arch>/<pretrained"):
        create_model("open_clip:ViT-B-32")
    with pytest.raises(ModelError, match="not found"):
        create_model(f"open_clip:condsim-tiny-oc/{tmp_path / 'missing.pt'}")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ModelError, match="cannot load"):
        create_model(f"open_clip:condsim-tiny-oc/{tmp_path / 'junk.pt'}", device="cpu")


def test_missing_open_clip_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # import open_clip -> ImportError
    with pytest.raises(ModelError, match=r"pip install 'condsim\[open_clip\]'"):
        create_model("open_clip:ViT-B-32/openai")


def test_preprocess_cfg_maps_to_torchvision_arithmetic():
    pre = preprocessor_from_open_clip({"size": 224, "interpolation": "bicubic",
                                       "resize_mode": "shortest"})
    # 300 x 455 -> 224 x int(224 * 455 / 300) = 224 x 339; crop top round(115 / 2) = 58
    # (floor would give 57): a row-index image shows which rows were kept
    rows = np.repeat(np.arange(455, dtype=np.float64)[:, None], 300, axis=1)
    img = Image.fromarray((rows % 256).astype(np.uint8)).convert("RGB")
    resized = img.resize((224, 339), Image.Resampling.BICUBIC)
    want = np.asarray(resized.crop((0, 58, 224, 282)))
    assert np.array_equal(pre.to_uint8(img), want)
    assert not np.array_equal(pre.to_uint8(img), np.asarray(resized.crop((0, 57, 224, 281))))
    # longest: 300 x 455 fits 224 as 148 x 224 (ratio 455 / 224), padded with the fill
    # colour to 224 x 224 at left (224 - 148) // 2 = 38
    fit = preprocessor_from_open_clip({"size": 224, "interpolation": "bicubic",
                                       "resize_mode": "longest", "fill_color": 200})
    px = fit.to_uint8(img)
    inner = np.asarray(img.resize((148, 224), Image.Resampling.BICUBIC))
    assert px.shape == (224, 224, 3) and (px[:, :38] == 200).all() and (px[:, 186:] == 200).all()
    assert np.array_equal(px[:, 38:186], inner)
    assert fit.id != preprocessor_from_open_clip({"size": 224, "resize_mode": "longest"}).id
    for bad in ({"resize_mode": "widest"}, {"interpolation": "random"},
                {"size": (224, 256), "resize_mode": "shortest"}):
        with pytest.raises(ModelError, match="not supported"):
            preprocessor_from_open_clip(bad)


def test_preprocessing_equals_open_clips_own_transform(open_clip):
    """Needs a working torchvision (e.g. torch 2.14.1 + torchvision 0.29.1): skipped where only
    the stand-in loads. condsim's pixels must equal open_clip's eval transform to float32
    rounding, for both resize modes, both interpolations and odd aspect ratios."""
    tv = sys.modules.get("torchvision")
    if tv is None or not hasattr(tv, "__version__"):
        pytest.skip("no working torchvision: open_clip's own transform cannot run")
    from open_clip.transform import image_transform

    rng = np.random.default_rng(0)
    for size, interpolation, mode in ((224, "bicubic", "shortest"), (64, "bilinear", "shortest"),
                                      (96, "bicubic", "squash"), (80, "bicubic", "longest")):
        theirs = image_transform(size, is_train=False, interpolation=interpolation,
                                 resize_mode=mode, fill_color=90)
        ours = preprocessor_from_open_clip({"size": size, "interpolation": interpolation,
                                            "resize_mode": mode, "fill_color": 90})
        for _ in range(12):
            h, w = (int(x) for x in rng.integers(40, 700, size=2))
            img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            np.testing.assert_allclose(ours(img), theirs(img).numpy(), rtol=0, atol=1e-5)
