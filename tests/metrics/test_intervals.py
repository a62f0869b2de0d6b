import numpy as np
import pytest
from scipy import stats

from gammaface.metrics.intervals import paired_bootstrap, seeds_for_half_width, t_interval


@pytest.mark.parametrize("values", [[0.1, -0.02, 0.05], [0.3, 0.31, 0.29, 0.35, 0.2, 0.1],
                                    list(np.linspace(-1, 2, 17))])
def test_the_t_interval_is_scipys(values):
    iv = t_interval(values)
    x = np.asarray(values)
    low, high = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert (iv.mean, iv.low, iv.high, iv.n, iv.kind) == (pytest.approx(x.mean()),
                                                           pytest.approx(low), pytest.approx(high),
                                                           len(x), "t")


def test_the_t_interval_needs_two_values_and_drops_nans():
    one = t_interval([0.2, np.nan])
    assert one.mean == 0.2 and np.isnan(one.low) and np.isnan(one.high) and one.kind == "none"
    assert not one.below() and not one.above()
    assert t_interval([np.nan]).n == 0
    assert t_interval([1.0, 2.0, np.nan]).n == 2


def test_the_bootstrap_interval_covers_a_known_mean_about_95_times_in_100():
    rng = np.random.default_rng(0)
    truth, hits, trials = 1.0, 0, 300
    for i in range(trials):
        x = rng.exponential(truth, 150)  # skewed: the percentile interval still holds
        iv = paired_bootstrap(lambda rows: float(x[rows].mean()), len(x), seed=i, repeat=400)
        hits += iv.low <= truth <= iv.high
    assert 0.90 <= hits / trials <= 0.985


def test_the_bootstrap_keeps_the_pairing_of_two_prediction_sets():
    # two classifiers whose accuracies differ by exactly one image in 200: a paired resample
    # never gives the other sign, an unpaired one would
    correct_a = np.ones(200, bool)
    correct_b = correct_a.copy()
    correct_b[0] = False
    iv = paired_bootstrap(lambda rows: correct_a[rows].mean() - correct_b[rows].mean(), 200, 0)
    assert iv.low >= 0 and iv.high <= 0.03 and iv.kind == "bootstrap"


def test_seeds_for_a_half_width_is_the_first_n_whose_t_interval_is_narrow_enough():
    for std, half in ((0.03, 0.02), (0.08, 0.02), (0.01, 0.02)):
        n = seeds_for_half_width(std, half)
        width = lambda k: stats.t.ppf(0.975, k - 1) * std / np.sqrt(k)  # noqa: E731
        assert width(n) <= half and (n == 2 or width(n - 1) > half)
