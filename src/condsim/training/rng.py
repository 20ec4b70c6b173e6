"""Counter-based random numbers: every draw is a pure function of (seed, stream, counters).

The miner needs the *k*-th triplet to be the same whether it is mined in one process or in
the 400th shard of a cluster job, and it needs to draw for a million triplets at once.
A stateful generator gives one of the two; hashing the counters gives both. The hash is
the SplitMix64 finaliser (Steele et al., 2014), applied to ``key(seed, stream) ^ index``
and then to the per-draw counter, in wrapping uint64 arithmetic.
"""

from __future__ import annotations

import hashlib

import numpy as np

_MASK = (1 << 64) - 1
_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = 0x9E3779B97F4A7C15


def _mix_int(x: int) -> int:
    """SplitMix64 finaliser on a Python int (no numpy scalar overflow warnings)."""
    x &= _MASK
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _MASK
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _MASK
    x ^= x >> 31
    return x


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser applied elementwise to a uint64 array (wrapping arithmetic)."""
    x = np.asarray(x, dtype=np.uint64).copy()
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= _C1
        x ^= x >> np.uint64(27)
        x *= _C2
        x ^= x >> np.uint64(31)
    return x


def stream_key(seed: int, stream: str) -> int:
    """A 64-bit key for the named random stream of ``seed`` (blake2b of both)."""
    digest = hashlib.blake2b(f"{int(seed)}\0{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def index_keys(key: int, index: np.ndarray) -> np.ndarray:
    """Per-item keys: ``mix64(key ^ (index * golden))`` for an int array of item indices."""
    idx = np.asarray(index, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        return mix64(idx * np.uint64(_GOLDEN) ^ np.uint64(key))


def uniforms(keys: np.ndarray, *counter: int) -> np.ndarray:
    """Uniform float64 in ``[0, 1)`` (53 random bits) for each item key at ``counter``.

    ``counter`` is a tuple of small non-negative ints (e.g. try, attempt, draw slot); each
    distinct tuple gives an independent draw for every key.
    """
    c = 0
    for part in counter:
        c = _mix_int(c * _GOLDEN + int(part) + 1)
    bits = mix64(keys ^ np.uint64(c))
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def below(u: np.ndarray, n: np.ndarray | int) -> np.ndarray:
    """``floor(u * n)`` as int64, clipped to ``n - 1`` (uniform index below ``n >= 1``)."""
    n_arr = np.asarray(n, dtype=np.int64)
    j = np.floor(u * n_arr).astype(np.int64)
    return np.minimum(j, n_arr - 1)
