"""Reading an MTEB-layout corpus (images inline in parquet): whole column vs lazy cells.

Writes one parquet file of N encoded images (random-noise JPEGs, ~``--kb`` KB each, row
groups of 1,000 rows), then, each in a fresh process, lists the corpus two ways:

  reference: ``pyarrow.parquet.read_table`` of the image column, every cell as ``bytes``
             (how the any2any reader held a corpus before);
  condsim:   :func:`condsim.data.lazy_images.stream_cells` (digest + row per image, the
             bytes dropped) and then decodes every 100th image through
             :meth:`ParquetImage.load_image` (row groups read back on demand).

Prints the peak resident memory above the process's baseline (``VmHWM`` - ``VmRSS`` after the
imports)
and the wall time of each.
Run: python benchmarks/parquet_corpus_memory.py [--n 20000] [--kb 30]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

from lrvsf_scale import PeakMemory  # benchmarks/: the script's folder

_status = PeakMemory.status


def write(path: Path, n: int, kb: int) -> None:
    import io

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rng = np.random.default_rng(0)
    side = int((kb * 1024 / 1.5) ** 0.5)  # noise JPEGs: ~1.5 bytes per pixel at q=90
    base = []
    for _ in range(50):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(
            buf, "JPEG", quality=90)
        base.append(buf.getvalue())
    # distinct bytes per row (a trailing counter after the JPEG end marker)
    cells = [base[i % 50] + i.to_bytes(4, "little") for i in range(n)]
    pq.write_table(pa.table({"id": [str(i) for i in range(n)], "image": pa.array(cells)}),
                   path, row_group_size=1000)


def _run(kind: str, path: str, out: mp.Queue) -> None:
    import pyarrow.parquet as pq

    from condsim.data.lazy_images import stream_cells
    from condsim.data.lrvsf import binary_values

    base = _status("VmRSS")  # after the imports: only the corpus counts
    t0 = time.perf_counter()
    if kind == "reference":
        cells = binary_values(pq.read_table(path, columns=["image"]).column("image"), path)
        n = len(cells)
    else:
        lazy = list(stream_cells(path, "image"))
        n = len(lazy)
        for c in lazy[::100]:
            if c is not None:
                c.load_image()
    out.put((kind, n, time.perf_counter() - t0, _status("VmHWM") - base))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--kb", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "corpus-00000-of-00001.parquet"
        write(path, args.n, args.kb)
        size = path.stat().st_size
        print(f"{args.n:,} images, {size / 2**20:.0f} MiB parquet (row groups of 1,000)")
        ctx = mp.get_context("spawn")
        q: mp.Queue = ctx.Queue()
        for kind in ("reference", "condsim"):
            p = ctx.Process(target=_run, args=(kind, str(path), q))
            p.start()
            p.join()
            name, n, wall, peak = q.get()
            print(f"{name:9s}: {n:,} cells in {wall:.2f} s, peak memory above baseline "
                  f"{peak / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
