import numpy as np
import pytest
from sklearn.decomposition import PCA

from gammaface.gmm.projection import Projection


def _data(n=400, d=12, seed=0):
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(3, d))
    return (rng.normal(size=(n, 3)) * [5.0, 3.0, 2.0]) @ basis + rng.normal(size=(n, d)) * 0.3 + 4.0


def test_the_space_is_scikit_learns_pca():
    X = _data()
    proj = Projection.fit(X, 3, seed=0)
    ref = PCA(3, svd_solver="full").fit(X)
    Z = proj.to_space(X)
    # components are defined up to sign
    signs = np.sign((proj.components * ref.components_).sum(1))
    np.testing.assert_allclose(Z * signs, ref.transform(X), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(proj.components @ proj.components.T, np.eye(3), atol=1e-5)


def test_the_way_back_restores_the_discarded_variance_in_the_discarded_directions():
    X = _data(n=3000)
    proj = Projection.fit(X, 3, seed=0)
    dropped = np.var(X, axis=0).sum() - PCA(3, svd_solver="full").fit(X).explained_variance_.sum()
    assert proj.residual_variance == pytest.approx(dropped / (X.shape[1] - 3), rel=1e-3)
    Z = proj.to_space(X)
    back = proj.back(Z, np.random.default_rng(1))
    np.testing.assert_allclose(proj.to_space(back), Z, atol=1e-3)  # the kept coordinates hold
    assert np.var(back, axis=0).sum() == pytest.approx(np.var(X, axis=0).sum(), rel=0.05)
    np.testing.assert_allclose(proj.back(Z), Z @ proj.components + proj.mean, atol=1e-4)


def test_save_load_and_bad_dimensions(tmp_path):
    X = _data()
    proj = Projection.fit(X, 4)
    proj.save(tmp_path / "pca.npz")
    again = Projection.load(tmp_path / "pca.npz")
    np.testing.assert_array_equal(again.components, proj.components)
    assert again.residual_variance == proj.residual_variance
    with pytest.raises(ValueError, match="must be below both the latent size"):
        Projection.fit(X, 12)
