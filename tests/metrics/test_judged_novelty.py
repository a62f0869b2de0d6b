"""Judge-measured balance (hard, soft, corrected through a confusion matrix) and novelty
(nearest-neighbour distances, near copies, precision and recall), against closed forms and
brute-force references (scipy, scikit-learn)."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.neighbors import NearestNeighbors

from gammaface.metrics import judged, novelty


def _judge(true, conf, rng):
    """Labels a judge with confusion matrix `conf` gives to images of known cells."""
    return np.array([rng.choice(len(conf), p=conf[t]) for t in true])


def test_the_corrected_distribution_inverts_a_known_confusion_exactly():
    conf = np.array([[0.8, 0.15, 0.05], [0.1, 0.85, 0.05], [0.2, 0.1, 0.7]])
    p = np.array([0.5, 0.3, 0.2])
    np.testing.assert_allclose(judged.corrected(conf.T @ p, conf), p, atol=1e-6)


def test_the_correction_recovers_a_known_distribution_from_counted_labels():
    rng = np.random.default_rng(0)
    # a judge that takes many of cells 2 and 3 for cell 0
    conf = np.array([[0.9, 0.05, 0.05, 0.0], [0.05, 0.85, 0.05, 0.05],
                     [0.3, 0.0, 0.65, 0.05], [0.35, 0.05, 0.0, 0.6]])
    uniform = np.full(4, 0.25)
    held_true = rng.integers(0, 4, 8000)
    held_judged = _judge(held_true, conf, rng)
    gen_true = rng.choice(4, 6000, p=uniform)
    gen_judged = _judge(gen_true, conf, rng)
    probs = np.eye(4)[gen_judged]
    out = judged.judged_balance(gen_judged, probs, held_true, held_judged, 4, seed=0, repeat=50)
    # the judge's errors make a uniform set look skewed; the correction sees it uniform again
    assert out["hard"] > 0.05
    assert out["corrected"] < 0.03
    lo, hi = out["corrected_ci"]
    assert lo <= out["corrected"] <= hi
    np.testing.assert_allclose(judged.confusion(held_true, held_judged, 4), conf, atol=0.03)
    assert out["soft"] == pytest.approx(out["hard"])  # one-hot probabilities: soft is hard


def test_cell_probabilities_follow_the_mixed_radix_order_of_the_cells():
    rng = np.random.default_rng(1)
    a, b = rng.dirichlet(np.ones(2), 5), rng.dirichlet(np.ones(3), 5)
    p = judged.cell_probabilities([a, b])
    assert p.shape == (5, 6)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p[:, 1 * 3 + 2], a[:, 1] * b[:, 2])


def test_nearest_distances_match_a_brute_force_reference():
    rng = np.random.default_rng(2)
    q, r = rng.normal(size=(300, 17)), rng.normal(size=(500, 17))
    np.testing.assert_allclose(novelty.nearest_distances(q, r), cdist(q, r).min(axis=1), rtol=1e-6)


def test_kth_neighbour_radii_and_precision_recall_match_scikit_learn():
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(400, 5)), rng.normal(0.7, 1.3, size=(350, 5))
    nn = NearestNeighbors(n_neighbors=4).fit(real)
    dist, _ = nn.kneighbors(real)  # the first neighbour is the row itself
    np.testing.assert_allclose(novelty.kth_neighbour_radii(real, 3), dist[:, 3], rtol=1e-6)
    p, r = novelty.precision_recall(real, fake, 3)
    radii_real = dist[:, 3]
    d = cdist(fake, real)
    assert p == pytest.approx(float((d <= radii_real[None, :]).any(axis=1).mean()))
    radii_fake = NearestNeighbors(n_neighbors=4).fit(fake).kneighbors(fake)[0][:, 3]
    assert r == pytest.approx(float((cdist(real, fake) <= radii_fake[None, :]).any(axis=1).mean()))


def test_copies_of_training_images_are_counted_as_near_copies():
    rng = np.random.default_rng(4)
    train, held = rng.normal(size=(600, 8)), rng.normal(size=(200, 8))
    copies = train[:100] + rng.normal(0, 1e-3, size=(100, 8))
    fresh = rng.normal(size=(100, 8))
    assert novelty.novelty(copies, train, held)["near_copy_share"] == 1.0
    out = novelty.novelty(fresh, train, held)
    assert out["near_copy_share"] < 0.1
    assert out["near_copy_share_held_out"] == pytest.approx(0.01, abs=0.006)


def test_the_floor_of_a_perfect_judge_is_the_sampling_noise_of_nothing():
    # a perfect judge sees an exactly balanced set exactly: floor 0
    out = judged.balanced_floor(1200, np.eye(12), seed=0, repeat=20)
    assert out["floor_hard"] == 0.0 and out["floor_corrected"] == pytest.approx(0.0, abs=1e-9)
    # a noisy judge puts a floor above 0, and more images lower it
    noisy = 0.8 * np.eye(12) + 0.2 / 12
    small = judged.balanced_floor(300, noisy, seed=0, repeat=50)
    big = judged.balanced_floor(30_000, noisy, seed=0, repeat=50)
    assert small["floor_hard"] > big["floor_hard"] > 0
    assert small["floor_corrected"] <= small["floor_corrected_hi"]


def test_the_interval_of_an_exactly_balanced_set_holds_its_zero():
    cells = np.repeat(np.arange(6), 50)
    out = judged.judged_balance(cells, np.eye(6)[cells], np.arange(6), np.arange(6), 6, seed=0,
                                repeat=100)
    assert out["hard"] == 0.0
    assert out["hard_ci"][0] == 0.0 < out["hard_ci"][1] < 0.1
