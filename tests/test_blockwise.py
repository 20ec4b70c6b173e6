"""The blockwise composed-retrieval engine against brute force on the full score matrix."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from condsim.metrics.ap import expected_ap_at_ks, expected_ap_from_ranks
from condsim.metrics.ndcg import expected_ir_recall_from_ranks, expected_ndcg_from_ranks
from condsim.metrics.recall import any_hit_from_counts, expected_any_hit_at_k
from condsim.search.blockwise import rank_candidates, rank_relevant
from condsim.search.exact import rowwise_dot


def _world(seed: int, n_q: int = 23, n: int = 157, d: int = 8):
    rng = np.random.default_rng(seed)
    # coarse values make exact ties common; duplicated rows tie exactly
    q = rng.integers(-2, 3, (n_q, d)).astype(np.float32) / 4
    g = rng.integers(-2, 3, (n, d)).astype(np.float32) / 4
    g[n // 2:n // 2 + 10] = g[:10]
    rel, exc = [], []
    for _ in range(n_q):
        cols = rng.permutation(n)
        k = int(rng.integers(1, 6))
        rel.append(cols[:k].tolist())
        exc.append(cols[k:k + int(rng.integers(0, 3))].tolist())
    return q, g, rel, exc


def _full_scores(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    qt, gt = torch.from_numpy(q), torch.from_numpy(g)
    return np.stack([rowwise_dot(qt[i].expand(len(g), -1), gt).numpy() for i in range(len(q))])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("blocks", [(1024, 8192), (5, 13)])
def test_counts_equal_brute_force(seed, blocks):
    q, g, rel, exc = _world(seed)
    ranks = rank_relevant(q, g, rel, exc, top=3, query_block=blocks[0], gallery_block=blocks[1])
    s = _full_scores(q, g)
    for i in range(len(q)):
        other = np.ones(len(g), bool)
        other[rel[i]] = False
        other[exc[i]] = False
        for r, c in enumerate(rel[i]):
            assert ranks.cols[i, r] == c
            assert ranks.scores[i, r] == s[i, c]
            assert ranks.greater[i, r] == int((s[i, other] > s[i, c]).sum())
            assert ranks.ties[i, r] == int((s[i, other] == s[i, c]).sum())
        # top: the best non-relevant, non-excluded scores
        best = np.sort(s[i, other])[::-1][:3]
        np.testing.assert_array_equal(ranks.top_scores[i], best)
        assert ranks.gallery_sizes[i] == len(g) - len(exc[i])


def test_memmap_gallery_and_best_mode(tmp_path):
    q, g, rel, exc = _world(7)
    path = tmp_path / "g.npy"
    np.save(path, g)
    mm = np.load(path, mmap_mode="r")
    a = rank_relevant(q, mm, rel, exc, thresholds="best", gallery_block=11)
    s = np.where(np.isin(np.arange(len(g))[None], []), 0, _full_scores(q, g))
    for i in range(len(q)):
        scores = s[i].copy()
        scores[exc[i]] = -np.inf
        relevant = np.zeros(len(g), bool)
        relevant[rel[i]] = True
        want = expected_any_hit_at_k(scores[None], relevant[None], (1, 5, 10))
        got = any_hit_from_counts(*(x[i:i + 1] for x in a.best_counts()), (1, 5, 10))
        np.testing.assert_allclose(got, want)


@pytest.mark.parametrize("seed", range(3))
def test_ap_from_ranks_equals_full_ranking(seed):
    q, g, rel, exc = _world(seed)
    ranks = rank_relevant(q, g, rel, exc)
    s = _full_scores(q, g).astype(np.float64)
    for i in range(len(q)):
        row = s[i].copy()
        row[exc[i]] = -np.inf
        relevant = np.zeros(len(g), bool)
        relevant[rel[i]] = True
        n = len(rel[i])
        want = expected_ap_at_ks(row, relevant, n, (1, 5, 10, 50))
        got = expected_ap_from_ranks(ranks.scores[i, :n], ranks.greater[i, :n],
                                     ranks.ties[i, :n], n, (1, 5, 10, 50))
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def _enumerate(scores, gains, k):
    """Mean nDCG@k / IR recall@k over every order of tied items (brute force)."""
    levels = sorted(set(scores.tolist()), reverse=True)
    groups = [[i for i in range(len(scores)) if scores[i] == v] for v in levels]
    ideal = np.sort(gains[gains > 0])[::-1][:k]
    idcg = sum(x / np.log2(j + 2) for j, x in enumerate(ideal))
    nd, rc = [], []
    for perm in itertools.product(*[itertools.permutations(gr) for gr in groups]):
        order = [i for p in perm for i in p][:k]
        dcg = sum(gains[i] / np.log2(j + 2) for j, i in enumerate(order))
        nd.append(dcg / idcg)
        rc.append(sum(gains[i] > 0 for i in order) / (gains > 0).sum())
    return np.mean(nd), np.mean(rc)


def test_ndcg_and_ir_recall_equal_enumeration_over_ties():
    rng = np.random.default_rng(0)
    for _ in range(30):
        n = 7
        scores = rng.integers(0, 3, n).astype(np.float64)
        gains = np.zeros(n)
        rel = rng.choice(n, int(rng.integers(1, 4)), replace=False)
        gains[rel] = rng.integers(1, 3, rel.size)
        k = int(rng.integers(1, n + 1))
        other = np.setdiff1d(np.arange(n), rel)
        g = np.array([(scores[other] > scores[r]).sum() for r in rel])
        t = np.array([(scores[other] == scores[r]).sum() for r in rel])
        nd = expected_ndcg_from_ranks(scores[rel], g, t, gains[rel], [k])[0]
        rc = expected_ir_recall_from_ranks(scores[rel], g, t, [k])[0]
        want_nd, want_rc = _enumerate(scores, gains, k)
        assert nd == pytest.approx(want_nd, abs=1e-12)
        assert rc == pytest.approx(want_rc, abs=1e-12)


def test_candidates_rank_like_brute_force():
    q, g, _, _ = _world(3)
    lists = [list(range(i, i + 15)) for i in range(len(q))]
    scores, ranks = rank_candidates(q, g, lists, [[0]] * len(q))
    s = _full_scores(q, g)
    for i, cands in enumerate(lists):
        np.testing.assert_array_equal(scores[i, :15], s[i, cands])
        assert ranks.greater[i, 0] == (s[i, cands[1:]] > s[i, cands[0]]).sum()
        assert ranks.ties[i, 0] == (s[i, cands[1:]] == s[i, cands[0]]).sum()


def test_bad_inputs_are_refused():
    from condsim.errors import CondsimError

    q, g, rel, exc = _world(0, n_q=3)
    with pytest.raises(CondsimError, match="no relevant"):
        rank_relevant(q, g, [[], [1], [2]])
    with pytest.raises(CondsimError, match="also excluded"):
        rank_relevant(q, g, [[1], [1], [2]], [[1], [], []])
    bad = q.copy()
    bad[1, 0] = np.nan
    with pytest.raises(CondsimError, match="NaN"):
        rank_relevant(bad, g, rel, exc)
    with pytest.raises(CondsimError, match="outside"):
        rank_relevant(q, g, [[999], [1], [2]])
