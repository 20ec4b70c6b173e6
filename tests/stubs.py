"""Stub encoders shared by the benchmark tests."""

from __future__ import annotations

import torch

from condsim.types import ModelMeta


class ConstantEncoder:
    """Every query and target embeds to the same vector: all scores tie (chance level)."""

    meta = ModelMeta("test/constant", 4, "const")

    def encode_targets(self, images):
        return torch.ones(len(images), 4)

    def encode_queries(self, images, conditions):
        return torch.ones(len(images), 4)


class HashEncoder:
    """Deterministic pseudo-random embeddings of the pixels (+ condition): no score ties,
    and a fixed answer for the same image, so brute-force loops can recompute them."""

    meta = ModelMeta("test/hash", 16, "h")

    @staticmethod
    def vec(img, salt: str = "") -> torch.Tensor:
        import hashlib

        seed = int.from_bytes(hashlib.blake2b(img.tobytes() + salt.encode(),
                                              digest_size=8).digest(), "little")
        return torch.randn(16, generator=torch.Generator().manual_seed(seed % 2**63))

    def encode_targets(self, images):
        return torch.stack([self.vec(im) for im in images])

    def encode_queries(self, images, conditions):
        return torch.stack([self.vec(im, c) for im, c in zip(images, conditions, strict=True)])


def jpegs(n: int, seed: int = 0) -> list[bytes]:
    """``n`` varied JPEGs from the synthetic world (a garment on a plain background)."""
    import numpy as np

    from condsim.synthetic.world import jpeg_bytes, random_spec, render_alone, shortest_side_size

    rng = np.random.default_rng(seed)
    return [jpeg_bytes(render_alone(random_spec(rng), shortest_side_size(rng), rng))
            for _ in range(n)]


class CountingHashEncoder(HashEncoder):
    """:class:`HashEncoder` that counts its calls and the images it encoded; ``fault`` makes
    it misbehave: ``"nan"`` (a NaN in the first row), ``"rows"`` (one row too few), ``"dim"``
    (one column too many)."""

    def __init__(self, fault: str | None = None) -> None:
        self.fault = fault
        self.calls = 0
        self.images = 0

    def encode_targets(self, images):
        self.calls += 1
        self.images += len(images)
        out = super().encode_targets(images)
        if self.fault == "nan":
            out[0, 0] = float("nan")
        elif self.fault == "rows":
            out = out[1:]
        elif self.fault == "dim":
            out = torch.cat([out, out[:, :1]], dim=1)
        return out
