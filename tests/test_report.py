"""Reports: HTML parses, plots are real PNGs, the failure gallery shows real failures;
leaderboard sorting/formats; bad input."""

from __future__ import annotations

import io
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from condsim.benchmarks.genecis import GenecisConfig, evaluate_genecis
from condsim.benchmarks.lrvsf import LRVSFConfig, evaluate_lrvsf
from condsim.cli.main import main
from condsim.errors import DataError
from condsim.results.report import build_report, leaderboard_rows, load_runs
from condsim.synthetic.genecis import write_genecis
from condsim.synthetic.lrvsf import write_lrvsf


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_clip) -> Path:
    from condsim import create_model

    tmp = tmp_path_factory.mktemp("runs")
    write_lrvsf(tmp / "lr", n_products=30, n_distractors=100, files=2, seed=0)
    g = write_genecis(tmp / "g", n_per_task=8, seed=0)
    for name, model in (("a", tiny_clip), ("b", create_model("combine:image-only/test/tiny-clip",
                                                             device="cpu"))):
        evaluate_lrvsf(model, LRVSFConfig(data_root=str(tmp / "lr"), n_dists=(20, 80),
                                          folds="seeded", num_workers=0,
                                          cache_dir=str(tmp / "c")), tmp / "runs" / f"lr_{name}")
        evaluate_genecis(model, GenecisConfig(
            annotations=str(g / "annotations"), coco_root=str(g / "coco" / "val2017"),
            vg_roots=(str(g / "vg" / "VG_100K"), str(g / "vg" / "VG_100K_2")),
            cache_dir=str(tmp / "c"), n_bootstrap=100), tmp / "runs" / f"g_{name}")
    return tmp / "runs"


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.classes: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if a.get("class"):
            self.classes.append(a["class"])


def test_report_renders_with_plots_and_real_failures(runs, tmp_path):
    written = build_report([runs], tmp_path / "rep" / "report.html")
    page = written["html"].read_text()
    parser = _Collect()
    parser.feed(page)
    assert all(src.startswith("data:image/") for src in parser.imgs)  # self-contained
    for name in ("lrvsf_recall_at_1", "lrvsf_recall_at_10", "genecis_recall_at_1"):
        png = written[name].read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
        img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        assert len(np.unique(img.reshape(-1, 3), axis=0)) > 20
    # failures listed in the gallery are the runs' own recorded failures
    n_fail = parser.classes.count("fail")
    recorded = sum(min(6, len(json.loads((p / "results.json").read_text())["extra"]["failures"]))
                   for p in runs.iterdir())
    assert n_fail == recorded > 0
    md = written["markdown"].read_text()
    assert md.startswith("| benchmark | model |") and "test/tiny-clip" in md


def test_failures_are_real_failures(runs):
    res = json.loads((runs / "g_a" / "results.json").read_text())
    for f in res["extra"]["failures"]:
        task = res["metrics"]["tasks"][f["task"]]
        i = task["query_ids"].index(f["query_index"])
        assert task["per_query"]["1"][i] < 1.0
    lr = json.loads((runs / "lr_a" / "results.json").read_text())
    assert all(f["rank"] > 1 for f in lr["extra"]["failures"])


def test_leaderboard_sort_and_formats(runs, tmp_path):
    rows = leaderboard_rows(load_runs([runs]))
    assert [r["headline"] for r in rows] == sorted((r["headline"] for r in rows), reverse=True)
    by_model = leaderboard_rows(load_runs([runs]), sort="model")
    assert [r["model"] for r in by_model] == sorted(r["model"] for r in by_model)
    for suffix in (".md", ".csv", ".json"):
        out = tmp_path / f"lb{suffix}"
        assert main(["leaderboard", str(runs), "--out", str(out)]) == 0
        assert "tiny-clip" in out.read_text()
    with pytest.raises(DataError, match="cannot sort"):
        leaderboard_rows(load_runs([runs]), sort="nope")


def test_bad_inputs(tmp_path, runs):
    with pytest.raises(DataError, match="no such run"):
        load_runs([tmp_path / "missing"])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.json").write_text(json.dumps({"schema": "other/9"}))
    with pytest.raises(DataError, match="schema"):
        load_runs([bad])
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "r.html")]) == 2


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed")
def test_report_in_headless_chromium_has_no_console_errors(runs, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "shot", Path(__file__).parents[1] / "scripts" / "screenshot_report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    written = build_report([runs], tmp_path / "report.html")
    errors = mod.screenshot(written["html"], tmp_path / "shot.png", 1200, 1600)
    assert errors == []
    shot = np.asarray(Image.open(tmp_path / "shot.png").convert("RGB"))
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 50
