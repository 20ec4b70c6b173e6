"""parse -> mine -> train -> eval through the CLI on a synthetic caption set."""

from __future__ import annotations

import json

import numpy as np
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


def test_slurm_script_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the data folders must exist (checked before writing)
    (tmp_path / "t").mkdir()
    (tmp_path / "i").mkdir()
    assert main(["train", "combiner", "--triplets", "t", "--images", "i", "--out",
                 str(tmp_path), "--slurm-nodes", "2", "--gpus-per-node", "8"]) == 0
    text = (tmp_path / "train.sbatch").read_text()
    assert "#SBATCH --nodes=2" in text and "--nproc-per-node 8" in text
    assert "-m condsim.cli train combiner --triplets t --images i" in text


def test_train_condvit_cli_validates_each_epoch_and_keeps_the_best(tmp_path):
    """--val-root scores every epoch on a held-out LRVS-F set (R@K, seeded folds); best/
    holds the epoch with the highest score; the scores are in the trainer state."""
    from condsim.synthetic.lrvsf import write_lrvsf
    from condsim.training.recipes import condvit_validator
    from condsim.training.tasks import CondViTPair

    write_lrvsf(tmp_path / "train", n_products=60, n_distractors=10, seed=1)
    write_lrvsf(tmp_path / "val", n_products=30, n_distractors=60, seed=2, files=1)
    out = tmp_path / "cv"
    assert main(["train", "condvit", "--train-root", str(tmp_path / "train"), "--out",
                 str(out), "--epochs", "2", "--batch-size", "30", "--lr", "1e-3",
                 "--val-root", str(tmp_path / "val"), "--val-dists", "50",
                 "--val-k", "5"]) == 0
    state = json.loads((out / "last" / "trainer_state.json").read_text())
    scores = state["val_scores"]
    assert len(scores) == 2 and all(0 <= s <= 100 for s in scores)
    assert state["best_epoch"] == 1 + int(np.argmax(scores))
    assert (out / "best" / "condvit_config.json").is_file()
    # the score is LRVS-F R@5 of the best checkpoint, recomputed from the saved weights
    from condsim.models.condvit import CondViT
    from condsim.registry import create_model

    best = CondViT.load(out / "best")
    validate = condvit_validator(tmp_path / "val", create_model("test/tiny-clip").preprocessor,
                                 n_dist=50, k=5)
    assert abs(validate(CondViTPair(best)) - max(scores)) < 1e-9


def test_text_conditioned_condvit_trains_saves_loads_and_evaluates(tmp_path):
    """--conditioning text: captions through the init CLIP's frozen text tower, projected to
    the conditioning token; condvit:<dir> reloads with that text tower (checked by revision)
    and evaluates LRVS-F with text conditions."""
    from condsim.models.condvit import CondViT
    from condsim.registry import create_model
    from condsim.synthetic.lrvsf import write_lrvsf
    from condsim.training.recipes import condvit_validator
    from condsim.training.tasks import CondViTPair
    from stubs import jpegs

    write_lrvsf(tmp_path / "train", n_products=40, n_distractors=10, seed=1)
    write_lrvsf(tmp_path / "val", n_products=20, n_distractors=40, seed=2, files=1)
    out = tmp_path / "cvt"
    assert main(["train", "condvit", "--train-root", str(tmp_path / "train"), "--out",
                 str(out), "--conditioning", "text", "--epochs", "2", "--batch-size", "20",
                 "--lr", "1e-3", "--val-root", str(tmp_path / "val"), "--val-dists", "30",
                 "--val-k", "5"]) == 0
    cfg = json.loads((out / "best" / "condvit_config.json").read_text())
    assert cfg["conditioning"] == "text" and cfg["text_backbone"] == "test/tiny-clip"
    enc = create_model(f"condvit:{out / 'best'}", device="cpu")
    assert enc.meta.conditions == ("text",) and "+text:" in enc.meta.revision
    img = jpegs(1, seed=4)
    a, b = enc.encode_queries(img * 2, ["a red striped circle", "a blue dotted square"])
    assert not np.allclose(a.numpy(), b.numpy())
    # the kept validation score is LRVS-F R@5 (text conditioning) of the saved best weights
    state = json.loads((out / "last" / "trainer_state.json").read_text())
    clip = create_model("test/tiny-clip", device="cpu")
    validate = condvit_validator(tmp_path / "val", clip.preprocessor, n_dist=30, k=5,
                                 text_encoder=clip)
    assert abs(validate(CondViTPair(CondViT.load(out / "best"))) - max(state["val_scores"])
               ) < 1e-9
    run = tmp_path / "run"
    assert main(["eval", "lrvsf", "--model", f"condvit:{out / 'best'}", "--data-root",
                 str(tmp_path / "val"), "--conditioning", "text", "--folds", "seeded",
                 "--n-dists", "30", "--out", str(run)]) == 0
    assert load_result(run).protocol["conditioning"] == "text"
    # another text tower than the one it was trained with: refused
    cfg["text_backbone_revision"] = "some-other-weights"
    (out / "best" / "condvit_config.json").write_text(json.dumps(cfg))
    from condsim.errors import ModelError

    with pytest.raises(ModelError, match="was trained on text features of"):
        create_model(f"condvit:{out / 'best'}", device="cpu")


def test_combiner_trained_on_cirr_beats_the_untrained_baseline(tmp_path):
    """--cirr-root: the GeneCIS paper's "Combiner trained on CIRR" baseline, on CIRR's train
    split (reference, caption, target_hard); selected on CIRR val, reloaded, re-scored."""
    from condsim.synthetic.cirr import write_cirr

    root = write_cirr(tmp_path / "cirr", n_queries=60, n_train=336, seed=0)
    base = tmp_path / "base"
    assert main(["eval", "cirr", "--model", "test/tiny-clip", "--root", str(root),
                 "--out", str(base)]) == 0
    out = tmp_path / "comb"
    assert main(["train", "combiner", "--cirr-root", str(root), "--out", str(out),
                 "--epochs", "20", "--batch-size", "56", "--lr", "3e-3", "--logit-scale", "30",
                 "--projection-dim", "128", "--hidden-dim", "256", "--dropout", "0.1",
                 "--schedule", "cosine", "--val", f"cirr:{root}"]) == 0
    state = json.loads((out / "last" / "trainer_state.json").read_text())
    run = tmp_path / "run"
    assert main(["eval", "cirr", "--model", f"combiner:{out / 'best'}", "--root", str(root),
                 "--out", str(run)]) == 0
    trained, untrained = load_result(run).headline["mean"], load_result(base).headline["mean"]
    assert trained == pytest.approx(max(state["val_scores"]))
    assert trained > untrained + 0.05  # 9 vs 1 of 60 queries at R@1 on this seed
    assert main(["train", "combiner", "--cirr-root", str(root), "--triplets", str(tmp_path),
                 "--images", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert main(["train", "combiner", "--out", str(tmp_path / "y")]) == 2


def test_submitit_local_job_trains_with_two_processes_like_one(tmp_path):
    """--submit local:2: submitit starts 2 tasks, each sets the torch.distributed environment
    from its JobEnvironment and runs the same command; DDP (gloo) over the global batch gives
    the single-process losses."""
    pytest.importorskip("submitit")
    from condsim.synthetic.lrvsf import write_lrvsf

    write_lrvsf(tmp_path / "train", n_products=40, n_distractors=10, seed=1)
    write_lrvsf(tmp_path / "val", n_products=12, n_distractors=20, seed=2, files=1)
    common = ["train", "condvit", "--train-root", str(tmp_path / "train"), "--epochs", "2",
              "--batch-size", "20", "--lr", "1e-3", "--val-root", str(tmp_path / "val"),
              "--val-dists", "20", "--val-k", "5"]
    assert main([*common, "--out", str(tmp_path / "two"), "--submit", "local:2"]) == 0
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    two = json.loads((tmp_path / "two" / "last" / "trainer_state.json").read_text())
    one = json.loads((tmp_path / "one" / "last" / "trainer_state.json").read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)
    # validated once (rank 0) and shared: same scores and best epoch as one process
    np.testing.assert_allclose(two["val_scores"], one["val_scores"], atol=1e-9)
    assert len(two["val_scores"]) == 2 and two["best_epoch"] == one["best_epoch"]
    logs = sorted(p.name for p in (tmp_path / "two" / "submitit").glob("*_log.out"))
    assert len(logs) == 2  # one per task
    assert main([*common, "--out", str(tmp_path / "x"), "--submit", "moon:2"]) == 2


def test_ranks_split_the_frozen_feature_extraction(tmp_path, monkeypatch):
    """Under DDP (submitit local:2) each rank encodes its share of the triplet images: the
    cache ends with every image exactly once, written by both ranks; training equals one
    process."""
    pytest.importorskip("submitit")
    from condsim.cache.store import EmbeddingCache
    from condsim.data.cirr import read_cirr
    from condsim.paths import default_cache_dir
    from condsim.registry import create_model
    from condsim.synthetic.cirr import write_cirr

    monkeypatch.setenv("CONDSIM_HOME", str(tmp_path / "home"))
    root = write_cirr(tmp_path / "cirr", n_queries=10, n_train=120, seed=0)
    common = ["train", "combiner", "--cirr-root", str(root), "--epochs", "2",
              "--batch-size", "40", "--lr", "1e-3", "--projection-dim", "32",
              "--hidden-dim", "64", "--dropout", "0"]
    assert main([*common, "--out", str(tmp_path / "two"), "--submit", "local:2"]) == 0
    queries, _ = read_cirr(root, "train")
    unique = {n for q in queries for n in (q.reference, q.target)}
    cache = EmbeddingCache(default_cache_dir(), create_model("test/tiny-clip").meta)
    assert len(cache) == len(unique)  # no image encoded twice
    assert len(list(cache.dir.glob("shard-*.keys.npy"))) >= 2  # both ranks wrote
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    two = json.loads((tmp_path / "two" / "last" / "trainer_state.json").read_text())
    one = json.loads((tmp_path / "one" / "last" / "trainer_state.json").read_text())
    assert two["world_size"] == 2
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)
