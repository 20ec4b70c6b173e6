"""torchrun encode: 2 gloo processes write the same embeddings as 1 process."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from condsim.cli.main import main
from condsim.synthetic.lrvsf import write_lrvsf


def test_two_processes_equal_one(tmp_path):
    root = write_lrvsf(tmp_path / "lr", n_products=4, n_distractors=50, files=2, seed=0)
    assert main(["encode", "--model", "test/tiny-clip", "--parquet", str(root / "distractors"),
                 "--out", str(tmp_path / "one.npy"), "--cache-dir", str(tmp_path / "c1")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-port", str(29700 + os.getpid() % 1000), "-m", "condsim.cli", "encode",
         "--model", "test/tiny-clip", "--parquet", str(root / "distractors"),
         "--out", str(tmp_path / "two.npy"), "--cache-dir", str(tmp_path / "c2")],
        capture_output=True, text=True, timeout=240, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = np.load(tmp_path / "one.npy"), np.load(tmp_path / "two.npy")
    assert one.shape == (50, 32) and np.array_equal(one, two)
    # both ranks wrote shards into the shared cache
    shards = list((tmp_path / "c2").glob("*/shard-*[0-9].npy"))
    assert len(shards) == 2
