"""GeneCIS: crops, readers, tie-safe metrics with oracle/constant encoders, CLI, bad input."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from condsim.benchmarks.genecis import GenecisConfig
from condsim.benchmarks.run import run_benchmark
from condsim.cli.main import main
from condsim.data.crops import ImageRef, crop_box, pad_to_square
from condsim.data.genecis import TASKS
from condsim.errors import DataError
from condsim.results.run_result import load_result
from condsim.synthetic.genecis import write_genecis
from condsim.types import ModelMeta
from stubs import ConstantEncoder


@pytest.fixture(scope="module")
def gen_root(tmp_path_factory) -> Path:
    return write_genecis(tmp_path_factory.mktemp("genecis"), n_per_task=12, seed=0)


def _cfg(root: Path, tmp: Path, **kw) -> GenecisConfig:
    base = dict(annotations=str(root / "annotations"), coco_root=str(root / "coco" / "val2017"),
                vg_roots=(str(root / "vg" / "VG_100K"), str(root / "vg" / "VG_100K_2")),
                cache_dir=str(tmp / "cache"), n_bootstrap=200)
    base.update(kw)
    return GenecisConfig(**base)


# -- crop geometry -------------------------------------------------------------------------

def test_official_crop_grows_left_and_top_and_shifts_when_clamped():
    # interior box: left = 100 - 0.7*20 = 86, top = 50 - 0.7*10 = 43, size 1.7 w x 1.7 h
    assert crop_box((100, 50, 20, 10), (300, 200)) == pytest.approx((86, 43, 120, 60))
    # at the top-left border: clamped at 0, then the box extends 1.7 w from 0 (shifted right)
    assert crop_box((5, 2, 20, 10), (300, 200)) == pytest.approx((0, 0, 34, 17))
    # at the bottom-right border: right/bottom clamped to the image
    assert crop_box((290, 195, 10, 5), (300, 200)) == pytest.approx((283, 191.5, 300, 200))


def test_centered_crop_is_symmetric_and_clamped():
    assert crop_box((100, 50, 20, 10), (300, 200), "centered") == pytest.approx(
        (93, 46.5, 127, 63.5))
    assert crop_box((2, 1, 20, 10), (300, 200), "centered") == pytest.approx((0, 0, 29, 14.5))
    assert crop_box((290, 195, 10, 5), (300, 200), "centered") == pytest.approx(
        (286.5, 193.25, 300, 200))


def test_pad_to_square_offsets_and_modes():
    img = Image.new("RGB", (10, 4), (255, 255, 255))
    sq = np.asarray(pad_to_square(img))
    assert sq.shape == (10, 10, 3)
    assert (sq[3:7] == 255).all() and (sq[:3] == 0).all() and (sq[7:] == 0).all()
    gray = pad_to_square(Image.new("L", (3, 8), 200))
    g = np.asarray(gray)
    assert gray.mode == "L" and g.shape == (8, 8) and (g[:, 2:5] == 200).all()
    assert (g[:, :2] == 0).all() and (g[:, 5:] == 0).all()


def test_imageref_crop_matches_hand_computed_pixels(tmp_path):
    arr = np.zeros((50, 80, 3), np.uint8)
    arr[:, :, 0] = np.arange(80)[None, :]
    arr[:, :, 1] = np.arange(50)[:, None]
    Image.fromarray(arr).save(tmp_path / "1.png")
    crop = np.asarray(ImageRef(str(tmp_path / "1.png"), (30, 20, 10, 20)).load_image())
    # official box: left 23, top 6, right 40, bottom 40 -> 17 x 34, padded to 34 x 34
    assert crop.shape == (34, 34, 3)
    off = (34 - 17) // 2
    assert crop[0, off, 0] == 23 and crop[0, off, 1] == 6 and crop[33, off + 16, 0] == 39
    assert (crop[:, :off] == 0).all()


# -- metrics with stub encoders --------------------------------------------------------------

def _img_vec(img: Image.Image, dim: int = 64) -> torch.Tensor:
    seed = int.from_bytes(hashlib.blake2b(img.tobytes(), digest_size=8).digest(), "little")
    g = torch.Generator().manual_seed(seed % (2**63))
    return torch.nn.functional.normalize(torch.randn(dim, generator=g), dim=0)


class OracleEncoder:
    """Knows every template's answer: the query embedding is its target's embedding."""

    def __init__(self, root: Path) -> None:
        from condsim.data.genecis import ImageLocator, read_task

        loc = ImageLocator(root / "coco" / "val2017",
                           [root / "vg" / "VG_100K", root / "vg" / "VG_100K_2"])
        self.answer = {}
        for task in TASKS:
            for q in read_task(root / "annotations" / f"{task}.json", task, loc):
                key = (_img_vec(q.reference.load_image().convert("RGB")).numpy().tobytes(),
                       q.condition)
                self.answer[key] = _img_vec(q.target.load_image().convert("RGB"))
        self.meta = ModelMeta("test/oracle", 64, "oracle")

    def encode_targets(self, images):
        return torch.stack([_img_vec(im) for im in images])

    def encode_queries(self, images, conditions):
        return torch.stack([self.answer[(_img_vec(im).numpy().tobytes(), c)]
                            for im, c in zip(images, conditions, strict=True)])



def test_oracle_gets_100_and_constant_gets_exact_chance(gen_root, tmp_path):
    res = run_benchmark(OracleEncoder(gen_root), _cfg(gen_root, tmp_path))
    for m in res.metrics["tasks"].values():
        assert all(m["recall"][k]["mean"] == 1.0 for k in ("1", "2", "3"))
    const = run_benchmark(ConstantEncoder(), _cfg(gen_root, tmp_path))
    for m in const.metrics["tasks"].values():
        assert m["gallery_size"] == 15
        for k in (1, 2, 3):
            assert m["recall"][str(k)]["mean"] == pytest.approx(k / 15, abs=1e-12)
    assert const.headline["mean"] == pytest.approx(1 / 15)


def test_shuffling_gallery_order_changes_nothing(gen_root, tmp_path, tiny_clip):
    shuffled = tmp_path / "ann"
    shuffled.mkdir()
    rng = np.random.default_rng(0)
    for task in TASKS:
        data = json.loads((gen_root / "annotations" / f"{task}.json").read_text())
        for entry in data:
            # put the target somewhere in the gallery list: the metric must not care
            entry["gallery"] = list(rng.permutation(np.array(entry["gallery"], dtype=object)))
        (shuffled / f"{task}.json").write_text(json.dumps(data))
    a = run_benchmark(tiny_clip, _cfg(gen_root, tmp_path))
    b = run_benchmark(tiny_clip, _cfg(gen_root, tmp_path, annotations=str(shuffled)))
    for task in TASKS:
        assert a.metrics["tasks"][task]["per_query"] == b.metrics["tasks"][task]["per_query"]


# -- CLI -------------------------------------------------------------------------------------

def test_cli_end_to_end_and_compare(gen_root, tmp_path, capsys):
    common = ["--annotations", str(gen_root / "annotations"),
              "--coco-root", str(gen_root / "coco" / "val2017"),
              "--vg-root", str(gen_root / "vg" / "VG_100K"),
              "--vg-root", str(gen_root / "vg" / "VG_100K_2"),
              "--workers", "0", "--bootstrap", "200", "--cache-dir", str(tmp_path / "c")]
    assert main(["eval", "genecis", "--model", "test/tiny-clip", "--out",
                 str(tmp_path / "a"), *common]) == 0
    assert main(["eval", "genecis", "--model", "combine:image-only/test/tiny-clip", "--out",
                 str(tmp_path / "b"), *common]) == 0
    res = load_result(tmp_path / "a")
    assert res.benchmark == "genecis" and set(res.metrics["tasks"]) == set(TASKS)
    card = yaml.safe_load((tmp_path / "a" / "model_card.yaml").read_text())
    metrics = {m["type"]: m["value"] for m in card["model-index"][0]["results"][0]["metrics"]}
    assert metrics["average_recall_at_1"] == round(res.headline["mean"] * 100, 2)
    assert {f"{t}/recall_at_{k}" for t in TASKS for k in (1, 2, 3)} <= set(metrics)
    passes = res.protocol["encoder_passes"]
    # 12 templates per task reuse images less than the default 50 (8.1x there, see
    # test_encoder_pass_ratio_at_default_size); the count is exact either way
    assert passes["per_query_loop"] == 4 * 12 * 16 and passes["ratio"] >= 4.0
    assert passes["encoded_now"] == passes["unique"]
    h = res.headline
    assert h["ci_low"] <= h["mean"] <= h["ci_high"]
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "focus_object" in out and "significant" in out


# -- bad input -------------------------------------------------------------------------------

def _copy(gen_root: Path, tmp: Path) -> Path:
    dst = tmp / "copy"
    shutil.copytree(gen_root, dst)
    return dst


def test_malformed_json_names_file_and_index(gen_root, tmp_path):
    root = _copy(gen_root, tmp_path)
    path = root / "annotations" / "focus_object.json"
    data = json.loads(path.read_text())
    del data[5]["condition"]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"focus_object.json entry 5: missing key"):
        run_benchmark(ConstantEncoder(), _cfg(root, tmp_path))
    path.write_text("[{not json")
    with pytest.raises(DataError, match="malformed JSON"):
        run_benchmark(ConstantEncoder(), _cfg(root, tmp_path))


def test_duplicates_empty_gallery_and_bad_bbox(gen_root, tmp_path):
    root = _copy(gen_root, tmp_path)
    path = root / "annotations" / "change_attribute.json"
    original = path.read_text()
    data = json.loads(original)
    data[2]["gallery"].append(data[2]["gallery"][0])
    data[4]["gallery"].append(data[4]["target"])  # as in the published change_object.json[19]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="entry 2: duplicate"):
        run_benchmark(ConstantEncoder(), _cfg(root, tmp_path, on_duplicate="error"))
    res = run_benchmark(ConstantEncoder(), _cfg(root, tmp_path))
    assert res.skipped["duplicate_candidates"]["change_attribute"] == 2
    per_q = res.metrics["tasks"]["change_attribute"]["per_query"]["1"]
    assert per_q[2] == pytest.approx(1 / 15) and per_q[4] == pytest.approx(1 / 15)
    data = json.loads(original)
    data[3]["gallery"] = []
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="entry 3: empty gallery"):
        run_benchmark(ConstantEncoder(), _cfg(root, tmp_path))
    data = json.loads(original)
    data[0]["target"]["instance_bbox"] = [300, 200, 500, 500]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"change_attribute.json entry 0 target: instance_bbox "
                                        r"\[300.0, 200.0, 500.0, 500.0\] lies outside"):
        run_benchmark(ConstantEncoder(), _cfg(root, tmp_path / "c2"))
    res = run_benchmark(ConstantEncoder(), _cfg(root, tmp_path / "c2", max_bad_boxes=1))
    assert res.skipped["boxes_outside"] == 1 and res.skipped["queries"]["change_attribute"] >= 1
    assert 0 not in res.metrics["tasks"]["change_attribute"]["query_ids"]
    data = json.loads(original)
    data[0]["target"]["instance_bbox"] = [0, 0, 0, 10]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="entry 0 target: invalid instance_bbox"):
        run_benchmark(ConstantEncoder(), _cfg(root, tmp_path / "c2"))
    # mostly inside, crossing the right border: clamped by the crop formula, counted
    data = json.loads(original)
    data[0]["target"]["instance_bbox"] = [290, 10, 40, 40]
    path.write_text(json.dumps(data))
    res = run_benchmark(ConstantEncoder(), _cfg(root, tmp_path / "c3"))
    assert res.skipped["boxes_clipped"] == 1 and res.skipped["boxes_checked"] > 0


def test_missing_images_counted_and_threshold(gen_root, tmp_path):
    root = _copy(gen_root, tmp_path)
    data = json.loads((root / "annotations" / "focus_object.json").read_text())
    victim = root / "coco" / "val2017" / f"{data[0]['target']['val_image_id']:012d}.jpg"
    victim.unlink()
    with pytest.raises(DataError, match="1 image file"):
        run_benchmark(ConstantEncoder(), _cfg(root, tmp_path))
    res = run_benchmark(ConstantEncoder(), _cfg(root, tmp_path, max_missing=1))
    assert res.skipped["missing_files"] == 1
    assert res.skipped["queries"]["focus_object"] >= 1
    assert res.metrics["tasks"]["focus_object"]["n_queries"] == 12 - res.skipped["queries"][
        "focus_object"]


def test_encoder_pass_ratio_at_default_size(tmp_path):
    root = write_genecis(tmp_path / "g", n_per_task=50, seed=1)
    res = run_benchmark(ConstantEncoder(), _cfg(root, tmp_path))
    assert res.protocol["encoder_passes"]["ratio"] >= 5.0


def test_parent_folders_stand_for_val2017_and_vg_subfolders(gen_root, tmp_path):
    res = run_benchmark(ConstantEncoder(), _cfg(
        gen_root, tmp_path, coco_root=str(gen_root / "coco"), vg_roots=(str(gen_root / "vg"),)))
    assert res.skipped["missing_files"] == 0
    assert all(m["n_queries"] == 12 for m in res.metrics["tasks"].values())


def test_corrupt_images_count_with_missing_ones(gen_root, tmp_path):
    root = _copy(gen_root, tmp_path)
    data = json.loads((root / "annotations" / "change_object.json").read_text())
    victim = root / "coco" / "val2017" / f"{data[1]['gallery'][3]['val_image_id']:012d}.jpg"
    victim.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"1 image file\(s\) missing or undecodable \(0 "
                       r"missing, 1 undecodable; allowed: 0\).*first error: .*cannot decode"):
        run_benchmark(ConstantEncoder(), _cfg(root, tmp_path))
    res = run_benchmark(ConstantEncoder(), _cfg(root, tmp_path, max_missing=1))
    assert res.skipped["undecodable_files"] == 1 and res.skipped["missing_files"] == 0
    assert res.skipped["queries"]["change_object"] >= 1
    m = res.metrics["tasks"]["change_object"]
    assert m["n_queries"] == 12 - res.skipped["queries"]["change_object"]
    assert 1 not in m["query_ids"] and m["recall"]["1"]["mean"] == pytest.approx(1 / 15)
