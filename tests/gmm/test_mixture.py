import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from gammaface.gmm import GaussianMixture


def _mixture_data(n=1500, d=60, k=4, seed=0, spread=3.0):
    rng = np.random.default_rng(seed)
    means = rng.normal(0, spread, (k, d))
    sigmas = rng.uniform(0.5, 1.5, (k, d))
    z = rng.choice(k, n, p=np.linspace(1, 2, k) / np.linspace(1, 2, k).sum())
    return means[z] + rng.standard_normal((n, d)) * sigmas[z], z, means


def _same_start(X, k):
    d = X.shape[1]
    rng = np.random.default_rng(5)
    return dict(weights_init=np.full(k, 1 / k), means_init=X[rng.choice(len(X), k, replace=False)],
                variances_init=np.ones((k, d)))


@pytest.mark.parametrize("dtype, rel", [(torch.float64, 1e-6), (torch.float32, 1e-4)])
def test_torch_em_reaches_sklearn_from_the_same_start(dtype, rel):
    X, _, _ = _mixture_data(spread=0.8)  # overlapping components: EM needs several iterations
    start = _same_start(X, 4)
    ours = GaussianMixture(4, backend="torch", dtype=dtype, **start).fit(X)
    sk = SkGaussianMixture(4, covariance_type="diag", weights_init=start["weights_init"],
                           means_init=start["means_init"],
                           precisions_init=1 / start["variances_init"]).fit(X)
    assert sk.n_iter_ > 2
    assert ours.lower_bound_ == pytest.approx(sk.lower_bound_, rel=rel)
    assert ours.n_iter_ == sk.n_iter_
    assert (ours.predict(X) == sk.predict(X)).all()
    assert ours.bic(X) == pytest.approx(sk.bic(X), rel=rel)
    assert ours.aic(X) == pytest.approx(sk.aic(X), rel=rel)
    np.testing.assert_allclose(ours.score_samples(X), sk.score_samples(X), rtol=rel * 10)
    np.testing.assert_allclose(ours.predict_proba(X), sk.predict_proba(X), atol=1e-4)


def _close_components(n, d, offset, seed=0):
    """Four diagonal components 0.15 apart per dimension around `offset`, as float32: EM needs
    many iterations, every row's log-density is a sum of d terms, and E[x^2] - E[x]^2 cancels
    more digits the further the data sits from 0."""
    rng = np.random.default_rng(seed)
    means = rng.normal(offset, 0.15, (4, d))
    sigmas = rng.uniform(0.8, 1.2, (4, d))
    z = rng.choice(4, n)
    return (means[z] + rng.standard_normal((n, d)) * sigmas[z]).astype(np.float32)


# (n, d, offset, init): the middle two stopped at 16 and 7 iterations where scikit-learn stops
# at 8 and 9 when the E-step's sums were float32
@pytest.mark.parametrize("n, d, offset, init", [
    (3000, 10, 2.0, "k-means++"), (8000, 256, 30.0, "k-means++"), (4000, 3072, 10.0, "k-means++"),
    (4000, 3072, 10.0, "kmeans"), (600, 12288, 2.0, "k-means++")])
def test_float32_data_takes_sklearns_iterations_at_any_d(n, d, offset, init):
    # scikit-learn on float64 rows is the reference; float32 data with float64 statistics must
    # stop at the same iteration and agree on the BIC to 1e-5, given the same means and the
    # same init_params for the rest (scikit-learn's default is kmeans, ours k-means++: with
    # means_init alone the two defaults start from different variances and weights)
    X = _close_components(n, d, offset)
    means = X[np.random.default_rng(1).choice(len(X), 4, replace=False)].astype(np.float64)
    sk = SkGaussianMixture(4, covariance_type="diag", means_init=means, init_params=init,
                           random_state=0).fit(X.astype(np.float64))
    ours = GaussianMixture(4, backend="torch", means_init=means, init_params=init,
                           random_state=0).fit(X)
    assert sk.n_iter_ > 2
    assert ours.n_iter_ == sk.n_iter_
    assert ours.bic(X) == pytest.approx(sk.bic(X), rel=1e-5)


def test_kmeanspp_init_matches_sklearn_for_the_same_random_state():
    X, _, _ = _mixture_data(seed=2)
    ours = GaussianMixture(4, backend="torch", dtype=torch.float64, random_state=3).fit(X)
    sk = SkGaussianMixture(4, covariance_type="diag", init_params="k-means++", random_state=3).fit(X)
    assert ours.lower_bound_ == pytest.approx(sk.lower_bound_, rel=1e-6)


def test_sklearn_backend_is_sklearn():
    X, _, _ = _mixture_data(seed=1)
    ours = GaussianMixture(3, backend="sklearn", random_state=0).fit(X)
    sk = SkGaussianMixture(3, covariance_type="diag", init_params="k-means++", random_state=0).fit(X)
    np.testing.assert_allclose(ours.means_, sk.means_)
    assert ours.bic(X) == pytest.approx(sk.bic(X))


def test_chunked_e_step_changes_nothing():
    X, _, _ = _mixture_data(n=700)
    start = _same_start(X, 4)
    a = GaussianMixture(4, backend="torch", dtype=torch.float64, chunk_size=64, **start).fit(X)
    b = GaussianMixture(4, backend="torch", dtype=torch.float64, chunk_size=10_000, **start).fit(X)
    assert a.lower_bound_ == pytest.approx(b.lower_bound_, rel=1e-12)
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-9)


def test_bad_data_is_refused():
    X, _, _ = _mixture_data(n=50, d=5)
    X[17, 2] = np.nan
    with pytest.raises(ValueError, match="row 17 contains NaN or inf"):
        GaussianMixture(2, backend="torch").fit(X)
    with pytest.raises(ValueError, match="more than the 3 rows"):
        GaussianMixture(4, backend="torch").fit(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="backend"):
        GaussianMixture(2, backend="gpu").fit(np.zeros((30, 2)))
    with pytest.raises(ValueError, match="cuML"):
        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
        GaussianMixture(2, backend="cuml").fit(np.random.rand(30, 2))


def test_a_component_that_loses_its_points_is_reseeded():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (200, 3)), rng.normal(8, 1, (200, 3))])
    far = np.full((2, 3), 1e3)  # a start far from all data: it never wins a point
    gm = GaussianMixture(2, backend="torch", dtype=torch.float64, weights_init=np.array([0.5, 0.5]),
                         means_init=np.vstack([X[:1], far[:1]]), variances_init=np.ones((2, 3)),
                         max_iter=200).fit(X)
    assert gm.n_reseeded_ >= 1
    assert np.isfinite(gm.means_).all() and (gm.covariances_ > 0).all()
    assert sorted(np.round(gm.means_[:, 0])) == [0.0, 8.0]


def test_components_that_lose_their_points_together_restart_at_distinct_rows():
    rng = np.random.default_rng(1)
    X = rng.normal(0, 1, (300, 3))
    far = np.array([[1e3, 1e3, 1e3], [-1e3, 1e3, -1e3]])  # two starts that win no point
    gm = GaussianMixture(3, backend="torch", dtype=torch.float64, max_iter=1,
                         weights_init=np.full(3, 1 / 3), means_init=np.vstack([X[:1], far]),
                         variances_init=np.ones((3, 3))).fit(X)
    assert gm.n_reseeded_ == 2
    # each restarts at its own row: the two worst fitted by the mixture of that E-step, where
    # only the unit-variance component at X[0] counts, so the two rows farthest from X[0]
    worst = np.argsort(-((X - X[0]) ** 2).sum(1))[:2]
    np.testing.assert_allclose(gm.means_[1:], X[worst])
    assert not np.allclose(gm.means_[1], gm.means_[2])


def test_it_is_a_scikit_learn_estimator():
    from sklearn.base import clone
    from sklearn.decomposition import PCA
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline

    gm = GaussianMixture(3, backend="torch", random_state=0, tol=1e-4)
    twin = clone(gm)
    assert twin is not gm and twin.get_params() == gm.get_params()
    assert not hasattr(twin.set_params(n_components=2), "means_") and twin.n_components == 2
    X, _, _ = _mixture_data(n=300, d=6)
    pipe = Pipeline([("pca", PCA(4)), ("gmm", GaussianMixture(3, backend="torch", random_state=0))])
    labels = pipe.fit_predict(X)
    ref = SkGaussianMixture(3, covariance_type="diag", random_state=0).fit(PCA(4).fit_transform(X))
    assert pipe[-1].n_features_in_ == 4 and pipe[-1].precisions_.shape == (3, 4)
    np.testing.assert_allclose(pipe[-1].precisions_cholesky_ ** 2, pipe[-1].precisions_)
    assert pipe.score(X) == pytest.approx(ref.score(PCA(4).fit_transform(X)), rel=1e-3)
    assert len(set(zip(labels, ref.predict(PCA(4).fit_transform(X))))) == 3  # same partition
    search = GridSearchCV(GaussianMixture(backend="torch", random_state=0),
                          {"n_components": [1, 3]}, cv=3).fit(X)
    assert search.best_params_ == {"n_components": 3}
    with pytest.raises(ValueError, match="n_components must be a positive integer"):
        GaussianMixture(0).fit(X)  # settings are checked in fit, as scikit-learn does


def test_scikit_learns_estimator_checks_pass():
    """check_estimator's whole suite; the one check it skips here is the array-API one, which
    runs only with SCIPY_ARRAY_API set (the mixture computes in torch, not in array-API
    namespaces)."""
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(GaussianMixture(backend="torch", random_state=0), on_fail=None)
    failed = {r["check_name"]: str(r["exception"])[:200] for r in results if r["status"] == "failed"}
    skipped = {r["check_name"] for r in results if r["status"] == "skipped"}
    assert not failed
    assert skipped <= {"check_array_api_input"}


def test_save_load_roundtrip_without_pickle(tmp_path):
    X, _, _ = _mixture_data(n=300, d=8)
    gm = GaussianMixture(3, backend="torch", random_state=0).fit(X)
    gm.save(tmp_path / "g.npz")
    back = GaussianMixture.load(tmp_path / "g.npz")
    np.testing.assert_array_equal(back.means_, gm.means_)
    np.testing.assert_array_equal(back.predict(X), gm.predict(X))
    assert back.converged_ == gm.converged_ and back.lower_bound_ == gm.lower_bound_
    with np.load(tmp_path / "g.npz", allow_pickle=False) as z:
        assert set(z.files) == {"weights", "means", "covariances", "meta"}


def test_sample_follows_the_weights():
    X, _, _ = _mixture_data(n=600, d=4)
    gm = GaussianMixture(4, backend="torch", random_state=0).fit(X)
    S, y = gm.sample(4000, random_state=1)
    assert S.shape == (4000, 4)
    np.testing.assert_allclose(np.bincount(y, minlength=4) / 4000, gm.weights_, atol=0.03)


@pytest.mark.parametrize("init", ["k-means++", "kmeans", "random_from_data"])
def test_every_init_and_as_many_components_as_rows(init):
    X, _, _ = _mixture_data(n=200, d=5, seed=3)
    ours = GaussianMixture(3, backend="torch", dtype=torch.float64, init_params=init,
                           random_state=0).fit(X)
    assert np.isfinite(ours.lower_bound_)
    tiny = np.random.default_rng(0).normal(size=(4, 2))
    assert GaussianMixture(4, backend="torch", init_params=init, random_state=0).fit(tiny).means_.shape == (4, 2)


@pytest.mark.parametrize("d", [10, 3072])
def test_the_fits_own_score_of_its_rows_equals_scikit_learns_score(d):
    """train_score_ comes from the EM's float32 pass; the BIC search reads it instead of two
    float64 passes of score(X). It must give scikit-learn's BIC to well within 1e-5."""
    X, _, _ = _mixture_data(n=800, d=d, spread=0.8)
    X32 = X.astype(np.float32)
    start = _same_start(X, 3)
    ours = GaussianMixture(3, backend="torch", **start).fit(X32)
    sk = SkGaussianMixture(3, covariance_type="diag", weights_init=start["weights_init"],
                           means_init=start["means_init"], precisions_init=1 / start["variances_init"]).fit(X)
    assert ours.train_score_ == pytest.approx(ours.score(X32), rel=1e-7)
    assert ours.bic_from_score(ours.train_score_, len(X)) == pytest.approx(sk.bic(X), rel=1e-6)
    assert ours.aic_from_score(ours.train_score_, len(X)) == pytest.approx(sk.aic(X), rel=1e-6)


def test_the_log_likelihood_of_float32_rows_keeps_the_digits_the_convergence_test_reads():
    """The mean log-likelihood at d = 3,072 is about -3,700 and EM stops when it moves by less
    than tol = 1e-3; one float32 sum over a row's 6,144 terms put it 7.5e-5 off, enough to stop
    an iteration early or late. It must match scikit-learn's float64 to 1e-5 absolute."""
    X = _latent_like(3000, 3072)
    X64 = X.astype(np.float64)
    sk = SkGaussianMixture(8, covariance_type="diag", init_params="k-means++", random_state=0,
                           max_iter=3).fit(X64)
    ours = GaussianMixture(8, backend="torch", max_iter=1, weights_init=sk.weights_,
                           means_init=sk.means_, variances_init=sk.covariances_).fit(X)
    assert abs(ours.lower_bound_ - sk.score(X64)) < 1e-5


def _latent_like(n, d, seed=0):
    """Rows like forward latents: six clusters of smooth images plus unit noise, float32."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 0.6, (6, d // 4 + 1)).repeat(4, axis=1)[:, :d]
    z = rng.choice(6, n, p=np.array([3, 2, 2, 1, 1, 1]) / 10)
    return (centres[z] + rng.standard_normal((n, d)) * 0.8).astype(np.float32)


@pytest.mark.parametrize("data", [
    lambda: _latent_like(4000, 768),
    lambda: _close_components(3000, 256, 30.0),  # far from 0: the distances are taken centred
    lambda: _mixture_data(seed=3)[0],  # float64 rows
])
def test_kmeans_plusplus_draws_sklearns_seeds(data):
    from sklearn.cluster import kmeans_plusplus as sk_kmeans_plusplus

    from gammaface.gmm.mixture import kmeans_plusplus

    X = data()
    T = torch.from_numpy(X)
    centre = T.double().mean(0)
    for seed in range(3):
        for k in (1, 2, 5, 11):
            expected = sk_kmeans_plusplus(X, k, random_state=np.random.RandomState(seed))[1]
            got = kmeans_plusplus(T, k, np.random.RandomState(seed), centre, rows=700)
            assert got.tolist() == expected.tolist(), (seed, k)


def test_the_single_gaussian_is_scikit_learns_one_component_fit():
    from gammaface.gmm.mixture import fit_single

    rng = np.random.default_rng(3)
    X = (rng.standard_normal((500, 6)) * np.arange(1, 7) + 2.0).astype(np.float32)
    means, variances, resp = fit_single(X, 1e-4)
    sk = SkGaussianMixture(1, covariance_type="diag", reg_covar=1e-4, random_state=0).fit(X.astype(np.float64))
    np.testing.assert_allclose(means, sk.means_, rtol=1e-10)
    np.testing.assert_allclose(variances, sk.covariances_, rtol=1e-10)
    np.testing.assert_array_equal(resp, sk.predict_proba(X.astype(np.float64)))
