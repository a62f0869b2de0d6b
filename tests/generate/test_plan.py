import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gammaface.generate.plan import counts_from_weights, make_plan, tempered


def test_equal_weights_give_equal_counts_and_the_remainder_to_the_first_components():
    assert counts_from_weights(np.ones(4), 100).tolist() == [25, 25, 25, 25]
    assert counts_from_weights(np.ones(4), 10).tolist() == [3, 3, 2, 2]


def test_counts_follow_the_weights_by_largest_remainder():
    assert counts_from_weights(np.array([0.5, 0.3, 0.2]), 7).tolist() == [4, 2, 1]
    assert counts_from_weights(np.array([0.0, 1.0]), 5).tolist() == [0, 5]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 10.0), min_size=1, max_size=12), st.integers(0, 10_000))
def test_counts_sum_to_n_and_stay_within_one_of_the_exact_share(w, n):
    w = np.array(w)
    if w.sum() <= 0:
        w[0] = 1.0
    counts = counts_from_weights(w, n)
    assert counts.sum() == n and (counts >= 0).all()
    assert np.all(np.abs(counts - n * w / w.sum()) < 1.0)


def test_bad_weights_are_refused():
    with pytest.raises(ValueError, match="non-negative"):
        counts_from_weights(np.array([1.0, -0.1]), 3)
    with pytest.raises(ValueError, match="positive sum"):
        counts_from_weights(np.zeros(3), 3)


def test_tempering_interpolates_between_equal_and_the_mixture_weights():
    pi = np.array([0.7, 0.2, 0.1])
    np.testing.assert_allclose(tempered(pi, 1.0), pi)
    np.testing.assert_allclose(tempered(pi, 0.0), np.full(3, 1 / 3))
    half = tempered(pi, 0.5)
    assert pi[2] < half[2] < 1 / 3  # a rare component gains, but less than under equal weights


def test_plan_cuts_each_component_into_its_own_shards_with_fixed_seeds():
    plan = make_plan("gmm", 0, np.array([5, 0, 3]), [0, 1, 2], shard_size=2, seed=9)
    assert [(s.component, s.count) for s in plan] == [(0, 2), (0, 2), (0, 1), (2, 2), (2, 1)]
    assert [s.shard for s in plan] == list(range(5))
    assert len({s.seed for s in plan}) == 5
    again = make_plan("gmm", 0, np.array([5, 0, 3]), [0, 1, 2], shard_size=2, seed=9)
    assert again == plan
    other_method = make_plan("gmm_weighted", 1, np.array([5, 0, 3]), [0, 1, 2], 2, 9)
    assert {s.seed for s in other_method}.isdisjoint({s.seed for s in plan})
