import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.ndimage import gaussian_filter1d
from sklearn.metrics import recall_score

from gammaface.metrics import fairness as F

NAN = float("nan")


def _random(n=400, seed=0, classes=2, groups=2, acc=0.8):
    rng = np.random.default_rng(seed)
    yt = rng.integers(0, classes, n)
    yp = np.where(rng.random(n) < acc, yt, rng.integers(0, classes, n))
    g = rng.integers(0, groups, n)
    return yt, yp, g


# --- closed forms ---------------------------------------------------------------------------------

def test_two_groups_bias_equals_deo():
    for seed in range(5):
        yt, yp, g = _random(seed=seed)
        assert F.bias(yt, yp, g) == pytest.approx(F.deo(yt, yp, g))


def test_perfect_predictions_have_no_bias_and_no_amplification():
    yt, _, g = _random(groups=4)
    assert F.bias(yt, yt, g) == 0
    assert F.ba_a_to_t(yt, yt, g) == 0
    assert F.deo(yt, yt, g % 2) == 0
    assert F.tpr(yt, yt) == 1


def test_predictions_equal_to_the_group_give_bias_one():
    yt, _, g = _random()
    assert F.bias(yt, g, g) == 1.0


def test_bias_by_hand_three_groups():
    # group 0: TPR 1 (n=4), group 1: TPR 0.5 (n=2), group 2: TPR 0 (n=2)
    yt = np.array([1, 1, 0, 0, 1, 1, 1, 0])
    yp = np.array([1, 1, 0, 1, 1, 0, 0, 0])
    g = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    w = np.array([4, 2, 2]) / 8
    t = np.array([1.0, 0.5, 0.0])
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = sum(abs(t[i] - t[j]) * w[i] * w[j] for i, j in pairs) / sum(w[i] * w[j] for i, j in pairs)
    assert F.bias(yt, yp, g) == pytest.approx(expected)


def test_group_without_positives_is_dropped_from_bias_but_recalls_zero_in_deo():
    yt = np.array([1, 1, 0, 0, 0, 0])
    yp = np.array([1, 0, 0, 1, 0, 1])
    g = np.array([0, 0, 0, 1, 1, 1])  # group 1 has no positives
    assert math.isnan(F.bias(yt, yp, g))  # only one usable subgroup remains
    assert F.deo(yt, yp, g) == pytest.approx(0.5)  # |0.5 - 0|
    g3 = np.array([0, 0, 2, 1, 1, 2])
    yt3 = np.array([1, 1, 1, 0, 0, 1])
    yp3 = np.array([1, 0, 1, 1, 0, 0])
    # group 1 dropped: bias over groups 0 and 2 only
    assert F.bias(yt3, yp3, g3) == pytest.approx(abs(0.5 - 0.5))


def test_fewer_than_two_subgroups_is_nan():
    yt, yp, _ = _random()
    assert math.isnan(F.bias(yt, yp, np.zeros_like(yt)))
    assert math.isnan(F.tpr(np.zeros(5, int), np.ones(5, int)))


def test_macro_tpr_and_classwise_bias_by_hand():
    yt = np.array([0, 0, 1, 1, 2, 2])
    yp = np.array([0, 1, 1, 1, 2, 0])
    assert F.tpr(yt, yp, average="macro") == pytest.approx((0.5 + 1 + 0.5) / 3)
    g = np.array([0, 1, 0, 1, 0, 1])
    per_class = [F.bias((yt == c).astype(int), (yp == c).astype(int), g) for c in range(3)]
    assert F.bias_classwise(yt, yp, g) == pytest.approx(np.mean(per_class))


def test_bpc():
    assert F.bpc(0.2, 0.2, 0.8, 0.8) == 0
    assert F.bpc(0.2, 0.1, 0.8, 0.7) == pytest.approx(0.5 - 0.125)
    assert math.isnan(F.bpc(0.0, 0.1, 0.8, 0.7))
    assert math.isnan(F.bpc(0.2, 0.1, 0.0, 0.7))
    assert math.isnan(F.bpc(NAN, 0.1, 0.8, 0.7))


def test_calibrated_threshold():
    scores = np.array([0.9, 0.1, 0.8, 0.3, 0.7])
    yt = np.array([1, 0, 1, 0, 0])
    thr = F.calibrated_threshold(yt, scores)
    assert thr == 0.8
    assert ((scores > thr).sum()) == 1  # strict: the k-th score itself is not predicted positive
    assert F.calibrated_threshold(np.zeros(5, int), scores) == 0.1


# --- against fairlearn / scikit-learn ------------------------------------------------------------

@pytest.mark.parametrize("seed", range(3))
def test_group_tpr_matches_fairlearn_metricframe(seed):
    from fairlearn.metrics import MetricFrame

    yt, yp, g = _random(n=600, seed=seed, groups=4)
    frame = MetricFrame(metrics=recall_score, y_true=yt, y_pred=yp, sensitive_features=g)
    ours = F.group_tpr(yt, yp, g)
    for group, value in frame.by_group.items():
        assert ours[int(group)] == pytest.approx(value)
    assert F.tpr(yt, yp) == pytest.approx(recall_score(yt, yp))


def test_macro_tpr_matches_sklearn():
    yt, yp, _ = _random(n=500, classes=4)
    assert F.tpr(yt, yp, average="macro") == pytest.approx(recall_score(yt, yp, average="macro"))


# --- BA against a direct reading of the definition ---------------------------------------------

def _ba_by_definition(T, A, P, Ttr=None, Atr=None):
    Ttr = T if Ttr is None else Ttr
    Atr = A if Atr is None else Atr
    keep = (Ttr.sum(1) > 0) | (Atr.sum(1) > 0)
    Tk, Ak = Ttr[keep], Atr[keep]
    vals = []
    for a, t in itertools.product(range(A.shape[1]), range(T.shape[1])):
        p_at = np.mean(Ak[:, a] * Tk[:, t])
        y = np.sign(round(p_at - Ak[:, a].mean() * Tk[:, t].mean(), 12))
        rows = A[:, a] == 1
        if not rows.any():
            continue
        delta = P[rows, t].mean() - T[rows, t].mean()
        vals.append(y * delta)
    return np.mean(vals) if vals else NAN


@pytest.mark.parametrize("seed", range(6))
def test_multilabel_ba_matches_definition(seed):
    rng = np.random.default_rng(seed)
    n = 200
    T = (rng.random((n, 3)) < 0.3).astype(int)
    A = (rng.random((n, 2)) < 0.4).astype(int)
    A[:, 1] |= T[:, 0] & (rng.random(n) < 0.5)  # a correlation to amplify
    P = np.where(rng.random((n, 3)) < 0.8, T, 1 - T)
    assert F.ba_a_to_t_multilabel(T, A, P) == pytest.approx(_ba_by_definition(T, A, P))
    Ttr = (rng.random((n, 3)) < 0.3).astype(int)
    Atr = (rng.random((n, 2)) < 0.4).astype(int)
    assert F.ba_a_to_t_multilabel(T, A, P, Ttr, Atr) == pytest.approx(
        _ba_by_definition(T, A, P, Ttr, Atr))


def test_ba_attribute_never_present_is_skipped():
    T = np.array([[1, 0], [0, 1], [1, 0]])
    A = np.array([[1, 0], [1, 0], [0, 0]])
    P = np.array([[1, 0], [1, 0], [1, 0]])
    assert F.ba_a_to_t_multilabel(T, A, P) == pytest.approx(_ba_by_definition(T, A, P))


def test_ba_amplification_sign():
    # group 1 is mostly class 1 in the labels; a model that predicts the group amplifies it
    g = np.array([0] * 50 + [1] * 50)
    yt = np.array([0] * 40 + [1] * 10 + [1] * 40 + [0] * 10)
    assert F.ba_a_to_t(yt, g, g) > 0
    assert F.ba_a_to_t(yt, 1 - g, g) < 0


def _one_hot(x, values):
    return (np.asarray(x)[:, None] == np.asarray(values)[None, :]).astype(int)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 3)),
                min_size=1, max_size=60))
def test_single_label_ba_equals_multilabel_form_and_lies_in_unit_interval(rows):
    yt, yp, g = (np.array(c) for c in zip(*rows))
    classes = np.union1d(yt, yp)
    ba = F.ba_a_to_t(yt, yp, g)
    ml = F.ba_a_to_t_multilabel(_one_hot(yt, classes), _one_hot(g, np.unique(g)),
                                _one_hot(yp, classes))
    assert ba == pytest.approx(ml, nan_ok=True)
    assert -1 <= ba <= 1


# --- invariances --------------------------------------------------------------------------------

label_rows = st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1), st.integers(0, 3),
                                st.floats(0, 1)), min_size=2, max_size=80)


@settings(max_examples=80, deadline=None)
@given(label_rows, st.permutations(range(4)))
def test_bias_invariant_to_permuting_group_labels(rows, perm):
    yt, yp, g, _ = (np.array(c) for c in zip(*rows))
    g2 = np.array(perm)[g]
    assert F.bias(yt, yp, g2) == pytest.approx(F.bias(yt, yp, g), nan_ok=True)
    assert F.ba_a_to_t(yt, yp, g2) == pytest.approx(F.ba_a_to_t(yt, yp, g), nan_ok=True)


@settings(max_examples=80, deadline=None)
@given(label_rows)
def test_duplicating_every_sample_leaves_point_metrics_unchanged(rows):
    yt, yp, g, s = (np.array(c) for c in zip(*rows))
    g2 = g % 2
    twice = [np.concatenate([x, x]) for x in (yt, yp, g, s)]
    yt2, yp2, gg2, s2 = twice
    same = lambda a, b: a == pytest.approx(b, nan_ok=True)  # noqa: E731
    assert same(F.tpr(yt2, yp2), F.tpr(yt, yp))
    assert same(F.bias(yt2, yp2, gg2), F.bias(yt, yp, g))
    assert same(F.bias(yt2, yp2, gg2, average="macro"), F.bias(yt, yp, g, average="macro"))
    assert same(F.bias_classwise(yt2, yp2, gg2), F.bias_classwise(yt, yp, g))
    assert same(F.ba_a_to_t(yt2, yp2, gg2), F.ba_a_to_t(yt, yp, g))
    assert same(F.deo(yt2, yp2, gg2 % 2), F.deo(yt, yp, g2))
    assert same(F.kl_sym_fixed_range(s2, yt2, gg2 % 2, 1), F.kl_sym_fixed_range(s, yt, g2, 1))


# --- KL ----------------------------------------------------------------------------------------

def _hist_by_hand(x):
    counts, _ = np.histogram(x, bins=50)
    sm = np.trunc(gaussian_filter1d(counts.astype(float), 1.0, mode="reflect", truncate=4.0))
    return sm / sm.sum() + 1e-6


def test_reference_histogram_truncates_smoothed_counts():
    rng = np.random.default_rng(0)
    x0, x1 = rng.beta(2, 5, 300), rng.beta(3, 3, 200)
    yt = np.ones(500, int)
    g = np.r_[np.zeros(300, int), np.ones(200, int)]
    p, q = _hist_by_hand(x0), _hist_by_hand(x1)
    expected = [np.sum(p * np.log(p / q)), np.sum(q * np.log(q / p))]
    assert F.kl_directional(np.r_[x0, x1], yt, g, target_class=1) == pytest.approx(expected)
    # without truncation the value differs, so the quirk is really in effect
    counts, _ = np.histogram(x0, bins=50)
    smooth = gaussian_filter1d(counts.astype(float), 1.0)
    assert not np.allclose(smooth, np.trunc(smooth))


def test_reference_uses_each_arrays_own_range_so_a_shift_is_nearly_invisible():
    rng = np.random.default_rng(1)
    base = rng.beta(4, 4, 2000) * 0.5
    scores = np.r_[base, base + 0.4]  # group 1 = the same shape moved right
    yt = np.ones(4000, int)
    g = np.r_[np.zeros(2000, int), np.ones(2000, int)]
    ref = F.kl_sym(scores, yt, g, target_class=1)
    fixed = F.kl_sym_fixed_range(scores, yt, g, target_class=1)
    assert ref < 0.01
    assert fixed > 1.0


def test_kl_nan_for_all_zero_smoothed_histogram():
    # one sample: its single count smooths to at most 0.4 per bin and truncates to zero
    scores = np.array([0.2, 0.3, 0.4, 0.5, 0.9])
    yt = np.array([1, 1, 1, 1, 1])
    g = np.array([0, 0, 0, 0, 1])
    assert all(math.isnan(x) for x in F.kl_directional(scores, yt, g, 1))
    # an empty group is NaN too, and the float-smoothed variant survives a single sample
    assert math.isnan(F.kl_sym(scores, yt, np.zeros(5, int), 1))
    assert not math.isnan(F.kl_sym_fixed_range(scores, yt, g, 1))


def test_kl_ref_is_median_of_four_and_sym_is_sum():
    rng = np.random.default_rng(2)
    n = 800
    yt, g, s = rng.integers(0, 2, n), rng.integers(0, 2, n), rng.random(n)
    four = F.kl_directional(s, yt, g, 1) + F.kl_directional(s, yt, g, 0)
    assert F.kl_ref(s, yt, g) == pytest.approx(np.median(four))
    assert F.kl_sym(s, yt, g, 1) == pytest.approx(sum(four[:2]))


# --- bootstraps against a plain loop --------------------------------------------------------------

def _reference_resamples(n, seed, repeat):
    """METRICS.md's resampling, from its definition: one RandomState seeded once, n indices in
    [0, n) per repetition, in order (drawn here as one (repeat, n) block)."""
    return np.random.RandomState(seed).randint(0, n, size=(repeat, n))


def test_generic_bootstrap_resamples_as_the_definition_says():
    yt, yp, g = _random(n=200, seed=1)
    idx = _reference_resamples(200, 3, 50)
    # a metric with a closed form per resample: the share of positive predictions
    shares = yp[idx].mean(axis=1)
    assert F.bootstrap(lambda a: float(np.mean(a)), (yp,), seed=3, repeat=50) == pytest.approx(
        [np.median(shares), np.std(shares)])
    # a metric that returns a list pools its values over the repetitions
    pooled = np.concatenate([yp[idx].mean(axis=1), yt[idx].mean(axis=1)])
    both = F.bootstrap(lambda a, b: [float(np.mean(a)), float(np.mean(b))], (yp, yt), seed=3,
                       repeat=50)
    assert both == pytest.approx([np.median(pooled), np.std(pooled)])
    biases = [F.bias(yt[i], yp[i], g[i]) for i in idx]
    assert F.bootstrap(F.bias, (yt, yp, g), seed=3, repeat=50) == pytest.approx(
        [np.median(biases), np.std(biases)])


def test_bootstraps_match_a_plain_loop():
    yt, yp, g = _random(n=300, seed=4, groups=3)
    s = np.random.default_rng(4).random(300)
    g2 = g % 2
    assert F.ba_bootstrap(yt, yp, g, seed=7, repeat=150) == pytest.approx(
        F.bootstrap(F.ba_a_to_t, (yt, yp, g), 7, 150))
    assert F.deo_bootstrap(yt, yp, g2, seed=7, repeat=150) == pytest.approx(
        F.bootstrap(F.deo, (yt, yp, g2), 7, 150))

    def four(s_, yt_, g_):
        return F.kl_directional(s_, yt_, g_, 1) + F.kl_directional(s_, yt_, g_, 0)

    assert F.kl_bootstrap(s, yt, g2, seed=7, repeat=40) == pytest.approx(
        F.bootstrap(four, (s, yt, g2), 7, 40))


# --- malformed input ------------------------------------------------------------------------------

@pytest.mark.parametrize("call, fragment", [
    (lambda: F.bias([1, 0, 1], [1, 0], [0, 1, 0]), "same length"),
    (lambda: F.tpr([1.5, 0.0], [1, 0]), "integer labels"),
    (lambda: F.bias([1, 0], [1, 0], [0.0, np.nan]), "NaN"),
    (lambda: F.kl_sym([0.2, 1.2], [1, 1], [0, 1], 1), r"\[0, 1\]"),
    (lambda: F.tpr(["a", "b"], [1, 0]), "integer labels"),
    (lambda: F.deo([1, 0, 1], [1, 0, 1], [0, 1, 2]), "binary"),
    (lambda: F.tpr([1, 0], [1, 0], average="micro"), "average"),
    (lambda: F.ba_a_to_t_multilabel([[1, 0]], [[1]], [[1, 0, 1]]), "shape"),
])
def test_malformed_input_raises_value_error(call, fragment):
    with pytest.raises(ValueError, match=fragment):
        call()


def test_integral_floats_and_booleans_are_accepted():
    assert F.tpr(np.array([1.0, 0.0, 1.0]), np.array([True, False, False])) == 0.5
