"""Encoding throughput: decode+preprocess per core, and end-to-end encoding of JPEG bytes
with condsim's pipeline (decode in worker processes overlapped with the forward pass) vs a
naive loop (decode then encode, serially, batch by batch), same model, same images.

Run: python benchmarks/encode_throughput.py [--n 1024] [--workers 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from condsim import create_model
from condsim.models.base import encode_images
from condsim.models.preprocess import ImagePreprocessor
from condsim.synthetic.world import jpeg_bytes, random_spec, render_alone, shortest_side_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=64, help="model input size (64, 224)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    images = [jpeg_bytes(render_alone(random_spec(rng), shortest_side_size(rng), rng))
              for _ in range(args.n)]
    if args.image_size == 64:
        model = create_model("test/tiny-clip", device="cpu")
    else:  # the same tiny architecture at a CLIP-like input size: a heavier forward pass
        import tempfile
        from pathlib import Path

        from condsim.models.tiny import build_tiny_clip

        path = Path(tempfile.mkdtemp()) / "clip"
        build_tiny_clip(path, image_size=args.image_size)
        model = create_model(f"hf:{path}", device="cpu")
    print(f"{args.n} JPEGs (shortest side 256), tiny CLIP at {args.image_size}px, torch threads "
          f"{torch.get_num_threads()}")
    for name, pre in (("tiny-clip 64px", model.preprocessor),
                      ("CLIP 224px", ImagePreprocessor())):
        t0 = time.perf_counter()
        for im in images:
            pre.to_uint8(im)
        t1 = time.perf_counter()
        for im in images:
            pre(im)
        t2 = time.perf_counter()
        print(f"{name}, 1 core: decode+resize+crop (the decode worker's step) "
              f"{args.n / (t1 - t0):6.0f} img/s; + float normalisation per image "
              f"{args.n / (t2 - t1):6.0f} img/s")

    def naive() -> np.ndarray:
        out = []
        with torch.inference_mode():
            for s in range(0, args.n, args.batch_size):
                px = torch.from_numpy(np.stack([model.preprocessor(im) for im in
                                                images[s:s + args.batch_size]]))
                out.append(model.encode_image_pixels(px).numpy())
        return np.concatenate(out)

    naive()  # warm-up
    t0 = time.perf_counter()
    ref = naive()
    t_naive = time.perf_counter() - t0
    print(f"{'naive loop (decode then encode)':38s}: {args.n / t_naive:8.0f} img/s")
    for kind, label in (("thread", "threads"), ("process", "processes")):
        t0 = time.perf_counter()
        res = encode_images(model, images, batch_size=args.batch_size,
                            num_workers=args.workers, worker_type=kind)
        assert res.ok.all()
        t_pipe = time.perf_counter() - t0
        name = f"condsim pipeline ({args.workers} decode {label})"
        print(f"{name:38s}: {args.n / t_pipe:8.0f} img/s = {t_naive / t_pipe:.2f}x naive; "
              "max |diff| "
              f"{float(np.abs(ref - res.embeddings).max()):.2g}")
    print("(pipeline = decode workers + the forward pass in the main thread, overlapped)")


if __name__ == "__main__":
    main()
