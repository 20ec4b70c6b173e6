"""Cross-checks of the CIR benchmarks not covered elsewhere: the server submission files
(CIRR, CIRCO) scored the way the official servers score them agree with condsim's own val
metrics, and FashionIQ does not depend on the gallery order of its split files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from condsim.benchmarks.circo import CircoConfig, write_submission
from condsim.benchmarks.cirr import CirrConfig, write_submissions
from condsim.benchmarks.fashioniq import FashionIQConfig
from condsim.benchmarks.run import run_benchmark
from condsim.data.cirr import read_cirr
from condsim.synthetic.circo import write_circo
from condsim.synthetic.cirr import write_cirr
from condsim.synthetic.fashioniq import write_fashioniq
from stubs import HashEncoder


def test_cirr_val_submission_scores_like_the_server(tmp_path):
    """Recall@K / Recall_subset@K recomputed from the submission files (hit = target among the
    first K names, as the CIRR server counts) equal the scored val metrics; the reference never
    appears in either file."""
    root = write_cirr(tmp_path / "cirr", n_queries=20, seed=3)
    cfg = CirrConfig(root=str(root), cache_dir=str(tmp_path / "c"), n_bootstrap=50)
    res = run_benchmark(HashEncoder(), cfg)
    files = write_submissions(HashEncoder(), cfg, tmp_path / "sub")
    top50 = json.loads(files["recall"].read_text())
    top3 = json.loads(files["recall_subset"].read_text())
    assert top50.pop("version") == "rc2" and top50.pop("metric") == "recall"
    assert top3.pop("version") == "rc2" and top3.pop("metric") == "recall_subset"
    queries, _ = read_cirr(root, "val")
    for q in queries:
        assert q.reference not in top50[str(q.pairid)] and q.reference not in top3[str(q.pairid)]
        assert len(set(top50[str(q.pairid)])) == len(top50[str(q.pairid)])
    for k in (1, 5, 10, 50):
        want = np.mean([q.target in top50[str(q.pairid)][:k] for q in queries])
        assert res.metrics["recall"][str(k)]["mean"] == pytest.approx(want)
    for k in (1, 2, 3):
        want = np.mean([q.target in top3[str(q.pairid)][:k] for q in queries])
        assert res.metrics["recall_subset"][str(k)]["mean"] == pytest.approx(want)


def _official_ap(pred: list[int], gts: list[int], k: int) -> float:
    """CIRCO's formula written out: sum_{i<=K} P@i * rel_i / min(#gt, K)."""
    hits, total = 0, 0.0
    for i, p in enumerate(pred[:k], start=1):
        if p in gts:
            hits += 1
            total += hits / i
    return total / min(len(gts), k)


def test_circo_val_submission_scores_like_the_server(tmp_path):
    """mAP@K and Recall@K recomputed from a top-50 val submission with the official formula
    equal run_benchmark's (no ties with this encoder, so the tie rule does not matter)."""
    root = write_circo(tmp_path / "circo", n_queries=12)
    cfg = CircoConfig(root=str(root), cache_dir=str(tmp_path / "c"), n_bootstrap=50)
    res = run_benchmark(HashEncoder(), cfg)
    sub = json.loads(write_submission(HashEncoder(), cfg, tmp_path / "sub").read_text())
    ann = json.loads((root / "annotations" / "val.json").read_text())
    for e in ann:
        assert e["reference_img_id"] not in sub[str(e["id"])]
    for k in (5, 10, 25, 50):
        want = np.mean([_official_ap(sub[str(e["id"])], e["gt_img_ids"], k) for e in ann])
        assert res.metrics["map"][str(k)]["mean"] == pytest.approx(want)
        rec = np.mean([e["target_img_id"] in sub[str(e["id"])][:k] for e in ann])
        assert res.metrics["recall"][str(k)]["mean"] == pytest.approx(rec)


def test_fashioniq_gallery_order_changes_nothing(tmp_path):
    root = write_fashioniq(tmp_path / "fiq", n_pairs=8)
    shuffled = tmp_path / "shuffled"
    shutil.copytree(root, shuffled)
    rng = np.random.default_rng(0)
    for cat in ("dress", "shirt", "toptee"):
        split = shuffled / "image_splits" / f"split.{cat}.val.json"
        split.write_text(json.dumps([str(a) for a in rng.permutation(
            json.loads(split.read_text()))]))
    cfg = {"cache_dir": str(tmp_path / "c"), "n_bootstrap": 50}
    a = run_benchmark(HashEncoder(), FashionIQConfig(root=str(root), **cfg))
    b = run_benchmark(HashEncoder(), FashionIQConfig(root=str(shuffled), **cfg))
    for cat in ("dress", "shirt", "toptee"):
        ma, mb = a.metrics["categories"][cat], b.metrics["categories"][cat]
        assert ma["per_query"] == mb["per_query"] and ma["recall"] == mb["recall"]
    assert a.headline == b.headline
