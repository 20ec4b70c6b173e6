"""Query encoding: composed from cached target embeddings vs encoded directly.

For each CIR benchmark (synthetic sets in the real layouts), one evaluation with a fresh cache
per setting and the same CLIP-style model (`test/tiny-clip` by default, or --model):
  direct:   every query runs the image tower on its reference and the text tower on its
            condition (a per-query encoder loop, the reference code's way).
  composed: condsim's default - queries built from the target embedding of the reference
            (image tower once per unique image; zero for references already in the gallery)
            and the text feature of each distinct condition.
Prints image-tower and text-tower rows, wall time, and the largest difference of any reported
metric between the two settings (it must be ~0).

Run: python benchmarks/query_encoding.py [--model M] [--scale 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from condsim import create_model
from condsim.benchmarks.circo import CircoConfig
from condsim.benchmarks.cirr import CirrConfig
from condsim.benchmarks.fashioniq import FashionIQConfig
from condsim.benchmarks.genecis import GenecisConfig
from condsim.benchmarks.mitstates import MitStatesConfig
from condsim.benchmarks.run import run_benchmark
from condsim.synthetic.circo import write_circo
from condsim.synthetic.cirr import write_cirr
from condsim.synthetic.fashioniq import write_fashioniq
from condsim.synthetic.genecis import write_genecis
from condsim.synthetic.mitstates import write_mitstates


class Direct:
    """The same model with query composition switched off."""

    composes_from_targets = False

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def counted(model: Any) -> dict[str, int]:
    counts = {"image": 0, "text": 0}
    image_fn, text_fn = model.encode_image_pixels, model.encode_texts

    def image(px: Any) -> Any:
        counts["image"] += px.shape[0]
        return image_fn(px)

    def text(texts: Any) -> Any:
        counts["text"] += len(texts)
        return text_fn(texts)

    model.encode_image_pixels, model.encode_texts = image, text
    return counts


def numbers(tree: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(numbers(v, f"{prefix}/{k}"))
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        out[prefix] = float(tree)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="test/tiny-clip")
    ap.add_argument("--scale", type=int, default=2, help="synthetic set size multiplier")
    args = ap.parse_args()
    s = args.scale
    work = Path(tempfile.mkdtemp(prefix="condsim-qenc-"))
    g = write_genecis(work / "genecis", n_per_task=25 * s, seed=0)
    sets = {
        "CIRR": (run_benchmark, lambda c: CirrConfig(
            root=str(write_cirr(work / "cirr", n_queries=60 * s)), cache_dir=c)),
        "MIT-States": (run_benchmark, lambda c: MitStatesConfig(
            root=str(write_mitstates(work / "mit", per_class=3 * s)), cache_dir=c)),
        "FashionIQ": (run_benchmark, lambda c: FashionIQConfig(
            root=str(write_fashioniq(work / "fiq", n_pairs=30 * s)), cache_dir=c)),
        "CIRCO": (run_benchmark, lambda c: CircoConfig(
            root=str(write_circo(work / "circo", n_queries=40 * s)), cache_dir=c)),
        "GeneCIS": (run_benchmark, lambda c: GenecisConfig(
            annotations=str(g / "annotations"), coco_root=str(g / "coco" / "val2017"),
            vg_roots=(str(g / "vg" / "VG_100K"), str(g / "vg" / "VG_100K_2")),
            cache_dir=c)),
    }
    print(f"model {args.model}; fresh cache per run; rows through each tower")
    print(f"{'benchmark':11} {'setting':9} {'image rows':>10} {'text rows':>9} {'time s':>7}"
          f"   max |metric diff|")
    for name, (evaluate, make_cfg) in sets.items():
        results = {}
        for setting in ("direct", "composed"):
            model = create_model(args.model)
            counts = counted(model)
            cfg = make_cfg(str(work / f"cache-{name}-{setting}"))
            t0 = time.perf_counter()
            res = evaluate(Direct(model) if setting == "direct" else model, cfg)
            dt = time.perf_counter() - t0
            results[setting] = numbers(res.metrics)
            diff = ""
            if setting == "composed":
                a, b = results["direct"], results["composed"]
                diff = f"{max(abs(a[k] - b[k]) for k in a):.2g} over {len(a)} values"
            print(f"{name:11} {setting:9} {counts['image']:10d} {counts['text']:9d} "
                  f"{dt:7.2f}   {diff}")


if __name__ == "__main__":
    main()
