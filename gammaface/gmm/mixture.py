"""A diagonal Gaussian mixture with scikit-learn's API, fitted by EM written in torch.

The EM follows the paper's eqs. 8-11 in log space: one pass over the rows per iteration computes
log-responsibilities with log-sum-exp chunk by chunk and accumulates the M-step's sufficient
statistics on the way, so memory beyond the data stays one chunk buffer plus O(N + K x d).
Every step mirrors scikit-learn's
`GaussianMixture(covariance_type="diag")` (the same lower bound, the same 10 * eps added to the
component counts, the same convergence test), so given the same initial parameters both reach
the same solution. Backends:

- `torch`: this EM on the given device (CPU unless told otherwise), from k-means++ seeds drawn
  as scikit-learn draws them (`kmeans_plusplus`);
- `cuml`: k-means++ initial means from cuML's KMeans on the GPU, then this EM on the GPU;
- `sklearn`: scikit-learn's own GaussianMixture, the reference and fallback;
- `auto`: `cuml` when a GPU and cuML are present, else `torch` on the CPU.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils.validation import check_array, check_is_fitted
from threadpoolctl import threadpool_limits

log = logging.getLogger(__name__)

BACKENDS = ("auto", "cuml", "torch", "sklearn")
INIT_PARAMS = ("k-means++", "kmeans", "random_from_data")
_EPS = 10 * float(np.finfo(np.float64).eps)  # what scikit-learn adds to every component count
_LOG_2PI = math.log(2 * math.pi)
# Log-likelihoods, responsibilities and the sums of the M-step are float64: a row's log-density
# at d = 3,072 is a sum of thousands of terms, and the convergence test (tol = 1e-3 on the mean)
# and the variances (E[x^2] - E[x]^2) need more digits than float32 keeps. The two matrix
# products per chunk stay in the data's dtype, on rows centred by the column means.
_STAT_DTYPE = torch.float64
# ... but the E-step's product is summed in float32 only over blocks of this many columns of
# [x - c, (x - c)^2], and the blocks' partial sums in float64. One float32 sum over all 2d
# columns is a log-density of thousands rounded to float32's digits: at d = 3,072 the mean
# log-likelihood came out 7.5e-5 off (scikit-learn's float64 as reference), which is 7 % of
# tol, enough to stop an iteration early or late (K = 8, 9, 10 of benchmarks/gmm_bic.py's
# search). The error grows with the block (measured on the same rows: 64 columns 8.6e-7,
# 128 1.4e-6, 256 5.1e-6, 1,024 4.3e-5); 64 columns take scikit-learn's iterations on every K
# of the benchmark (tests/gmm). The M-step's sums need no such care: an error in the
# parameters moves the likelihood only to second order.
_BLOCK = 64
# A chunk's [x - c, (x - c)^2] buffer is written once and read by both products of the chunk,
# so it should stay in cache. Measured at d = 3,072, K = 11, one thread, one pass over 20,000
# rows with the blocked NumPy products: on an AMD EPYC (1 MiB L2, 32 MiB L3) 96 to 256 rows
# (2.3 to 6 MiB) 150 to 187 ms, 341 rows (8 MiB) 220 to 238 ms, 64 rows 184 ms (more chunks,
# more Python per row); two such passes side by side (two Ray tasks) the same. Earlier, with
# torch's MKL products on a machine with 2 MiB L2 and 480 MiB L3, 12 to 24 MiB was best. So:
# a quarter of the last-level cache, at most 4 MiB.
_MAX_BUFFER_BYTES = 4 << 20
_MAX_ROWS = 16384


def _last_level_cache_bytes() -> int | None:
    """The largest CPU cache Linux reports for CPU 0, or None where it says nothing."""
    sizes = []
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        try:
            text = entry.read_text().strip().upper()
            sizes.append(int(text[:-1]) << {"K": 10, "M": 20, "G": 30}[text[-1]])
        except (OSError, ValueError, KeyError, IndexError):
            continue
    return max(sizes) if sizes else None


_CACHE_BYTES = _last_level_cache_bytes()
_BUFFER_BYTES = min(_MAX_BUFFER_BYTES, _CACHE_BYTES // 4) if _CACHE_BYTES else _MAX_BUFFER_BYTES


def _chunk_rows(d: int, itemsize: int, chunk_size: int | None) -> int:
    """Rows per chunk: `chunk_size` when set, else as many as fill the buffer's bytes."""
    if chunk_size is not None:
        return int(chunk_size)
    return max(8, min(_MAX_ROWS, _BUFFER_BYTES // (2 * d * itemsize)))


def _squares(b: torch.Tensor, x: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
    """Fill the buffer b with [x - shift, (x - shift)^2] (columns beyond 2d untouched) and
    return it."""
    d = x.shape[1]
    if shift is None:
        b[:, :d].copy_(x)
    else:
        torch.sub(x, shift, out=b[:, :d])
    torch.mul(b[:, :d], b[:, :d], out=b[:, d:2 * d])
    return b


class _Products:
    """The EM pass's two products over a chunk buffer b = [x - c, (x - c)^2], padded with zero
    columns to whole blocks of _BLOCK:

    - `log_densities(b)`: b @ proj, (rows, K) in float64, summed in float32 block by block;
    - `add_statistics(stats, resp, b)`: stats += resp.T @ b, float32 products summed into
      float64 statistics.

    On the CPU both go through NumPy's BLAS: for these shapes (thousands of columns against
    at most a few dozen components) it is 3 to 4 times faster than torch's on the build
    machine (rows = 341, 2d = 6,144, K = 11, one thread: the blocked E-step product 0.87 ms
    against 3.5 ms for torch's single float32 product; `benchmarks/gmm_bic.py`). The arrays
    are views of the same memory, so nothing is copied. On a GPU the same sums are torch's."""

    def __init__(self, proj: torch.Tensor, width: int) -> None:
        two_d, k = proj.shape
        padded = torch.zeros((width, k), dtype=proj.dtype, device=proj.device)
        padded[:two_d] = proj
        self.k, self.blocks = k, width // _BLOCK
        self.blocked = proj.dtype != torch.float64  # float64 sums need no blocks
        # NumPy on the CPU where it has the dtype (it has no bfloat16), torch elsewhere
        self.cpu = proj.device.type == "cpu" and proj.dtype in (torch.float32, torch.float64)
        self.proj = padded.view(self.blocks, _BLOCK, k) if self.blocked else padded
        if self.cpu:
            self.proj_np = self.proj.numpy()

    def log_densities(self, b: torch.Tensor) -> torch.Tensor:
        rows = b.shape[0]
        if not self.blocked:
            return torch.from_numpy(b.numpy() @ self.proj_np) if self.cpu else b @ self.proj
        if self.cpu:
            parts = np.matmul(b.numpy().reshape(rows, self.blocks, _BLOCK).transpose(1, 0, 2),
                              self.proj_np)  # (blocks, rows, K)
            return torch.from_numpy(parts.sum(axis=0, dtype=np.float64))
        parts = torch.bmm(b.view(rows, self.blocks, _BLOCK).transpose(0, 1), self.proj)
        return parts.sum(dim=0, dtype=_STAT_DTYPE)

    def add_statistics(self, stats: torch.Tensor, resp: torch.Tensor, b: torch.Tensor) -> None:
        """stats (K, width, float64) += resp.T @ b."""
        if not self.cpu:
            stats += resp.T @ b
            return
        rows = b.shape[0]
        # block by block too: OpenBLAS runs (K, rows) @ (rows, 64) products about 1.1 to 2.5 times
        # faster than one (K, rows) @ (rows, width) (rows = 128 to 341, K = 4 to 11)
        parts = np.matmul(resp.numpy().T, b.numpy().reshape(rows, self.blocks, _BLOCK)
                          .transpose(1, 0, 2))  # (blocks, K, _BLOCK)
        out = stats.numpy().reshape(self.k, self.blocks, _BLOCK)
        out += parts.transpose(1, 0, 2)


def _padded_width(d: int) -> int:
    """The buffer's columns: 2d rounded up to whole blocks."""
    return -(-2 * d // _BLOCK) * _BLOCK


def cuml_available() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import cuml  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}.")
    if backend == "auto":
        chosen = "cuml" if cuml_available() else "torch"
        log.info("GMM backend auto -> %s", chosen)
        return chosen
    if backend == "cuml" and not cuml_available():
        raise ValueError("backend 'cuml' needs a CUDA GPU and cuML (pip install 'gammaface[gpu]').")
    return backend


def _first_bad_row(X: Any, bad_rows: Any, block: int = 4096) -> int | None:
    """The first row with NaN or inf, looked for block by block (no N x d mask at once)."""
    for start in range(0, X.shape[0], block):
        bad = bad_rows(X[start:start + block])
        if bad.any():
            return start + int(np.argmax(bad))
    return None


def check_data(X: Any, n_components: int | None = None) -> np.ndarray | torch.Tensor:
    """A 2-D finite array; NaN or inf is refused with the first bad row named."""
    if isinstance(X, torch.Tensor):
        if X.ndim != 2:
            raise ValueError(f"expected a 2-D array of rows, got shape {tuple(X.shape)}.")
        first = _first_bad_row(X, lambda block: (~torch.isfinite(block).all(dim=1)).numpy(force=True))
    else:
        # scikit-learn's own door (1-D, sparse, complex, object input refused as it refuses
        # them); non-finite rows are named below
        X = check_array(X, dtype=[np.float64, np.float32], ensure_all_finite=False,
                        ensure_min_samples=1)
        first = _first_bad_row(X, lambda block: ~np.isfinite(block).all(axis=1))
    if first is not None:
        raise ValueError(f"row {first} contains NaN or inf.")
    if n_components is not None and n_components > X.shape[0]:
        raise ValueError(f"n_components={n_components} is more than the {X.shape[0]} rows given.")
    return X


def _as_tensor(X: Any) -> torch.Tensor:
    """A tensor view of X without copying; X is only ever read, so a read-only array (such as one
    from Ray's object store) is fine and torch's warning about it does not apply."""
    if isinstance(X, torch.Tensor):
        return X
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(X))


def kmeans_plusplus(data: torch.Tensor, n_clusters: int, random_state: np.random.RandomState,
                    centre: torch.Tensor | None = None, rows: int | None = None,
                    n_local_trials: int | None = None) -> np.ndarray:
    """Row indices of k-means++ seeds, drawn as scikit-learn's `kmeans_plusplus` draws them:
    the same calls on the same RandomState (the first seed by `choice`, then 2 + log k
    candidates a step by `uniform` against the cumulative squared distances, the greedy best
    kept), with the same float32 distance arrays and sums. Only the distances are computed
    differently: in chunks, float products on rows centred by `centre` with float64 norms,
    instead of scikit-learn's float64 copy of each chunk (about 5 times slower), so a seed
    differs only where two draws are closer than rounding (tests/gmm compare the indices)."""
    n, d = data.shape
    rows = rows or _chunk_rows(d, data.element_size(), None)
    if n_local_trials is None:
        n_local_trials = 2 + int(np.log(n_clusters))
    np_dtype = np.float32 if data.dtype in (torch.float32, torch.float16, torch.bfloat16) \
        else np.float64
    weight = np.ones(n, dtype=np_dtype)  # scikit-learn's sample_weight when none is given
    shift = (torch.zeros(d, dtype=data.dtype, device=data.device) if centre is None
             else centre.to(device=data.device, dtype=data.dtype))
    norms = torch.empty(n, dtype=_STAT_DTYPE, device=data.device)
    for start in range(0, n, rows):
        x = data[start:start + rows] - shift
        norms[start:start + len(x)] = (x * x).sum(dim=1, dtype=_STAT_DTYPE)

    def distances(ids: np.ndarray) -> np.ndarray:
        """Squared distances from the rows `ids` to every row, (len(ids), n)."""
        cand = data[torch.as_tensor(ids, device=data.device)] - shift
        cand_norms = (cand * cand).sum(dim=1, dtype=_STAT_DTYPE)
        # (x - s).(c - s) = x.(c - s) - s.(c - s): the product reads the rows as they are (no
        # centred copy of each chunk, which took as long as the product), and its rounding is
        # that of |x| |c - s|, not of the distance's own cancellation
        offset = (shift.to(_STAT_DTYPE) @ cand.T.to(_STAT_DTYPE))[:, None]
        out = torch.empty((len(ids), n), dtype=_STAT_DTYPE, device=data.device)
        for start in range(0, n, rows):
            dots = (cand @ data[start:start + rows].T).to(_STAT_DTYPE).sub_(offset)
            out[:, start:start + dots.shape[1]] = cand_norms[:, None] \
                + norms[None, start:start + dots.shape[1]] - 2 * dots
        return out.clamp_(min=0).cpu().numpy().astype(np_dtype)

    indices = np.full(n_clusters, -1, dtype=int)
    indices[0] = random_state.choice(n, p=weight / weight.sum())
    closest = distances(indices[:1])
    pot = closest @ weight
    for c in range(1, n_clusters):
        draws = random_state.uniform(size=n_local_trials) * pot
        candidates = np.searchsorted(np.cumsum(weight * closest), draws)
        np.clip(candidates, None, n - 1, out=candidates)
        to_candidates = distances(candidates)
        np.minimum(closest, to_candidates, out=to_candidates)
        pots = to_candidates @ weight.reshape(-1, 1)
        best = int(np.argmin(pots))
        pot, closest = pots[best], to_candidates[best]
        indices[c] = candidates[best]
    return indices


def fit_single(X: np.ndarray, reg_covar: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One diagonal Gaussian in closed form, what EM converges to at once for K = 1: (means
    (1, d), variances (1, d) with `reg_covar` added as the mixture adds it, responsibilities
    (n, 1), all ones). In float64, whatever the rows' type."""
    X64 = np.asarray(X, dtype=np.float64)
    mean = X64.mean(axis=0, keepdims=True)
    var = X64.var(axis=0, keepdims=True) + reg_covar
    return mean, var, np.ones((len(X64), 1))


class GaussianMixture(DensityMixin, BaseEstimator):
    """Diagonal-covariance Gaussian mixture; a scikit-learn estimator (settings in `__init__`,
    checked in `fit`; `clone`, `Pipeline` and `GridSearchCV` take it), with the attributes and
    methods of `sklearn.mixture.GaussianMixture(covariance_type="diag")`."""

    def __init__(self, n_components: int = 1, covariance_type: str = "diag", tol: float = 1e-3,
                 reg_covar: float = 1e-6, max_iter: int = 100, n_init: int = 1,
                 init_params: str = "k-means++", random_state: int | None = None,
                 backend: str = "auto", dtype: torch.dtype | str = "float32",
                 device: str | torch.device | None = None, chunk_size: int | None = None,
                 weights_init: np.ndarray | None = None, means_init: np.ndarray | None = None,
                 variances_init: np.ndarray | None = None) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.random_state = random_state
        self.backend = backend
        self.dtype = dtype
        self.device = device
        self.chunk_size = chunk_size
        self.weights_init = weights_init
        self.means_init = means_init
        self.variances_init = variances_init

    def _check_settings(self) -> None:
        if self.covariance_type != "diag":
            raise ValueError("only covariance_type='diag' is implemented.")
        if self.init_params not in INIT_PARAMS:
            raise ValueError(f"init_params must be one of {', '.join(INIT_PARAMS)}.")
        for name in ("n_components", "max_iter", "n_init", "chunk_size"):
            value = getattr(self, name)
            if name == "chunk_size" and value is None:
                continue
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if not self.tol >= 0 or not self.reg_covar >= 0:
            raise ValueError("tol and reg_covar must be non-negative.")

    @property
    def _torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype) if isinstance(self.dtype, str) else self.dtype

    def _rows(self, data: torch.Tensor) -> int:
        return _chunk_rows(data.shape[1], data.element_size(), self.chunk_size)

    # --- fitting -------------------------------------------------------------------------------

    def fit(self, X: Any, y: None = None) -> GaussianMixture:
        self._check_settings()
        X = check_data(X, self.n_components)
        self.n_features_in_ = int(X.shape[1])
        backend = resolve_backend(self.backend)
        self.backend_ = backend
        if backend == "sklearn":
            return self._fit_sklearn(X)
        device = torch.device(self.device) if self.device else \
            torch.device("cuda" if backend == "cuml" else "cpu")
        data = _as_tensor(X).to(device=device, dtype=self._torch_dtype)
        rng = np.random.RandomState(self.random_state)
        rows = self._rows(data)
        # EM is shift-equivariant: it runs on rows centred by the column means, so the float32
        # products see values near 0 rather than, say, E[x^2] - E[x]^2 with E[x] large
        centre = cast(torch.Tensor, sum(data[i:i + rows].sum(dim=0, dtype=_STAT_DTYPE)  # no float64 copy
                                        for i in range(0, data.shape[0], rows)) / data.shape[0])
        best: tuple[float, dict[str, Any]] | None = None
        # NumPy's BLAS runs the products single-threaded beside torch's own threads (which
        # fill the buffers): both pools busy at once on 2 cores made a K = 4 fit 11.0 s
        # against 1.9 s (benchmarks/gmm_bic.py's close components)
        with threadpool_limits(limits=1, user_api="blas"):
            for _ in range(self.n_init):
                params = self._initial_parameters(X, data, rng, backend, centre)
                result = self._em(data, centre, rows, *params)
                if best is None or result["lower_bound"] > best[0]:
                    best = (result["lower_bound"], result)
            assert best is not None
            r = best[1]
            # the mean log-likelihood of X under the final parameters, from one more pass of
            # the EM's own (float32 products, float64 sums): what bic/aic of the training rows
            # need, without the float64 pass of score(X) (scikit-learn's fit ends with one too)
            total, *_ = self._e_pass(data, centre, rows, r["weights"], r["means"] - centre,
                                     r["variances"])
        self.train_score_ = total / data.shape[0]
        self.weights_ = r["weights"].cpu().double().numpy()
        self.means_ = r["means"].cpu().double().numpy()
        self.covariances_ = r["variances"].cpu().double().numpy()
        self.converged_, self.n_iter_, self.lower_bound_ = r["converged"], r["n_iter"], r["lower_bound"]
        self.n_reseeded_ = r["reseeded"]
        self._set_precisions()
        if not self.converged_:
            log.warning("EM with K=%d did not converge in %d iterations", self.n_components,
                        self.max_iter)
        return self

    def _fit_sklearn(self, X: Any) -> GaussianMixture:
        from sklearn.mixture import GaussianMixture as SkGaussianMixture

        X = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else X
        kwargs: dict[str, Any] = {}
        if self.weights_init is not None:
            kwargs["weights_init"] = self.weights_init
        if self.means_init is not None:
            kwargs["means_init"] = self.means_init
        if self.variances_init is not None:
            kwargs["precisions_init"] = 1.0 / np.asarray(self.variances_init)
        sk = SkGaussianMixture(self.n_components, covariance_type="diag", tol=self.tol,
                               reg_covar=self.reg_covar, max_iter=self.max_iter,
                               n_init=self.n_init, init_params=self.init_params,
                               random_state=self.random_state, **kwargs).fit(X)
        self.weights_, self.means_, self.covariances_ = sk.weights_, sk.means_, sk.covariances_
        self.converged_, self.n_iter_, self.lower_bound_ = sk.converged_, sk.n_iter_, sk.lower_bound_
        self.train_score_ = float(sk.score(X))
        self.n_reseeded_ = 0
        self._set_precisions()
        return self

    def fit_predict(self, X: Any, y: None = None) -> np.ndarray:
        """Fit, then the most likely component of every row (scikit-learn's fit_predict, which
        labels with the fitted parameters after the last M-step)."""
        return self.fit(X).predict(X)

    def _set_precisions(self) -> None:
        """For diagonal covariances the precisions and their Cholesky factors are elementwise."""
        self.precisions_ = 1.0 / np.asarray(self.covariances_, dtype=np.float64)
        self.precisions_cholesky_ = np.sqrt(self.precisions_)

    def _initial_parameters(self, X: Any, data: torch.Tensor, rng: np.random.RandomState,
                            backend: str, centre: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weights, means, variances) as scikit-learn would start, honouring *_init overrides."""
        n, k = data.shape[0], self.n_components
        if self.means_init is not None and self.weights_init is not None \
                and self.variances_init is not None:
            return tuple(torch.as_tensor(np.asarray(a), dtype=_STAT_DTYPE, device=data.device)
                         for a in (self.weights_init, self.means_init, self.variances_init))  # type: ignore[return-value]
        per_row, picks = self._initial_labels(X, data, rng, backend, centre)
        picks_t = torch.as_tensor(picks, device=data.device)
        if per_row:  # a component label for every row
            resp = torch.zeros((n, k), dtype=_STAT_DTYPE, device=data.device)
            resp[torch.arange(n, device=data.device), picks_t] = 1
            weights, means, variances = self._m_step_from_resp(data, resp)
        else:  # one chosen row per component: the M-step's sums are those rows themselves
            x = data[picks_t].to(_STAT_DTYPE)
            weights, means, variances = self._m_step(
                torch.ones(k, dtype=_STAT_DTYPE, device=data.device), x, x * x, n)
        if self.weights_init is not None:
            weights = torch.as_tensor(self.weights_init, dtype=_STAT_DTYPE, device=data.device)
        if self.means_init is not None:
            means = torch.as_tensor(self.means_init, dtype=_STAT_DTYPE, device=data.device)
        if self.variances_init is not None:
            variances = torch.as_tensor(self.variances_init, dtype=_STAT_DTYPE, device=data.device)
        return weights, means, variances

    def _initial_labels(self, X: Any, data: torch.Tensor, rng: np.random.RandomState,
                        backend: str, centre: torch.Tensor) -> tuple[bool, np.ndarray]:
        """(True, a label per row) for k-means, (False, K row indices) for k-means++ and
        random_from_data."""
        k = self.n_components
        if self.init_params == "random_from_data":
            return False, rng.choice(data.shape[0], size=k, replace=False)
        if backend == "cuml":
            from cuml.cluster import KMeans as CuKMeans

            km = CuKMeans(n_clusters=k, init="scalable-k-means++", n_init=1,
                          random_state=int(rng.randint(np.iinfo(np.int32).max)))
            km.fit(data.float())
            return True, np.asarray(km.labels_.get() if hasattr(km.labels_, "get") else km.labels_)
        if self.init_params == "kmeans":
            from sklearn.cluster import KMeans

            host = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else X
            return True, KMeans(n_clusters=k, n_init=1, random_state=rng).fit(host).labels_
        return False, kmeans_plusplus(data, k, rng, centre, self._rows(data))

    def _m_step_from_resp(self, data: torch.Tensor, resp: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """scikit-learn's M-step from hard initial responsibilities, in the statistics' dtype
        chunk by chunk (no float64 copy of the data)."""
        resp = resp.to(_STAT_DTYPE)
        k, d = resp.shape[1], data.shape[1]
        sx = torch.zeros((k, d), dtype=_STAT_DTYPE, device=data.device)
        sxx = torch.zeros_like(sx)
        rows = self._rows(data)
        for start in range(0, data.shape[0], rows):
            x = data[start:start + rows].to(_STAT_DTYPE)
            r = resp[start:start + rows]
            sx += r.T @ x
            sxx += r.T @ (x * x)
        return self._m_step(resp.sum(0), sx, sxx, data.shape[0])

    def _m_step(self, counts: torch.Tensor, sx: torch.Tensor, sxx: torch.Tensor, n: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """scikit-learn's M-step from the summed responsibilities, sum(r x) and sum(r x^2):
        (weights, means, variances)."""
        nk = counts + _EPS
        means = sx / nk[:, None]
        return nk / n, means, sxx / nk[:, None] - means * means + self.reg_covar

    def _em(self, data: torch.Tensor, centre: torch.Tensor, rows: int, weights: torch.Tensor,
            means: torch.Tensor, variances: torch.Tensor) -> dict[str, Any]:
        n = data.shape[0]
        means = means.to(_STAT_DTYPE) - centre  # centred coordinates until the end
        weights, variances = weights.to(_STAT_DTYPE), variances.to(_STAT_DTYPE)
        lower_bound, converged, n_iter, reseeded = -math.inf, False, 0, 0
        for n_iter in range(1, self.max_iter + 1):
            prev = lower_bound
            total_lp, nk, sx, sxx, worst = self._e_pass(data, centre, rows, weights, means,
                                                        variances)
            lower_bound = total_lp / n
            weights, means, variances = self._m_step(nk, sx, sxx, n)
            dead = (nk + _EPS < 1.0 + _EPS).nonzero().flatten()
            if len(dead):  # a component that lost its points starts again at a poorly fitted
                reseeded += len(dead)  # row, each at its own, so reseeded ones do not coincide
                spread = data.var(dim=0).to(_STAT_DTYPE) + self.reg_covar
                for comp, row in zip(dead.tolist(), worst):
                    means[comp] = data[row].to(_STAT_DTYPE) - centre
                    variances[comp] = spread
                    weights[comp] = 1.0 / n
                weights = weights / weights.sum()
            variances = torch.clamp(variances, min=self.reg_covar)
            if abs(lower_bound - prev) < self.tol:
                converged = True
                break
        return {"weights": weights, "means": means + centre, "variances": variances,
                "lower_bound": float(lower_bound), "converged": converged, "n_iter": n_iter,
                "reseeded": reseeded}

    def _e_pass(self, data: torch.Tensor, centre: torch.Tensor, rows: int, weights: torch.Tensor,
                means: torch.Tensor, variances: torch.Tensor
                ) -> tuple[float, torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
        """One pass over the rows (means in centred coordinates): total log-likelihood, the
        M-step's sufficient statistics, and the K worst-fitted rows, worst first (where
        components that lost their points start again).

        Each chunk is written once into a buffer [x - c, (x - c)^2] small enough to stay in
        cache, so the E-step's log-densities and the M-step's sums are one matrix product each
        over it, and the data is read from memory once per iteration."""
        k, d = means.shape
        work = data.dtype
        precision, mean_prec, bias = self._log_gaussian_consts(weights, means, variances)
        width = _padded_width(d)
        products = _Products(torch.cat([mean_prec, -0.5 * precision], dim=1).to(work).T, width)
        shift = centre.to(work)
        stats = torch.zeros((k, width), dtype=_STAT_DTYPE, device=data.device)
        nk = torch.zeros(k, dtype=_STAT_DTYPE, device=data.device)
        norms = torch.empty(data.shape[0], dtype=_STAT_DTYPE, device=data.device)
        # the padding columns stay zero: the fill writes the first 2d only
        buf = torch.zeros((min(rows, data.shape[0]), width), dtype=work, device=data.device)
        for start in range(0, data.shape[0], rows):
            x = data[start:start + rows]
            b = _squares(buf[:len(x)], x, shift)
            weighted = products.log_densities(b).add_(bias)  # (rows, K)
            norm = torch.logsumexp(weighted, dim=1)
            resp = weighted.sub_(norm[:, None]).exp_()
            norms[start:start + len(x)] = norm
            nk += resp.sum(0)
            products.add_statistics(stats, resp.to(work), b)
        worst = torch.topk(norms, min(k, len(norms)), largest=False).indices.tolist()
        return float(norms.sum()), nk, stats[:, :d], stats[:, d:2 * d], worst

    @staticmethod
    def _log_gaussian_consts(weights: torch.Tensor, means: torch.Tensor, variances: torch.Tensor
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        precision = 1.0 / variances
        d = means.shape[1]
        # log pi_k - 0.5 (d log 2pi + sum log var_k + sum mu_k^2 / var_k)
        bias = torch.log(weights) - 0.5 * (d * _LOG_2PI + torch.log(variances).sum(1)
                                           + (means * means * precision).sum(1))
        return precision, means * precision, bias

    # --- using a fitted mixture -----------------------------------------------------------------

    def _check_fitted(self) -> None:
        check_is_fitted(self, "means_")

    def _weighted(self, X: Any) -> torch.Tensor:
        self._check_fitted()
        X = check_data(X)
        data = _as_tensor(X)
        if data.shape[1] != self.means_.shape[1]:
            raise ValueError(f"X has {data.shape[1]} features, but GaussianMixture is expecting "
                             f"{self.means_.shape[1]} features as input.")
        precision, mean_prec, bias = self._log_gaussian_consts(
            *(torch.from_numpy(np.array(a, dtype=np.float64))
              for a in (self.weights_, self.means_, self.covariances_)))
        proj = torch.cat([mean_prec, -0.5 * precision], dim=1).T.contiguous()  # (2d, K), as in _e_pass
        d = data.shape[1]
        rows = _chunk_rows(d, 8, self.chunk_size)
        out = torch.empty((data.shape[0], len(bias)), dtype=torch.float64)
        buf = torch.empty((min(rows, data.shape[0]), 2 * d), dtype=torch.float64)
        for start in range(0, data.shape[0], rows):
            x = data[start:start + rows].cpu()
            b = _squares(buf[:len(x)], x)
            out[start:start + len(x)] = b @ proj + bias
        return out

    def score_samples(self, X: Any) -> np.ndarray:
        return torch.logsumexp(self._weighted(X), dim=1).numpy()

    def score(self, X: Any, y: None = None) -> float:
        return float(self.score_samples(X).mean())

    def predict_proba(self, X: Any) -> np.ndarray:
        w = self._weighted(X)
        return torch.exp(w - torch.logsumexp(w, dim=1, keepdim=True)).numpy()

    def predict(self, X: Any) -> np.ndarray:
        return self._weighted(X).argmax(dim=1).numpy()

    def _n_parameters(self) -> int:
        k, d = self.means_.shape
        return (k - 1) + 2 * k * d  # scikit-learn's count for diag

    def bic(self, X: Any) -> float:
        return self.bic_from_score(self.score(X), X.shape[0])

    def aic(self, X: Any) -> float:
        return self.aic_from_score(self.score(X), X.shape[0])

    def bic_from_score(self, score: float, n: int) -> float:
        """BIC of n rows whose mean log-likelihood is `score` (`train_score_` for the rows the
        mixture was fitted on)."""
        return -2 * score * n + self._n_parameters() * math.log(n)

    def aic_from_score(self, score: float, n: int) -> float:
        return -2 * score * n + 2 * self._n_parameters()

    def sample(self, n_samples: int = 1, random_state: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(X, y) with component counts drawn multinomially from the weights, as scikit-learn."""
        self._check_fitted()
        rng = np.random.RandomState(self.random_state if random_state is None else random_state)
        counts = rng.multinomial(n_samples, self.weights_)
        xs = [m + rng.standard_normal((c, m.shape[0])) * np.sqrt(v)
              for m, v, c in zip(self.means_, self.covariances_, counts)]
        y = np.concatenate([np.full(c, j, dtype=int) for j, c in enumerate(counts)])
        return np.vstack(xs), y

    # --- persistence ----------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        self._check_fitted()
        meta = {"n_components": self.n_components, "covariance_type": self.covariance_type,
                "tol": self.tol, "reg_covar": self.reg_covar, "max_iter": self.max_iter,
                "n_init": self.n_init, "init_params": self.init_params,
                "random_state": self.random_state, "backend": getattr(self, "backend_", self.backend),
                "converged": bool(self.converged_), "n_iter": int(self.n_iter_),
                "lower_bound": float(self.lower_bound_)}
        np.savez(path, weights=self.weights_, means=self.means_, covariances=self.covariances_,
                 meta=np.array(json.dumps(meta)))

    @classmethod
    def load(cls, path: str | Path) -> GaussianMixture:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            gm = cls(n_components=meta["n_components"], tol=meta["tol"],
                     reg_covar=meta["reg_covar"], max_iter=meta["max_iter"],
                     n_init=meta["n_init"], init_params=meta["init_params"],
                     random_state=meta["random_state"], backend="torch")
            gm.weights_, gm.means_, gm.covariances_ = z["weights"], z["means"], z["covariances"]
        gm.converged_, gm.n_iter_, gm.lower_bound_ = meta["converged"], meta["n_iter"], meta["lower_bound"]
        gm.backend_ = meta["backend"]
        gm.n_reseeded_ = 0
        gm.n_features_in_ = int(gm.means_.shape[1])
        gm._set_precisions()
        return gm
