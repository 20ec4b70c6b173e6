"""Evaluate your own model with condsim, two ways.

1. The official LRVS-F harness interface, unchanged: subclass ``LRVSFModel`` (imported from
   condsim's drop-in module instead of ``lrvsf_benchmark``) and call ``LRVSF(...).run``.
2. condsim's own interface: any object with ``meta`` (a ``ModelMeta``), ``encode_targets``
   and ``encode_queries`` runs on every benchmark through ``condsim.evaluate``, with the
   embedding cache and the exact protocols.

The model here is deliberately simple (a colour histogram, plus a hashed-word term for the
condition) so that the example runs anywhere in seconds; expect near-chance numbers from it.
Replace it with yours.

    python examples/custom_model.py [--data DIR] [--out DIR]

Without ``--data``, synthetic LRVS-F and CIRR sets are written first.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import condsim
from condsim.compat.lrvsf_benchmark import LRVSF, LRVSFModel
from condsim.types import ModelMeta


def colour_histogram(image: bytes | Image.Image, bins: int = 4) -> np.ndarray:
    img = image if isinstance(image, Image.Image) else Image.open(io.BytesIO(image))
    px = np.asarray(img.convert("RGB").resize((32, 32)), np.int64) * bins // 256
    hist = np.bincount(((px[..., 0] * bins + px[..., 1]) * bins + px[..., 2]).ravel(),
                       minlength=bins ** 3).astype(np.float32)
    return hist / np.linalg.norm(hist)


def text_vector(text: str, dim: int = 64) -> np.ndarray:
    vec = np.zeros(dim, np.float32)
    for word in text.lower().split():
        vec[int(hashlib.md5(word.encode()).hexdigest(), 16) % dim] += 1.0
    return vec / max(1.0, float(np.linalg.norm(vec)))


class HistogramModel:
    """condsim's interface: targets = colour histograms; queries add the condition's words."""

    meta = ModelMeta(name="example/histogram", embedding_dim=64 + 64,
                     preprocessing_id="hist4-32px", revision="v1")

    def encode_targets(self, images: list) -> torch.Tensor:
        feats = [np.r_[colour_histogram(im), np.zeros(64, np.float32)] for im in images]
        return torch.from_numpy(np.stack(feats))

    def encode_queries(self, images: list, conditions: list[str]) -> torch.Tensor:
        feats = [np.r_[colour_histogram(im), 0.3 * text_vector(c)]
                 for im, c in zip(images, conditions, strict=True)]
        return torch.from_numpy(np.stack(feats))


class HistogramLRVSF(LRVSFModel):
    """The official harness interface: ``imgs`` is a pandas Series of JPEG bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = HistogramModel()

    def encode_queries(self, imgs, conds):
        return self.inner.encode_queries(list(imgs), list(conds))

    def encode_targets(self, imgs):
        return self.inner.encode_targets(list(imgs))

    def topk(self, q_embs, t_embs, topk):
        return torch.topk(q_embs @ t_embs.T, topk, dim=1).indices


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="folder with lrvsf/ and cirr/ (default: "
                    "write synthetic sets)")
    ap.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="condsim-ex-")))
    args = ap.parse_args()
    data = args.data
    if data is None:
        from condsim.synthetic import write_cirr, write_lrvsf

        data = args.out / "data"
        write_lrvsf(data / "lrvsf", n_products=40, n_distractors=200, files=2, seed=0)
        write_cirr(data / "cirr", n_queries=40, n_train=0, seed=0)

    # 1. the official harness interface (folds: the synthetic set is not the 2,000 products)
    harness = LRVSF(str(data / "lrvsf"), "category", folds="seeded", n_dists=(50, 200))
    card = harness.run(HistogramLRVSF(), "example/histogram", str(args.out))
    print("LRVS-F model card metrics:", card["model-index"][0]["results"][0]["metrics"][:2])

    # 2. condsim's interface, any benchmark
    result = condsim.evaluate(HistogramModel(), "cirr", args.out / "cirr",
                              root=str(data / "cirr"), cache_dir=str(args.out / "cache"))
    print("CIRR", result.headline)


if __name__ == "__main__":
    main()
