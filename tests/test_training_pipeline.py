"""parse -> mine -> train -> eval through the CLI on a synthetic caption set."""

from __future__ import annotations

import pytest

from condsim.cli.main import main
from condsim.results.run_result import load_result
from condsim.synthetic.captions import write_captions
from condsim.synthetic.genecis import write_genecis


def test_parse_mine_train_eval_end_to_end(tmp_path):
    pytest.importorskip("sng_parser")
    caps = write_captions(tmp_path / "cc", n=200, seed=0)
    assert main(["parse", "--captions", str(caps), "--out", str(tmp_path / "graphs")]) == 0
    assert main(["mine", "--graphs", str(tmp_path / "graphs"), "--out", str(tmp_path / "trip"),
                 "--seed", "0"]) == 0
    assert main(["train", "combiner", "--triplets", str(tmp_path / "trip"), "--images",
                 str(tmp_path / "cc"), "--out", str(tmp_path / "comb"), "--epochs", "2",
                 "--batch-size", "32", "--lr", "1e-4", "--projection-dim", "32",
                 "--hidden-dim", "64", "--seed", "1", "--val",
                 f"genecis:{write_genecis(tmp_path / 'gen', n_per_task=8)}"]) == 0
    assert (tmp_path / "comb" / "last" / "combiner_config.json").is_file()
    assert (tmp_path / "comb" / "best" / "combiner_config.json").is_file()
    g = tmp_path / "gen"
    assert main(["eval", "genecis", "--model", f"combiner:{tmp_path / 'comb' / 'last'}",
                 "--annotations", str(g / "annotations"), "--coco-root",
                 str(g / "coco" / "val2017"), "--vg-root", str(g / "vg" / "VG_100K"),
                 "--vg-root", str(g / "vg" / "VG_100K_2"), "--workers", "0",
                 "--bootstrap", "100", "--out", str(tmp_path / "run")]) == 0
    res = load_result(tmp_path / "run")
    assert res.model["name"].startswith("combiner:") and res.model["extra"]["backbone"] == \
        "test/tiny-clip"


def test_training_data_image_mismatch_is_named(tmp_path):
    pytest.importorskip("sng_parser")
    caps = write_captions(tmp_path / "cc", n=120, seed=2)
    assert main(["parse", "--captions", str(caps), "--out", str(tmp_path / "graphs")]) == 0
    assert main(["mine", "--graphs", str(tmp_path / "graphs"), "--out", str(tmp_path / "trip"),
                 "--seed", "0"]) == 0
    code = main(["train", "combiner", "--triplets", str(tmp_path / "trip"), "--images",
                 str(tmp_path / "elsewhere"), "--out", str(tmp_path / "c")])
    assert code == 2


def test_slurm_script_is_written(tmp_path):
    assert main(["train", "combiner", "--triplets", "t", "--images", "i", "--out",
                 str(tmp_path), "--slurm-nodes", "2", "--gpus-per-node", "8"]) == 0
    text = (tmp_path / "train.sbatch").read_text()
    assert "#SBATCH --nodes=2" in text and "--nproc-per-node 8" in text
    assert "-m condsim.cli train combiner --triplets t --images i" in text
