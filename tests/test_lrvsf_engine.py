"""fold_recalls against a brute-force loop that builds every fold gallery and sorts it."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from condsim.benchmarks.lrvsf import fold_recalls, load_folds, official_folds, seeded_draws
from condsim.benchmarks.lrvsf_core import recalls_from_fold_counts
from condsim.errors import CondsimError, DataError
from condsim.search.exact import fold_rank_counts


def brute_force(q, t, d, folds, draws, ks):
    """Reference protocol: per fold, gallery = unique targets + drawn distractors, full sort,
    expected recall under random tie-breaking, queries weighted by multiplicity."""
    out = np.zeros((folds.shape[0], len(ks)))
    for f in range(folds.shape[0]):
        uniq, counts = np.unique(folds[f], return_counts=True)
        gallery = np.concatenate([t[uniq], d[draws[f]]])
        scores = q[uniq] @ gallery.T
        for i in range(len(uniq)):
            own = scores[i, i]
            order = np.argsort(-scores[i], kind="stable")
            g = int((scores[i] > own).sum())
            tie = int((scores[i] == own).sum()) - 1
            assert tie >= 0 and g == int(np.sum(scores[i][order[:g]] > own))
            for j, k in enumerate(ks):
                out[f, j] += counts[i] * min(1.0, max(0.0, (k - g) / (tie + 1)))
        out[f] /= counts.sum()
    return out


@settings(max_examples=40, deadline=None)
@given(
    p=st.integers(2, 30), n=st.integers(1, 80), dim=st.integers(1, 4),
    f=st.integers(1, 4), b=st.integers(1, 25), nd=st.integers(0, 120),
    block=st.integers(1, 50), seed=st.integers(0, 2**31 - 1),
    screen=st.sampled_from(["bf16", "fp32"]),
)
def test_matches_brute_force_with_ties_and_duplicates(p, n, dim, f, b, nd, block, seed, screen):
    rng = np.random.default_rng(seed)
    # small integer embeddings: exact dot products, many ties, duplicate rows
    q = rng.integers(-2, 3, (p, dim)).astype(np.float32)
    t = rng.integers(-2, 3, (p, dim)).astype(np.float32)
    d = rng.integers(-2, 3, (n, dim)).astype(np.float32)
    folds = rng.integers(0, p, (f, b))
    draws = rng.integers(0, n, (f, nd))
    ks = [1, 2, 5, 10]
    got = fold_recalls(q, t, d, folds, draws, ks, block_size=block, screen=screen)
    want = brute_force(q, t, d, folds, draws, ks)
    assert got.shape == (f, len(ks)) and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("screen", ["bf16", "fp32"])
def test_copies_of_targets_among_distractors_tie_exactly(screen):
    """Float embeddings, the same image as target and as distractor(s): a tie, never a win
    or a loss decided by BLAS rounding."""
    rng = np.random.default_rng(5)
    q = rng.normal(size=(30, 64)).astype(np.float32)
    t = (q + rng.normal(size=(30, 64))).astype(np.float32)
    d = rng.normal(size=(200, 64)).astype(np.float32)
    d[[3, 50, 51]] = t[[7, 7, 9]]  # target 7 appears twice, target 9 once
    folds = np.arange(30)[None]
    draws = np.array([[3, 50, 51, 3, 10, 11]])
    got = fold_recalls(q, t, d, folds, draws, [1, 2, 3, 4], screen=screen)
    want = brute_force(q, t, d, folds, draws, [1, 2, 3, 4])
    np.testing.assert_allclose(got, want, atol=1e-12)
    fc = fold_rank_counts(q, t, d, folds, [draws], screen=screen)
    i7 = int(np.flatnonzero(fc.products == 7)[0])
    i9 = int(np.flatnonzero(fc.products == 9)[0])
    assert fc.ties[i7, 0, 0] == 3 and fc.ties[i9, 0, 0] == 1  # row 3 drawn twice + row 50


@pytest.mark.parametrize("screen", ["bf16", "fp32"])
def test_matches_torch_topk_reference_on_random_floats(tmp_path, screen):
    rng = np.random.default_rng(0)
    p, n, dim = 60, 3000, 16
    q = rng.normal(size=(p, dim)).astype(np.float32)
    t = (q + 0.8 * rng.normal(size=(p, dim))).astype(np.float32)
    d = rng.normal(size=(n, dim)).astype(np.float32)
    mm = np.lib.format.open_memmap(tmp_path / "d.npy", "w+", np.float32, d.shape)
    mm[:] = d
    mm.flush()
    folds = rng.integers(0, p, (5, 30))
    draws = rng.integers(0, n, (5, 2000))
    ks = [1, 5, 10, 20, 50]
    got = fold_recalls(q, t, np.load(tmp_path / "d.npy", mmap_mode="r"), folds, draws, ks,
                       block_size=700, screen=screen)
    # the official loop: gallery per fold, torch.topk(100), hit if target among first K
    want = np.zeros_like(got)
    for f in range(5):
        uniq, counts = np.unique(folds[f], return_counts=True)
        gal = torch.from_numpy(np.concatenate([t[uniq], d[draws[f]]]))
        top = torch.topk(torch.from_numpy(q[uniq]) @ gal.T, 100).indices
        hits = (top == torch.arange(len(uniq))[:, None]).float().cumsum(1) > 0
        for j, k in enumerate(ks):
            want[f, j] = (hits[:, k - 1].numpy() * counts).sum() / counts.sum()
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_constant_model_gets_exact_chance():
    p, n = 10, 50
    q = np.ones((p, 4), np.float32)
    t = np.ones((p, 4), np.float32)
    d = np.ones((n, 4), np.float32)
    folds = np.array([[0, 1, 1, 2], [3, 3, 3, 3]])
    draws = np.random.default_rng(0).integers(0, n, (2, 20))
    got = fold_recalls(q, t, d, folds, draws, [1, 5, 30])
    g0, g1 = 3 + 20, 1 + 20  # gallery sizes: unique targets + draws
    np.testing.assert_allclose(got, [[1 / g0, 5 / g0, 1.0], [1 / g1, 5 / g1, 1.0]])


def test_multiple_draw_sets_in_one_pass_equal_separate_calls():
    rng = np.random.default_rng(2)
    q, t = rng.normal(size=(2, 40, 8)).astype(np.float32)
    d = rng.normal(size=(500, 8)).astype(np.float32)
    folds = rng.integers(0, 40, (3, 20))
    draws = seeded_draws(7, (10, 100, 1000), 3, 500)
    both = recalls_from_fold_counts(fold_rank_counts(q, t, d, folds, draws), [1, 5])
    for li in range(3):
        rows = draws.mult[:, li * 3:(li + 1) * 3]
        # rebuild explicit draws from the multiplicities and compare with the single-set API
        explicit = np.stack([np.repeat(np.arange(500), rows[:, f]) for f in range(3)])
        np.testing.assert_allclose(both[:, li], fold_recalls(q, t, d, folds, explicit, [1, 5]))


def test_seeded_draws_are_reproducible_and_seed_dependent():
    a = seeded_draws(0, (100,), 4, 1000).mult
    b = seeded_draws(0, (100,), 4, 1000).mult
    c = seeded_draws(1, (100,), 4, 1000).mult
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.sum(axis=0).tolist() == [100] * 4


def test_bad_inputs_are_named():
    q = np.zeros((3, 2), np.float32)
    d = np.zeros((5, 2), np.float32)
    folds = np.array([[0, 1]])
    with pytest.raises(CondsimError, match="dimension"):
        fold_recalls(q, q, np.zeros((5, 3), np.float32), folds, np.zeros((1, 2), int), [1])
    with pytest.raises(CondsimError, match="outside"):
        fold_recalls(q, q, d, np.array([[0, 7]]), np.zeros((1, 2), int), [1])
    with pytest.raises(CondsimError, match="fold rows"):
        fold_recalls(q, q, d, folds, np.zeros((2, 2), int), [1])
    bad = q.copy()
    bad[1, 0] = np.nan
    with pytest.raises(CondsimError, match="NaN"):
        fold_recalls(bad, q, d, folds, np.zeros((1, 2), int), [1])
    dn = d.copy()
    dn[4] = np.inf  # a drawn row (undrawn rows are not read: next test)
    with pytest.raises(CondsimError, match=r"rows \[4\] hold NaN/inf"):
        fold_recalls(q, q, dn, folds, np.array([[0, 4]]), [1])


def test_official_folds_shipped_and_loaders(tmp_path):
    folds = official_folds()
    assert folds.shape == (20, 1000)
    uniq = [len(np.unique(r)) for r in folds]
    assert min(uniq) >= 766 and max(uniq) <= 802
    shared = __import__("pathlib").Path(__file__).parents[2] / "shared" / \
        "lrvsf_bootstrapped_indices.npy"
    if shared.exists():
        assert np.array_equal(np.load(shared), folds)
    torch.save(torch.from_numpy(folds.astype(np.int32)), tmp_path / "b.pt")
    loaded, src = load_folds(str(tmp_path / "b.pt"), 2000, 0)
    assert np.array_equal(loaded, folds) and src.endswith("b.pt")
    np.save(tmp_path / "bad.npy", np.zeros(5, np.int64))
    with pytest.raises(DataError, match="2-D"):
        load_folds(str(tmp_path / "bad.npy"), 2000, 0)
    with pytest.raises(DataError, match="seeded"):
        load_folds("official", 200, 0)
    s1, _ = load_folds("seeded", 200, 3)
    s2, _ = load_folds("seeded", 200, 3)
    assert s1.shape == (20, 100) and np.array_equal(s1, s2)


def _brute_rank_metrics(q, t, d, folds, draws, cutoff):
    """Per fold: MRR@cutoff by enumerating every tie order (the target's rank is uniform over
    its tied positions) and the weighted median of the expected rank, from a full sort."""
    mrr, median = np.zeros(folds.shape[0]), np.zeros(folds.shape[0])
    for f in range(folds.shape[0]):
        uniq, counts = np.unique(folds[f], return_counts=True)
        scores = q[uniq] @ np.concatenate([t[uniq], d[draws[f]]]).T
        rr, ranks = [], []
        for i in range(len(uniq)):
            own = scores[i, i]
            g, tie = int((scores[i] > own).sum()), int((scores[i] == own).sum()) - 1
            positions = range(g + 1, g + tie + 2)
            rr.append(np.mean([1 / r if r <= cutoff else 0.0 for r in positions]))
            ranks.append(np.mean(list(positions)))
        mrr[f] = np.dot(counts, rr) / counts.sum()
        expanded = np.sort(np.repeat(ranks, counts))  # each query counted w times
        median[f] = expanded[(len(expanded) - 1) // 2]
    return mrr, median


@settings(max_examples=30, deadline=None)
@given(p=st.integers(2, 20), n=st.integers(1, 60), f=st.integers(1, 3), b=st.integers(1, 20),
       nd=st.integers(0, 150), cutoff=st.sampled_from([1, 3, 100]),
       seed=st.integers(0, 2**31 - 1))
def test_rank_metrics_match_brute_force_with_ties(p, n, f, b, nd, cutoff, seed):
    from condsim.benchmarks.lrvsf_core import rank_metrics_from_fold_counts

    rng = np.random.default_rng(seed)
    q, t = (rng.integers(-2, 3, (p, 2)).astype(np.float32) for _ in range(2))
    d = rng.integers(-2, 3, (n, 2)).astype(np.float32)
    folds, draws = rng.integers(0, p, (f, b)), rng.integers(0, n, (f, nd))
    fc = fold_rank_counts(q, t, d, folds, [draws], block_size=7)
    got = rank_metrics_from_fold_counts(fc, cutoff)
    mrr, median = _brute_rank_metrics(q, t, d, folds, draws, cutoff)
    np.testing.assert_allclose(got[f"mrr_at_{cutoff}"][:, 0], mrr, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["median_rank"][:, 0], median, rtol=0, atol=1e-12)


def test_reciprocal_rank_without_ties_and_far_down_the_list():
    from condsim.metrics.recall import reciprocal_rank_from_counts

    g = np.array([0, 4, 99, 100, 10**7, 10**7])
    t = np.array([0, 0, 0, 0, 0, 3])
    np.testing.assert_allclose(reciprocal_rank_from_counts(g, t, 100), [1, 0.2, 0.01, 0, 0, 0])
    want_far = np.mean([1 / (10**7 + i) for i in range(1, 5)])
    got = reciprocal_rank_from_counts(g, t)
    np.testing.assert_allclose(got[[0, 1, 4]], [1, 0.2, 1 / (10**7 + 1)], rtol=1e-15)
    np.testing.assert_allclose(got[5], want_far, rtol=1e-9)


def test_harmonic_differences_are_exact_to_float_precision():
    from fractions import Fraction

    from condsim.metrics.recall import _harmonic_difference

    rng = np.random.default_rng(0)
    pairs = [(5, 0), (1024, 1023), (1025, 1024), (65536, 65535), (70000, 10), (2**20, 2**20)]
    pairs += [(lo + int(rng.integers(0, 40)), lo) for lo in rng.integers(0, 300_000, 60)]
    hi, lo = (np.array(x) for x in zip(*pairs, strict=True))
    got = _harmonic_difference(hi, lo)
    for (h, low), value in zip(pairs, got, strict=True):
        want = float(sum(Fraction(1, r) for r in range(low + 1, h + 1)))
        assert value == pytest.approx(want, rel=1e-12, abs=0), (h, low)


def _brute_same_category(q, t, d, pcat, dcat, folds, draws, ks):
    """Per fold: gallery = the fold's unique targets of the query's category + its drawn
    distractors of that category; expected recall under random tie-breaking."""
    out = np.zeros((folds.shape[0], len(ks)))
    for f in range(folds.shape[0]):
        uniq, counts = np.unique(folds[f], return_counts=True)
        for i, p in enumerate(uniq):
            same_t = [u for u in uniq if pcat[u] == pcat[p]]
            same_d = [j for j in draws[f] if dcat[j] == pcat[p]]
            gallery = np.concatenate([t[same_t], d[same_d]]) if same_d else t[same_t]
            scores = gallery @ q[p]
            own = float(t[p] @ q[p])
            g, tie = int((scores > own).sum()), int((scores == own).sum()) - 1
            for j, k in enumerate(ks):
                out[f, j] += counts[i] * min(1.0, max(0.0, (k - g) / (tie + 1)))
        out[f] /= counts.sum()
    return out


@settings(max_examples=25, deadline=None)
@given(p=st.integers(2, 16), n=st.integers(1, 50), f=st.integers(1, 3), b=st.integers(1, 16),
       nd=st.integers(0, 80), seed=st.integers(0, 2**31 - 1))
def test_same_category_recall_matches_brute_force(p, n, f, b, nd, seed):
    from condsim.benchmarks.lrvsf import same_category_recalls

    rng = np.random.default_rng(seed)
    q, t = (rng.integers(-2, 3, (p, 3)).astype(np.float32) for _ in range(2))
    d = rng.integers(-2, 3, (n, 3)).astype(np.float32)
    cats = ["Bags", "Feet", "Head"]
    pcat = [cats[i] for i in rng.integers(0, 3, p)]
    dcat = [None if r == 3 else cats[r] for r in rng.integers(0, 4, n)]  # some unlabelled
    folds, draws = rng.integers(0, p, (f, b)), rng.integers(0, n, (f, nd))
    ks = [1, 2, 5]
    cfg = SimpleNamespace(ks=tuple(ks), block_size=7, device=None)
    got = same_category_recalls(q, t, d, pcat, dcat, folds, [draws], cfg)[:, 0, :]
    np.testing.assert_allclose(got, _brute_same_category(q, t, d, pcat, dcat, folds, draws, ks),
                               rtol=0, atol=1e-12)


def test_draws_of_a_count_do_not_depend_on_the_other_counts():
    """`--n-dists 10` and `--n-dists 1500,10` draw the same galleries for 10 (issue: draws
    depended on the order of the list); repeated counts are refused."""
    from condsim.benchmarks.lrvsf import draw_digests

    alone = seeded_draws(5, (10,), 4, 300).mult
    both = seeded_draws(5, (1500, 10), 4, 300).mult
    np.testing.assert_array_equal(alone, both[:, 4:])
    assert draw_digests(5, (10,), 4, 300)["10"] == draw_digests(5, (1500, 10), 4, 300)["10"]
    assert draw_digests(5, (10,), 4, 300) != draw_digests(6, (10,), 4, 300)
    filled: dict[str, str] = {}
    again = seeded_draws(5, (1500, 10), 4, 300, digests=filled).mult
    np.testing.assert_array_equal(again, both)
    assert filled == draw_digests(5, (1500, 10), 4, 300)
    with pytest.raises(CondsimError, match="repeat"):
        seeded_draws(5, (10, 10), 4, 300)


def test_windowed_draws_are_the_rows_of_the_full_matrix():
    """A rank keeps only its shard's multiplicity rows: windows [0, a), [a, b), [b, N) of the
    same seeded draws are the full matrix's row slices (dtype widened alike when a count
    exceeds 255); a window outside the items is refused."""
    from condsim.search.exact import draw_multiplicities

    full = seeded_draws(4, (50, 2000), 3, 700).mult
    parts = [seeded_draws(4, (50, 2000), 3, 700, window=w).mult
             for w in ((0, 123), (123, 123), (123, 700))]
    assert [p.shape for p in parts] == [(123, 6), (0, 6), (577, 6)]
    assert np.array_equal(np.concatenate(parts), full)
    rows = [np.zeros(300, np.int64), np.arange(10)]  # item 0 drawn 300 times: uint16
    wide = draw_multiplicities(rows, 10, window=(0, 4))
    assert wide.dtype == np.uint16 and wide[:, 0].tolist() == [300, 0, 0, 0]
    assert np.array_equal(wide, draw_multiplicities(rows, 10)[:4])
    with pytest.raises(CondsimError, match="window"):
        draw_multiplicities(rows, 10, window=(5, 11))


def test_rows_never_drawn_are_not_read_and_counts_unchanged():
    """A distractor drawn in no fold adds nothing to any count, so its row is not read (at
    1B distractors and 1M draws per fold, ~97% of the rows): counts equal those of the dense
    pass; a NaN in an undrawn row changes nothing, in a drawn row it is named by its row."""
    rng = np.random.default_rng(3)
    q, t = rng.standard_normal((12, 8), np.float32), rng.standard_normal((12, 8), np.float32)
    d = rng.standard_normal((400, 8), np.float32)
    folds = rng.integers(0, 12, (3, 6))
    draws = [rng.choice(np.arange(100, 180), (3, 30))]  # rows 100..179 only

    class Recording:
        def __init__(self, arr):
            self.arr, self.shape, self.read = arr, arr.shape, []

        def __getitem__(self, item):
            rows = np.arange(self.shape[0])[item]
            self.read += rows.tolist()
            return self.arr[item]

    rec = Recording(d)
    got = fold_rank_counts(q, t, rec, folds, draws, block_size=64, screen="fp32")
    dense = fold_rank_counts(q, t, d, folds, draws, block_size=1024, screen="fp32")
    np.testing.assert_array_equal(got.greater, dense.greater)
    np.testing.assert_array_equal(got.ties, dense.ties)
    assert set(rec.read) == set(np.unique(draws[0]).tolist())
    bad = d.copy()
    bad[5] = np.nan  # never drawn
    again = fold_rank_counts(q, t, bad, folds, draws, block_size=64, screen="fp32")
    np.testing.assert_array_equal(again.greater, dense.greater)
    bad[int(draws[0][1, 2])] = np.nan
    with pytest.raises(CondsimError, match=rf"rows \[{int(draws[0][1, 2])}\]"):
        fold_rank_counts(q, t, bad, folds, draws, block_size=64, screen="fp32")
