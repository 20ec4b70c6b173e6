"""Multi-process / multi-node encoding with ``torch.distributed`` (``torchrun``).

Each rank encodes a contiguous shard of the image list into the shared embedding cache
(content-addressed, append-only: ranks never overwrite each other), then rank 0 reads every
row back in the original order and writes the output file. Without a process group this is
a plain single-process encode, so 1 process and N processes give the same file.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch.distributed as dist

from condsim.cache.encode import encode_cached, query_namespace
from condsim.cache.store import EmbeddingCache, item_keys
from condsim.errors import DataError
from condsim.io import atomic_save_npy

logger = logging.getLogger(__name__)


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def encode_distributed(
    model: Any, images: Sequence[bytes], cache_dir: str | Path, out: str | Path, *,
    conditions: Sequence[str] | None = None, batch_size: int = 64, num_workers: int = 0,
    names: Sequence[str] | None = None,
) -> Path | None:
    """Encode ``images`` across all ranks; rank 0 writes ``out`` (``.npy``, float32
    ``(n, dim)``, rows in input order) and returns its path, other ranks return ``None``.
    Undecodable images abort with a :class:`DataError` naming them (by ``names[i]``, e.g.
    their file, when given, else by position)."""
    rank, world = _rank_world()
    n = len(images)
    start, stop = rank * n // world, (rank + 1) * n // world
    cache = EmbeddingCache(cache_dir, model.meta)
    shard_cond = None if conditions is None else conditions[start:stop]
    _, errors = encode_cached(model, cache, images[start:stop], shard_cond,
                              batch_size=batch_size, num_workers=num_workers,
                              what=f"rank {rank} shard")
    if errors:
        bad = sorted(start + i for i in errors)
        named = [names[i] if names is not None else f"image {i}" for i in bad]
        raise DataError(f"rank {rank}: {len(errors)} image(s) cannot be decoded: "
                        f"{', '.join(named[:5])}{' ...' if len(named) > 5 else ''}; first: "
                        f"{errors[bad[0] - start]}; remove or replace them")
    if world > 1:
        dist.barrier()
    if rank != 0:
        return None
    merged = EmbeddingCache(cache_dir, model.meta)  # reload: sees every rank's shards
    rows = merged.lookup(item_keys(images, conditions, namespace=query_namespace(model)))
    if (rows < 0).any():
        raise DataError(f"{int((rows < 0).sum())} embeddings missing after encoding")
    out = atomic_save_npy(out, merged.read(rows))
    logger.info("wrote %s (%d rows, %d ranks)", out, n, world)
    return out
