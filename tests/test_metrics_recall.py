import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from condsim.errors import CondsimError
from condsim.metrics import bootstrap_ci, expected_recall_at_k, paired_bootstrap


def test_constant_scores_give_exactly_chance():
    scores = np.zeros((7, 15))
    target = np.arange(7) % 15
    rec = expected_recall_at_k(scores, target, [1, 2, 3, 15, 20])
    assert np.allclose(rec, [[1 / 15, 2 / 15, 3 / 15, 1.0, 1.0]] * 7)


def test_oracle_gets_one():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(20, 15))
    target = rng.integers(0, 15, 20)
    scores[np.arange(20), target] = 10.0
    assert np.all(expected_recall_at_k(scores, target, [1]) == 1.0)


def test_hand_computed_ties():
    # target score 0.5: one above (0.9), two tied others
    scores = np.array([[0.5, 0.9, 0.5, 0.5, 0.1]])
    rec = expected_recall_at_k(scores, np.array([0]), [1, 2, 3, 4, 5])
    assert np.allclose(rec, [[0, 1 / 3, 2 / 3, 1, 1]])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 12), st.integers(0, 2**31 - 1))
def test_gallery_order_does_not_matter_and_matches_monte_carlo(q, g, seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 3, size=(q, g)).astype(float)
    target = rng.integers(0, g, q)
    ks = [1, 2, 5]
    rec = expected_recall_at_k(scores, target, ks)
    perm = rng.permutation(g)
    inv = np.argsort(perm)
    rec2 = expected_recall_at_k(scores[:, perm], inv[target], ks)
    assert np.allclose(rec, rec2)
    # exact enumeration of random tie-breaking via many random permutations of tied items
    hits = np.zeros_like(rec)
    trials = 400
    for _ in range(trials):
        noise = rng.random((q, g)) * 1e-6
        order = np.argsort(-(scores + noise), axis=1, kind="stable")
        rank = np.argmax(order == target[:, None], axis=1) + 1
        hits += rank[:, None] <= np.array(ks)[None]
    assert np.allclose(hits / trials, rec, atol=0.12)


def test_bad_inputs():
    with pytest.raises(CondsimError, match="empty gallery"):
        expected_recall_at_k(np.zeros((2, 0)), np.zeros(2, int), [1])
    with pytest.raises(CondsimError, match="NaN"):
        expected_recall_at_k(np.array([[np.nan, 1.0]]), np.array([0]), [1])
    with pytest.raises(CondsimError, match="shape"):
        expected_recall_at_k(np.zeros((2, 3)), np.zeros(3, int), [1])
    with pytest.raises(CondsimError, match="out of range"):
        expected_recall_at_k(np.zeros((2, 3)), np.array([0, 3]), [1])


def test_bootstrap_seeded_and_paired_detects_difference():
    rng = np.random.default_rng(1)
    a = rng.random(500) < 0.3
    b = a | (rng.random(500) < 0.2)
    ci1 = bootstrap_ci(a, seed=3)
    ci2 = bootstrap_ci(a, seed=3)
    assert ci1 == ci2 and ci1.low < ci1.mean < ci1.high
    test = paired_bootstrap(a, b, seed=0)
    assert test.diff > 0 and test.low > 0 and test.p_value < 0.01
    same = paired_bootstrap(a, a.copy(), seed=0)
    assert same.diff == 0 and same.p_value == 1.0
