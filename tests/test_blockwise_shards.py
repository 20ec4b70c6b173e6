"""Gallery-sharded scoring: ``rank_relevant(columns=...)`` over shards that partition the
gallery, counts added and tops merged, equals the full call; the top candidates follow the
declared order (exact score descending, equal scores by lower column)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from condsim.errors import CondsimError
from condsim.search.blockwise import merge_tops, rank_relevant
from condsim.search.exact import rowwise_dot


def _world(seed: int, n_q: int = 19, n: int = 61, d: int = 6):
    """Coarse embeddings (exact ties are common), duplicated gallery rows across the shard
    cuts, a few all-zero rows (every query ties on them), relevant and excluded columns."""
    rng = np.random.default_rng([seed, 5])
    q = rng.integers(-2, 3, (n_q, d)).astype(np.float32) / 4
    g = rng.integers(-2, 3, (n, d)).astype(np.float32) / 4
    g[n // 2:n // 2 + 8] = g[:8]
    g[-4:] = g[3]
    g[10:13] = 0.0
    rel, exc = [], []
    for _ in range(n_q):
        cols = rng.permutation(n)
        k = int(rng.integers(1, 5))
        rel.append(cols[:k].tolist())
        exc.append(cols[k:k + int(rng.integers(0, 4))].tolist())
    return q, g, rel, exc


def _full_scores(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    qt, gt = torch.from_numpy(q), torch.from_numpy(g)
    return np.stack([rowwise_dot(qt[i].expand(len(g), -1), gt).numpy() for i in range(len(q))])


def _sharded(q, g, rel, exc, cuts, **kw):
    parts = [rank_relevant(q, g, rel, exc, columns=(a, b), device="cpu", **kw)
             for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    top = kw.get("top", 0)
    cols, scores = merge_tops([(p.top_cols, p.top_scores) for p in parts], top)
    return parts, sum(p.greater for p in parts), sum(p.ties for p in parts), cols, scores


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("thresholds", ["all", "best"])
@pytest.mark.parametrize("top", [3, 40])  # 40: more than a shard holds
@pytest.mark.parametrize("cut", [0, 1, 29, 37, 61])
def test_two_shards_add_up_to_the_full_call(seed, thresholds, top, cut):
    q, g, rel, exc = _world(seed)
    kw = {"thresholds": thresholds, "top": top, "query_block": 7, "gallery_block": 9}
    full = rank_relevant(q, g, rel, exc, device="cpu", **kw)
    parts, greater, ties, cols, scores = _sharded(q, g, rel, exc, [0, cut, len(g)], **kw)
    np.testing.assert_array_equal(greater, full.greater)
    np.testing.assert_array_equal(ties, full.ties)
    np.testing.assert_array_equal(cols, full.top_cols)
    np.testing.assert_array_equal(scores, full.top_scores)
    for p in parts:  # the whole-gallery fields are the same on every shard
        for name in ("n_relevant", "cols", "best", "gallery_sizes"):
            np.testing.assert_array_equal(getattr(p, name), getattr(full, name))
        np.testing.assert_array_equal(p.scores, full.scores)


def test_many_shards_and_block_sizes_agree():
    q, g, rel, exc = _world(9)
    full = rank_relevant(q, g, rel, exc, top=5, device="cpu")
    for blocks in [(1, 1), (4, 5), (100, 1000)]:
        _, greater, ties, cols, scores = _sharded(
            q, g, rel, exc, [0, 5, 6, 6, 30, 44, len(g)], top=5, query_block=blocks[0],
            gallery_block=blocks[1])
        np.testing.assert_array_equal(greater, full.greater)
        np.testing.assert_array_equal(ties, full.ties)
        np.testing.assert_array_equal(cols, full.top_cols)
        np.testing.assert_array_equal(scores, full.top_scores)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("blocks", [(1024, 8192), (5, 7)])
def test_top_follows_the_declared_tie_order(seed, blocks):
    """Brute force: the ``T`` best non-relevant, non-excluded columns by exact row-dot score,
    equal scores by lower column (``np.lexsort((cols, -scores))``), whatever the blocks."""
    q, g, rel, exc = _world(seed)
    top = 12
    ranks = rank_relevant(q, g, rel, exc, top=top, query_block=blocks[0],
                          gallery_block=blocks[1], device="cpu")
    s = _full_scores(q, g)
    n_ties = 0
    for i in range(len(q)):
        cand = np.setdiff1d(np.arange(len(g)), np.union1d(rel[i], exc[i]))
        order = np.lexsort((cand, -s[i, cand]))[:top]
        np.testing.assert_array_equal(ranks.top_cols[i], cand[order])
        np.testing.assert_array_equal(ranks.top_scores[i], s[i, cand[order]])
        n_ties += int((np.diff(s[i, cand[order]]) == 0).sum())
    assert n_ties > 10  # the world does exercise the tie order


def test_shard_top_beyond_its_size_is_padded():
    q, g, rel, exc = _world(1)
    part = rank_relevant(q, g, rel, exc, top=8, columns=(58, 61), device="cpu")
    held = (part.top_cols >= 0).sum(axis=1)
    assert held.max() <= 3
    assert np.all(part.top_scores[part.top_cols < 0] == -np.inf)
    assert np.all(part.top_cols[part.top_cols >= 0] >= 58)
    empty = rank_relevant(q, g, rel, exc, top=4, columns=(20, 20), device="cpu")
    assert not empty.greater.any() and not empty.ties.any() and (empty.top_cols == -1).all()


def test_bad_columns_and_parts():
    q, g, rel, exc = _world(0)
    for columns in [(-1, 5), (5, 4), (0, len(g) + 1)]:
        with pytest.raises(CondsimError, match="columns"):
            rank_relevant(q, g, rel, exc, columns=columns, device="cpu")
    with pytest.raises(CondsimError, match="no parts"):
        merge_tops([], 3)
    with pytest.raises(CondsimError, match="shapes"):
        merge_tops([(np.zeros((2, 3), np.int64), np.zeros((2, 2), np.float32))], 3)


def test_gallery_kept_on_the_device_when_it_fits(monkeypatch):
    """On CUDA with several query blocks, the gallery shard is copied to the device once
    when it takes at most half the free memory; never on CPU or with one query block. The
    resident path (forced here on CPU) gives the same ranks as block-by-block reading."""
    from condsim.search import blockwise

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev=None: (1000, 4000))
    cuda = torch.device("cuda", 0)
    assert blockwise._keep_resident(cuda, 500, passes=2)
    assert not blockwise._keep_resident(cuda, 501, passes=2)  # more than half the free
    assert not blockwise._keep_resident(cuda, 10, passes=1)  # one query block: one read
    assert not blockwise._keep_resident(torch.device("cpu"), 10, passes=5)

    q, g, rel, exc = _world(4)
    kw = {"top": 5, "query_block": 4, "gallery_block": 9, "device": "cpu"}
    want = [rank_relevant(q, g, rel, exc, columns=c, **kw) for c in ((0, 61), (20, 50))]
    seen: list[int] = []

    def always(dev, nbytes, passes):
        seen.append(nbytes)
        return True

    monkeypatch.setattr(blockwise, "_keep_resident", always)
    got = [rank_relevant(q, g, rel, exc, columns=c, **kw) for c in ((0, 61), (20, 50))]
    assert seen == [61 * 6 * 4, 30 * 6 * 4]  # the shard only
    for a, b in zip(got, want, strict=True):
        for name in ("greater", "ties", "top_cols", "top_scores"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
