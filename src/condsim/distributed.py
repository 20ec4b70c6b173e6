"""Multi-process / multi-node encoding with ``torch.distributed`` (``torchrun``).

Each rank encodes a contiguous shard of the image list into the shared embedding cache
(content-addressed, append-only: ranks never overwrite each other), then rank 0 reads every
row back in the original order and writes the output file. Without a process group this is
a plain single-process encode, so 1 process and N processes give the same file.

Evaluation uses the same idea (:func:`shared_encode`): before a benchmark encodes its split,
the unique images (then the unique queries) are split over the ranks, each rank encodes its
shard into the cache, the ranks agree on errors (:func:`agree`: one ``all_gather`` of each
rank's error message, which is also the barrier), and every rank then reads the whole split
from the cache, so the benchmark's own code runs unchanged and encodes nothing more. An
exception on one rank becomes the same :class:`~condsim.errors.DataError` on every rank.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch.distributed as dist

from condsim.cache.encode import encode_cached, query_namespace
from condsim.cache.store import KEY_DTYPE, EmbeddingCache, item_keys
from condsim.errors import DataError
from condsim.io import atomic_save_npy

logger = logging.getLogger(__name__)

T = TypeVar("T")


#: set inside :func:`single_process`: collectives are skipped even with a process group
_SOLO: ContextVar[bool] = ContextVar("condsim_single_process", default=False)


@contextmanager
def single_process() -> Iterator[None]:
    """Inside, this process acts as a job of its own (``rank_world() == (0, 1)``) even under
    a process group: for work that one rank does alone, e.g. the per-epoch validation that
    training runs on rank 0 only, which must not wait for the other ranks."""
    token = _SOLO.set(True)
    try:
        yield
    finally:
        _SOLO.reset(token)


def _rank_world() -> tuple[int, int]:
    if _SOLO.get():
        return 0, 1
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_world() -> tuple[int, int]:
    """``(rank, world size)`` of the active process group, ``(0, 1)`` without one."""
    return _rank_world()


def maybe_init_distributed() -> bool:
    """Initialise ``torch.distributed`` when launched by ``torchrun`` or a submitit task
    (``WORLD_SIZE > 1`` in the environment): NCCL on GPUs (this rank on ``cuda:LOCAL_RANK``),
    gloo on CPUs. Returns whether a process group is active; without ``WORLD_SIZE > 1``,
    nothing happens."""
    import os

    import torch

    if dist.is_available() and dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def collective_device() -> Any:
    """Where tensors for collectives must live: the current GPU under NCCL (which has no CPU
    collectives), else the CPU."""
    import torch

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def is_main_process() -> bool:
    """Whether this process writes files and prints (rank 0, or no process group)."""
    return _rank_world()[0] == 0


def agree(error: str | None, what: str) -> None:
    """Collective error check: every rank passes its error message (``None``: fine); when any
    rank has one, every rank raises the same :class:`DataError` naming the first failing
    rank. Also a barrier. Without a process group, raises ``error`` when set."""
    rank, world = _rank_world()
    if world == 1:
        if error is not None:
            raise DataError(f"{what}: {error}")
        return
    messages: list[str | None] = [None] * world
    dist.all_gather_object(messages, error)
    failed = [(r, m) for r, m in enumerate(messages) if m is not None]
    if failed:
        r, m = failed[0]
        more = f" ({len(failed) - 1} more rank(s) failed)" if len(failed) > 1 else ""
        raise DataError(f"{what}: rank {r}: {m}{more}")


def run_agreed(fn: Callable[[], T], what: str) -> T:
    """``fn()``, with its exception shared: under a process group an exception on any rank
    becomes the same :class:`DataError` on every rank (:func:`agree`, also a barrier), so no
    rank waits forever in a later collective. Without a process group, ``fn()`` unchanged
    (its own exception type)."""
    if _rank_world()[1] == 1:
        return fn()
    error: str | None = None
    result: T | None = None
    try:
        result = fn()
    except Exception as e:  # noqa: BLE001 - every rank must learn of it, or the others hang
        error = f"{type(e).__name__}: {e}"
    agree(error, what)
    return result  # type: ignore[return-value]


def all_gather_objects(value: Any) -> list[Any]:
    """``[value of rank 0, value of rank 1, ...]`` (picklable values); ``[value]`` alone."""
    rank, world = _rank_world()
    if world == 1:
        return [value]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, value)
    return out


def all_gather_arrays(arrays: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
    """Every rank's ``arrays`` (same shapes and dtypes on every rank), as tensors on the
    collective device rather than pickled: ``out[r][i]`` is array ``i`` of rank ``r``.
    Without a process group, ``[arrays]``."""
    if _rank_world()[1] == 1:
        return [[np.asarray(a) for a in arrays]]
    import torch

    world = _rank_world()[1]
    dev = collective_device()
    out: list[list[np.ndarray]] = [[] for _ in range(world)]
    for a in arrays:
        t = torch.from_numpy(np.ascontiguousarray(a)).to(dev)
        parts = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(parts, t)
        for r, p in enumerate(parts):
            out[r].append(p.cpu().numpy())
    return out


def all_reduce_sum(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Element-wise sums over the ranks of int64 ``arrays`` (same shapes on every rank), as
    one flat ``all_reduce``: ``out_i = sum_r arrays_i^(r)``, exact for integers. Without a
    process group, the arrays themselves."""
    if _rank_world()[1] == 1:
        return [np.asarray(a) for a in arrays]
    import torch

    flat = torch.from_numpy(np.concatenate([np.ascontiguousarray(a, np.int64).ravel()
                                            for a in arrays])).to(collective_device())
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    out, at = [], 0
    total = flat.cpu().numpy()
    for a in arrays:
        out.append(total[at:at + a.size].reshape(a.shape).copy())
        at += a.size
    return out


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """The contiguous ``[start, stop)`` of ``n`` items that ``rank`` of ``world`` takes."""
    return rank * n // world, (rank + 1) * n // world


def _encode_shard(model: Any, cache: EmbeddingCache, items: Sequence[Any], keys: np.ndarray,
                  conditions: Sequence[str] | None, target_keys: np.ndarray | None, *,
                  batch_size: int, num_workers: int, what: str) -> None:
    """This rank's contiguous shard of the unique ``keys`` encoded into ``cache``; the ranks
    agree on errors, then ``cache`` sees every rank's rows. Undecodable images are left out
    (the caller's own pass finds them again, on every rank alike, and applies its policy)."""
    rank, world = _rank_world()
    _, first = np.unique(keys, return_index=True)
    order = np.sort(first)
    start, stop = shard_bounds(order.size, rank, world)
    sel = order[start:stop]
    error: str | None = None
    try:
        if sel.size:
            encode_cached(model, cache, [items[i] for i in sel],
                          None if conditions is None else [conditions[i] for i in sel],
                          keys=keys[sel],
                          target_keys=None if target_keys is None else target_keys[sel],
                          batch_size=batch_size, num_workers=num_workers,
                          what=f"rank {rank} {what} shard")
    except Exception as e:  # noqa: BLE001 - every rank must learn of it, or the others hang
        error = f"{type(e).__name__}: {e}"
    agree(error, what)
    cache.refresh()


def shared_encode(model: Any, cache: EmbeddingCache, targets: Sequence[Any],
                  target_keys: np.ndarray, queries: Sequence[Any], query_conditions:
                  Sequence[str], query_keys: np.ndarray, query_target_keys: np.ndarray, *,
                  batch_size: int = 64, num_workers: int = 0, what: str = "images") -> None:
    """Under a process group, encode ``targets`` (gallery images, image-only queries) and the
    composed ``queries`` (with ``query_conditions``) across the ranks into the shared
    ``cache``, each unique key once across the job: targets first (with the query images too
    when the model composes queries from target embeddings), then the queries. Every rank
    returns with every encodable item cached. Without a process group, does nothing."""
    if _rank_world()[1] == 1:
        return
    enc = {"batch_size": batch_size, "num_workers": num_workers}
    items, keys = list(targets), np.asarray(target_keys, KEY_DTYPE)
    if queries and bool(getattr(model, "composes_from_targets", False)):
        items += list(queries)
        keys = np.concatenate([keys, np.asarray(query_target_keys, KEY_DTYPE)])
    _encode_shard(model, cache, items, keys, None, None, what=f"{what} images", **enc)
    if queries:
        _encode_shard(model, cache, list(queries), np.asarray(query_keys),
                      list(query_conditions), np.asarray(query_target_keys),
                      what=f"{what} queries", **enc)


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

    def encode_shard() -> None:
        _, errors = encode_cached(model, cache, images[start:stop], shard_cond,
                                  batch_size=batch_size, num_workers=num_workers,
                                  what=f"rank {rank} shard")
        if errors:
            bad = sorted(start + i for i in errors)
            named = [names[i] if names is not None else f"image {i}" for i in bad]
            raise DataError(f"rank {rank}: {len(errors)} image(s) cannot be decoded: "
                            f"{', '.join(named[:5])}{' ...' if len(named) > 5 else ''}; "
                            f"first: {errors[bad[0] - start]}; remove or replace them")

    # an error on any rank is the same error on every rank (also the barrier): no rank waits
    # for one that failed (a launcher that does not kill the others, e.g. submitit)
    run_agreed(encode_shard, "encode")
    if rank != 0:
        return None
    merged = EmbeddingCache(cache_dir, model.meta)  # reload: sees every rank's shards
    rows = merged.lookup(item_keys(images, conditions, namespace=query_namespace(model)))
    if (rows < 0).any():
        raise DataError(f"{int((rows < 0).sum())} embeddings missing after encoding")
    out = atomic_save_npy(out, merged.read(rows))
    logger.info("wrote %s (%d rows, %d ranks)", out, n, world)
    return out
