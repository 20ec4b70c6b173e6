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


def _encode_rank(rank: int, init: str, folder: str, report: str) -> None:
    import json
    from pathlib import Path

    import torch.distributed as dist

    from condsim.data.lazy_images import FileImage
    from condsim.distributed import encode_distributed
    from condsim.registry import create_model

    os.environ["OMP_NUM_THREADS"] = "1"
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    files = sorted(Path(folder, "imgs").iterdir())
    try:
        encode_distributed(create_model("test/tiny-clip"), [FileImage.of(p) for p in files],
                           Path(folder, "cache"), Path(folder, "out.npy"),
                           names=[str(p) for p in files])
        record = {"error": None}
    except Exception as e:  # noqa: BLE001 - reported to the test
        record = {"error": f"{type(e).__name__}: {e}"}
    Path(report, f"enc{rank}.json").write_text(json.dumps(record))
    dist.destroy_process_group()


def test_a_corrupt_image_on_rank_1_stops_both_ranks(tmp_path):
    """condsim encode under a launcher that does not kill the other ranks (submitit): a
    corrupt image in rank 1's shard is the same error on both ranks, no rank waits forever
    (rank 0 used to wait at the barrier), and nothing is written."""
    import json

    from PIL import Image

    from test_distributed_eval import run_ranks

    (tmp_path / "imgs").mkdir()
    for i in range(10):
        Image.new("RGB", (16, 16), (i * 20, 5, 5)).save(tmp_path / "imgs" / f"{i:02d}.jpg")
    (tmp_path / "imgs" / "08.jpg").write_bytes(b"not a jpeg")  # rank 1 holds rows 5..9
    run_ranks(_encode_rank, lambda r: (r, f"file://{tmp_path / 'pg'}", str(tmp_path),
                                       str(tmp_path)))
    errors = [json.loads((tmp_path / f"enc{r}.json").read_text())["error"] for r in range(2)]
    assert errors[0] == errors[1] and "08.jpg" in errors[0] and "rank 1" in errors[0]
    assert not (tmp_path / "out.npy").exists()
