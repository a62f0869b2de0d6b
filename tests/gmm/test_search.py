import numpy as np
import pandas as pd
import pytest

from gammaface.gmm.components import composition, nmi
from gammaface.gmm.search import bic_search
from tests.gmm.test_mixture import _mixture_data


def _match_means(found, truth):
    """Largest per-dimension RMS distance between a true mean and its nearest found mean."""
    d = truth.shape[1]
    return max(np.min(np.linalg.norm(found - m, axis=1)) / np.sqrt(d) for m in truth)


def test_search_picks_four_and_recovers_the_means(ray_local):
    X, _, truth = _mixture_data(n=2000, d=300, k=4, seed=4)
    result = bic_search(X.astype(np.float32), range(1, 8), {"random_state": 0, "backend": "torch"})
    assert result.chosen_k == 4
    assert list(result.table["k"]) == list(range(1, 8))
    assert _match_means(result.mixtures[4].means_, truth) < 0.15  # components are 3 apart
    assert result.table["bic"].idxmin() == 3


def test_torch_and_sklearn_backends_choose_the_same_k():
    X, _, _ = _mixture_data(n=800, d=40, k=3, seed=6)
    ours = bic_search(X, range(1, 6), {"random_state": 0, "backend": "torch"}, use_ray=False)
    ref = bic_search(X, range(1, 6), {"random_state": 0, "backend": "sklearn"}, use_ray=False)
    assert ours.chosen_k == ref.chosen_k == 3
    np.testing.assert_allclose(ours.table["bic"], ref.table["bic"], rtol=1e-3)


def test_nmi_is_one_for_an_attribute_and_near_zero_for_noise():
    rng = np.random.default_rng(0)
    comp = rng.integers(0, 3, 3000)
    names = np.array(["white", "black", "other"])
    assert nmi(comp, pd.Series(names[comp])) == pytest.approx(1.0)
    assert nmi(comp, pd.Series(names[rng.integers(0, 3, 3000)])) < 0.01
    with_nulls = pd.Series(np.where(rng.random(3000) < 0.3, None, names[comp]))
    assert nmi(comp, with_nulls) == pytest.approx(1.0)


def test_composition_shares():
    comp = np.array([0, 0, 1, 1, 1])
    labels = pd.DataFrame({"gender": ["female", "male", "male", "male", None]})
    table = composition(comp, labels, np.array([0.4, 0.6]))
    assert list(table["count"]) == [2, 3]
    assert table.loc[0, "gender=female"] == 0.5
    assert table.loc[1, "gender=male"] == 1.0


def test_the_search_is_sklearns_search_k_by_k():
    # what benchmarks/gmm_bic.py times at full size: k-means++ from the same seed, then EM;
    # every K stops at scikit-learn's iteration with its BIC, so the chosen K is the same
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    from tests.gmm.test_mixture import _latent_like

    X = _latent_like(3000, 768, seed=1)
    ours = bic_search(X, range(1, 8), {"random_state": 0, "backend": "torch"}, use_ray=False)
    for row in ours.table.itertuples():
        sk = SkGaussianMixture(int(row.k), covariance_type="diag", init_params="k-means++",
                               random_state=0).fit(X.astype(np.float64))
        assert row.n_iter == sk.n_iter_, row.k
        assert row.bic == pytest.approx(sk.bic(X.astype(np.float64)), rel=1e-5), row.k
    assert sum(ours.table["n_iter"] > 3) >= 2  # some K need many iterations
