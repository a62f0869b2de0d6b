import math

import numpy as np
import pytest

from gammaface.metrics.generation import (fairness_discrepancy, fairness_discrepancy_bootstrap,
                                          intersection_codes)


def test_balanced_set_is_zero():
    assert fairness_discrepancy([0, 1, 2, 0, 1, 2], 3) == 0


def test_one_class_only_closed_form():
    c = 4
    expected = math.sqrt((1 - 1 / c) ** 2 + (c - 1) / c ** 2)
    assert fairness_discrepancy([2, 2, 2], c) == pytest.approx(expected)


def test_absent_classes_count_as_zero():
    # only classes 0 and 1 present out of 3: p = (0.5, 0.5, 0)
    expected = math.sqrt(2 * (0.5 - 1 / 3) ** 2 + (1 / 3) ** 2)
    assert fairness_discrepancy([0, 1], 3) == pytest.approx(expected)
    assert fairness_discrepancy([0, 1], 2) == 0


def test_intersection_codes_and_discrepancy():
    codes, cells = intersection_codes({"age": [0, 1, 0, 1], "gender": [0, 0, 1, 1]},
                                      {"age": 2, "gender": 2})
    assert cells == 4 and sorted(codes) == [0, 1, 2, 3]
    assert fairness_discrepancy(codes, cells) == 0


def test_bad_labels_raise():
    with pytest.raises(ValueError, match="0..1"):
        fairness_discrepancy([0, 2], 2)
    with pytest.raises(ValueError, match="positive integer"):
        fairness_discrepancy([0], 0)


def test_bootstrap_matches_loop_and_is_centred():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    med, std = fairness_discrepancy_bootstrap(y, 3, seed=5, repeat=200)
    rs = np.random.RandomState(5)
    vals = [fairness_discrepancy(y[rs.randint(0, 400, 400)], 3) for _ in range(200)]
    assert (med, std) == pytest.approx((np.median(vals), np.std(vals)))
