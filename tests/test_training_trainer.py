"""Contrastive trainer: loss formula, exact resume, DDP (2 gloo processes) == 1 process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from condsim.training.losses import contrastive_loss
from condsim.training.trainer import TrainConfig, Trainer

TOY = '''
import json, sys
import numpy as np, torch
import torch.distributed as dist
sys.path.insert(0, {tests!r})
from test_training_trainer import ToyTask, toy_model
from condsim.training.trainer import TrainConfig, Trainer
dist.init_process_group("gloo")
cfg = TrainConfig(out_dir={out!r}, epochs=2, batch_size=8, lr=0.05, seed=0, schedule="cosine")
tr = Trainer(toy_model(), ToyTask(), cfg, device="cpu")
st = tr.fit()
if dist.get_rank() == 0:
    json.dump(st.losses, open({out!r} + "/losses.json", "w"))
dist.destroy_process_group()
'''


class ToyTask:
    """Queries: a linear map of noisy inputs must match targets (learnable)."""

    def __init__(self, n: int = 48, d: int = 6) -> None:
        rng = np.random.default_rng(0)
        self.x = torch.from_numpy(rng.normal(size=(n, d)).astype(np.float32))
        self.y = torch.from_numpy(rng.normal(size=(n, d)).astype(np.float32))

    def __len__(self) -> int:
        return self.x.shape[0]

    def embed(self, model, idx, device):
        i = torch.from_numpy(np.asarray(idx))
        return model(self.x[i].to(device)), self.y[i].to(device)


def toy_model() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.Dropout(0.1))


def test_loss_formula():
    q = torch.randn(5, 3)
    t = torch.randn(5, 3)
    logits = 10 * F.normalize(q, dim=1) @ F.normalize(t, dim=1).T
    want = -torch.log_softmax(logits, dim=1).diag().mean()
    assert torch.allclose(contrastive_loss(q, t, 10.0), want)


def test_training_learns_and_resume_is_exact(tmp_path):
    cfg = TrainConfig(out_dir=str(tmp_path / "full"), epochs=3, batch_size=8, lr=0.05,
                      seed=0, schedule="cosine", warmup_steps=2, grad_accum=2)
    full = Trainer(toy_model(), ToyTask(), cfg, device="cpu")
    st = full.fit()
    assert st.global_step == 18 and np.mean(st.losses[-3:]) < np.mean(st.losses[:3])
    w_full = full.model.state_dict()

    cut = TrainConfig(**{**cfg.__dict__, "out_dir": str(tmp_path / "cut"), "max_steps": 7})
    Trainer(toy_model(), ToyTask(), cut).fit()  # "killed" after 7 steps (mid-epoch 2)
    again = TrainConfig(**{**cut.__dict__, "max_steps": 0})
    resumed = Trainer(toy_model(), ToyTask(), again, device="cpu")
    assert resumed.resume() and resumed.state.global_step == 7
    st2 = resumed.fit()
    assert st2.losses == pytest.approx(st.losses, abs=1e-7)
    for k, v in resumed.model.state_dict().items():
        assert torch.equal(v, w_full[k]), k


def test_validation_picks_best_checkpoint(tmp_path):
    scores = iter([0.2, 0.9, 0.5])
    cfg = TrainConfig(out_dir=str(tmp_path), epochs=3, batch_size=8, lr=0.01)
    st = Trainer(toy_model(), ToyTask(), cfg, validate=lambda m: next(scores)).fit()
    assert st.best_epoch == 2 and st.val_scores == [0.2, 0.9, 0.5]
    assert (tmp_path / "best" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "train_config.json").read_text())["seed"] == 0


def test_two_gloo_processes_match_one(tmp_path):
    one = tmp_path / "one"
    cfg = TrainConfig(out_dir=str(one), epochs=2, batch_size=8, lr=0.05, seed=0,
                      schedule="cosine")
    # dropout differs per rank under DDP, so compare with dropout off in both runs
    def model_nodrop():
        m = toy_model()
        m[1].p = 0.0
        return m
    ref = Trainer(model_nodrop(), ToyTask(), cfg, device="cpu").fit().losses
    two = tmp_path / "two"
    two.mkdir()
    script = two / "run.py"
    tests_dir = str(Path(__file__).parent)
    script.write_text(TOY.format(tests=tests_dir, out=str(two)).replace(
        "tr = Trainer(toy_model()", "m = toy_model(); m[1].p = 0.0\ntr = Trainer(m"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-port", str(29500 + os.getpid() % 1000), str(script)],
        capture_output=True, text=True, timeout=240, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = json.loads((two / "losses.json").read_text())
    np.testing.assert_allclose(losses, ref, rtol=1e-5, atol=1e-6)
