"""The demo at its tiny size: runs end to end and the trained conditional model wins."""

from __future__ import annotations

import json

from condsim.cli.main import main
from condsim.demo import BASELINES
from condsim.results.run_result import load_result


def test_demo_tiny_conditional_model_beats_baselines(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--size", "tiny", "--workers", "0"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["conditional_beats_baselines"] == {"condvit (trained)": True,
                                                      "condvit-text (trained)": True,
                                                      "combiner (trained on CIRR)": True}
    assert set(summary["models"]) == {*BASELINES, "condvit (trained)"}
    assert set(summary["models_captions"]) == {*BASELINES, "condvit-text (trained)"}
    runs = sorted(p.name for p in (out / "runs").iterdir())
    # LRVS-F with categories and with captions: 3 baselines + a CondViT each; CIRR and
    # GeneCIS: 3 baselines + the Combiner trained on CIRR
    assert len(runs) == 4 + 4 + 4 + 4
    assert load_result(out / "runs" / "genecis__combiner (trained on CIRR)").model[
        "name"] == "combiner:demo-cirr"
    assert load_result(out / "runs" / "lrvsf-text__condvit-text (trained)").protocol[
        "conditioning"] == "text"
    for run in runs:
        res = load_result(out / "runs" / run)
        assert res.seed == 0
    # the condition test: the image-only baseline ignores the condition (exactly zero drop)
    drops = summary["shuffled_condition_drop"]
    assert set(drops["cirr"]) == set(drops["genecis"]) == {*BASELINES,
                                                           "combiner (trained on CIRR)"}
    assert "condvit-text (trained)" in drops["lrvsf_captions"]
    image_only = next(b for b in BASELINES if "image-only" in b)
    for bench in ("cirr", "genecis", "lrvsf_captions"):
        assert drops[bench][image_only]["mean"] == 0.0
        assert drops[bench][image_only]["top1_changed"] == 0.0
    assert (out / "models" / "condvit" / "last" / "condvit_config.json").is_file()
    html = (out / "report" / "report.html").read_text()
    assert "condvit (trained)" in html and (out / "report" / "report.md").is_file()
