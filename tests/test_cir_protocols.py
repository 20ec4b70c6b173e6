"""CIRR, MIT-States, FashionIQ, CIRCO: oracle encoders score 100%, gallery order changes
nothing, bad input (duplicates, missing images, malformed entries) gets clear errors."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from condsim.benchmarks.circo import CircoConfig, write_submission
from condsim.benchmarks.cirr import CirrConfig
from condsim.benchmarks.fashioniq import JOIN_RULES, FashionIQConfig
from condsim.benchmarks.mitstates import MitStatesConfig, read_test_images
from condsim.benchmarks.run import run_benchmark
from condsim.data.cirr import read_cirr
from condsim.errors import DataError
from condsim.synthetic.circo import write_circo
from condsim.synthetic.cirr import write_cirr
from condsim.synthetic.fashioniq import write_fashioniq
from condsim.synthetic.mitstates import write_mitstates
from condsim.types import ModelMeta
from stubs import ConstantEncoder, HashEncoder


def _pixels(path: str | Path) -> bytes:
    return Image.open(path).convert("RGB").tobytes()


class LabelOracle:
    """Knows the answer: gallery images embed to one-hot(label of the image), a query
    (reference image, condition) to one-hot(label of its answer)."""

    meta = ModelMeta("test/label-oracle", 128, "oracle")

    def __init__(self, image_label: dict[bytes, int], query_label: dict[tuple[bytes, str], int]):
        self.image_label, self.query_label = image_label, query_label

    def _hot(self, label: int) -> torch.Tensor:
        v = torch.zeros(128)
        v[label] = 1.0
        return v

    def encode_targets(self, images):
        return torch.stack([self._hot(self.image_label[im.tobytes()]) for im in images])

    def encode_queries(self, images, conditions):
        return torch.stack([self._hot(self.query_label[(im.tobytes(), c)])
                            for im, c in zip(images, conditions, strict=True)])


# -- CIRR ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cirr_root(tmp_path_factory) -> Path:
    return write_cirr(tmp_path_factory.mktemp("cirr"), n_queries=20, seed=1)


def _cirr_cfg(root: Path, tmp: Path, **kw) -> CirrConfig:
    return CirrConfig(root=str(root), cache_dir=str(tmp / "c"), n_bootstrap=50, **kw)


def test_cirr_oracle_scores_100(cirr_root, tmp_path):
    queries, gallery = read_cirr(cirr_root, "val")
    label = {n: i for i, n in enumerate(gallery)}
    images = {_pixels(r.path): label[n] for n, r in gallery.items()}
    assert len(images) == len(gallery)  # every synthetic image is distinct
    answers = {(_pixels(gallery[q.reference].path), q.caption): label[q.target] for q in queries}
    res = run_benchmark(LabelOracle(images, answers), _cirr_cfg(cirr_root, tmp_path))
    for group in ("recall", "recall_subset"):
        assert all(v["mean"] == 1.0 for v in res.metrics[group].values())


def test_cirr_gallery_and_member_order_change_nothing(cirr_root, tmp_path):
    shuffled = tmp_path / "shuffled"
    shutil.copytree(cirr_root, shuffled)
    rng = np.random.default_rng(0)
    split = shuffled / "image_splits" / "split.rc2.val.json"
    names = json.loads(split.read_text())
    order = rng.permutation(len(names))
    items = list(names.items())
    split.write_text(json.dumps(dict(items[i] for i in order)))
    cap = shuffled / "captions" / "cap.rc2.val.json"
    data = json.loads(cap.read_text())
    for e in data:
        e["img_set"]["members"] = [str(m) for m in rng.permutation(e["img_set"]["members"])]
    cap.write_text(json.dumps(data))
    a = run_benchmark(HashEncoder(), _cirr_cfg(cirr_root, tmp_path))
    b = run_benchmark(HashEncoder(), _cirr_cfg(shuffled, tmp_path))
    assert a.metrics["per_query"] == b.metrics["per_query"]
    for group in ("recall", "recall_subset"):
        assert a.metrics[group] == b.metrics[group]


def test_cirr_bad_input(cirr_root, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(cirr_root, bad)
    cap = bad / "captions" / "cap.rc2.val.json"
    original = cap.read_text()
    data = json.loads(original)
    data[3]["pairid"] = data[1]["pairid"]
    cap.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"cap.rc2.val.json entry 3: duplicate pairid"):
        run_benchmark(ConstantEncoder(), _cirr_cfg(bad, tmp_path))
    data = json.loads(original)
    data[2]["target_hard"] = data[2]["reference"]
    cap.write_text(json.dumps(data))
    with pytest.raises(DataError, match="entry 2: target equals the reference"):
        run_benchmark(ConstantEncoder(), _cirr_cfg(bad, tmp_path))
    cap.write_text(original)
    split = bad / "image_splits" / "split.rc2.val.json"
    text = split.read_text()
    first = next(iter(json.loads(text).items()))
    split.write_text(text.rstrip()[:-1] + f', "{first[0]}": "{first[1]}"}}')
    with pytest.raises(DataError, match="is listed twice"):
        run_benchmark(ConstantEncoder(), _cirr_cfg(bad, tmp_path))


def test_cirr_missing_images_counted_and_skipped(cirr_root, tmp_path):
    bad = tmp_path / "miss"
    shutil.copytree(cirr_root, bad)
    queries, gallery = read_cirr(bad, "val")
    Path(gallery[queries[0].target].path).unlink()
    with pytest.raises(DataError, match=r"1 image file\(s\) missing or undecodable "
                       r"\(1 missing, 0 undecodable; allowed: 0\)"):
        run_benchmark(ConstantEncoder(), _cirr_cfg(bad, tmp_path))
    res = run_benchmark(ConstantEncoder(), _cirr_cfg(bad, tmp_path, max_missing=1))
    assert res.skipped["missing_files"] == 1 and res.skipped["queries"] >= 1
    assert res.metrics["n_queries"] == len(queries) - res.skipped["queries"]
    assert res.metrics["gallery_size"] == len(gallery) - 1
    n = res.metrics["gallery_size"] - 1
    assert res.metrics["recall"]["1"]["mean"] == pytest.approx(1 / n)


# -- MIT-States ------------------------------------------------------------------------------

def test_mitstates_oracle_scores_100(tmp_path):
    root = write_mitstates(tmp_path / "ms", per_class=2)
    items = read_test_images(root)
    classes = sorted({f"{a} {n}" for a, n, _ in items})
    label = {c: i for i, c in enumerate(classes)}
    images = {_pixels(p): label[f"{a} {n}"] for a, n, p in items}
    adjs = {n: sorted({a for a, m, _ in items if m == n}) for _, n, _ in items}
    answers = {(_pixels(p), b): label[f"{b} {n}"] for a, n, p in items for b in adjs[n] if b != a}
    res = run_benchmark(LabelOracle(images, answers), MitStatesConfig(
        root=str(root), cache_dir=str(tmp_path / "c"), n_bootstrap=50))
    assert all(v["mean"] == 1.0 for v in res.metrics["recall"].values())
    assert len(res.metrics["query_ids"]) == res.metrics["n_queries"] == len(answers)


# -- FashionIQ -------------------------------------------------------------------------------

def test_fashioniq_oracle_join_rule_and_missing_images(tmp_path):
    root = write_fashioniq(tmp_path / "fiq", n_pairs=8)
    images, answers, label = {}, {}, {}
    for cat in ("dress", "shirt", "toptee"):
        for asin in json.loads((root / "image_splits" / f"split.{cat}.val.json").read_text()):
            label[asin] = len(label)
            images[_pixels(root / "images" / f"{asin}.png")] = label[asin]
        for e in json.loads((root / "captions" / f"cap.{cat}.val.json").read_text()):
            key = (_pixels(root / "images" / f"{e['candidate']}.png"),
                   JOIN_RULES["clip4cir"](e["captions"]))
            answers[key] = label[e["target"]]
    cfg = FashionIQConfig(root=str(root), join="clip4cir", cache_dir=str(tmp_path / "c"),
                          n_bootstrap=50)
    res = run_benchmark(LabelOracle(images, answers), cfg)
    for m in res.metrics["categories"].values():
        assert m["recall"]["10"]["mean"] == 1.0 and m["recall"]["50"]["mean"] == 1.0
    assert JOIN_RULES["clip4cir"](["Is Red.", " has SLEEVES?"]) == "Is red and has SLEEVES"
    cap = json.loads((root / "captions" / "cap.dress.val.json").read_text())
    (root / "images" / f"{cap[0]['target']}.png").unlink()
    with pytest.raises(DataError, match=r"FashionIQ: 1 image\(s\) missing"):
        run_benchmark(ConstantEncoder(), cfg)
    res = run_benchmark(ConstantEncoder(), FashionIQConfig(
        root=str(root), max_missing=1, cache_dir=str(tmp_path / "c"), n_bootstrap=50))
    assert res.skipped["missing_files"] == 1 and res.skipped["queries"]["dress"] >= 1
    m = res.metrics["categories"]["dress"]
    assert m["recall"]["10"]["mean"] == pytest.approx(10 / m["gallery_size"])


# -- CIRCO -----------------------------------------------------------------------------------

def test_circo_bad_input_missing_images_and_official_layout(tmp_path):
    root = write_circo(tmp_path / "circo", n_queries=6)
    ann = root / "annotations" / "val.json"
    original = ann.read_text()
    data = json.loads(original)
    data[4]["id"] = data[2]["id"]
    ann.write_text(json.dumps(data))
    cfg = CircoConfig(root=str(root), cache_dir=str(tmp_path / "c"), n_bootstrap=50)
    with pytest.raises(DataError, match=r"val.json entry 4: duplicate query id"):
        run_benchmark(ConstantEncoder(), cfg)
    data = json.loads(original)
    data[1]["target_img_id"] = data[1]["reference_img_id"]
    ann.write_text(json.dumps(data))
    with pytest.raises(DataError, match="entry 1: target_img_id must be one of gt_img_ids"):
        run_benchmark(ConstantEncoder(), cfg)
    ann.write_text(original)
    # the official download layout, with COCO's image list naming one absent gallery file
    official = tmp_path / "official"
    (official / "COCO2017_unlabeled").mkdir(parents=True)
    shutil.copytree(root / "unlabeled2017", official / "COCO2017_unlabeled" / "unlabeled2017")
    shutil.copytree(root / "annotations", official / "annotations")
    ids = sorted(int(p.stem) for p in (root / "unlabeled2017").glob("*.jpg"))
    info = official / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json"
    info.parent.mkdir()
    info.write_text(json.dumps({"images": [{"id": i} for i in [*ids, 999_999]]}))
    ocfg = CircoConfig(root=str(official), cache_dir=str(tmp_path / "c"), n_bootstrap=50)
    with pytest.raises(DataError, match=r"1 referenced image\(s\) missing"):
        run_benchmark(ConstantEncoder(), ocfg)
    ocfg = dataclasses.replace(ocfg, max_missing=1)
    res = run_benchmark(ConstantEncoder(), ocfg)
    assert res.skipped["missing_files"] == 1 and res.skipped["queries"] == 0
    assert res.skipped["undecodable_files"] == 0
    assert res.metrics["gallery_size"] == len(ids)
    kept = CircoConfig(root=str(official), cache_dir=str(tmp_path / "c"), n_bootstrap=50,
                       max_missing=1, remove_reference=False)
    res_kept = run_benchmark(ConstantEncoder(), kept)
    assert res_kept.protocol["reference_removed"] is False
    assert res_kept.metrics["recall"]["5"]["mean"] == pytest.approx(5 / len(ids))
    kept = dataclasses.replace(kept, split="test")
    sub = json.loads(write_submission(ConstantEncoder(), kept, tmp_path / "s").read_text())
    test = json.loads((official / "annotations" / "test.json").read_text())
    assert set(sub) == {str(e["id"]) for e in test}
    assert any(e["reference_img_id"] in sub[str(e["id"])] for e in test)


# -- synth commands ----------------------------------------------------------------------------

def test_synth_commands_write_the_real_layouts(tmp_path):
    from condsim.cli.main import main

    assert main(["synth", "genecis", "--out", str(tmp_path / "g"), "--per-task", "3"]) == 0
    for task in ("focus_attribute", "change_attribute", "focus_object", "change_object"):
        data = json.loads((tmp_path / "g" / "annotations" / f"{task}.json").read_text())
        assert len(data) == 3 and all(len(e["gallery"]) == 14 for e in data)
    assert any((tmp_path / "g" / "vg" / "VG_100K_2").glob("*.jpg"))
    assert main(["synth", "cirr", "--out", str(tmp_path / "r"), "--queries", "5"]) == 0
    assert (tmp_path / "r" / "captions" / "cap.rc2.test1.json").is_file()
    assert main(["synth", "circo", "--out", str(tmp_path / "o"), "--queries", "5"]) == 0
    assert (tmp_path / "o" / "annotations" / "test.json").is_file()
    assert main(["synth", "mitstates", "--out", str(tmp_path / "m")]) == 0
    assert read_test_images(tmp_path / "m")
    assert main(["synth", "fashioniq", "--out", str(tmp_path / "f")]) == 0
    assert (tmp_path / "f" / "image_splits" / "split.toptee.val.json").is_file()
