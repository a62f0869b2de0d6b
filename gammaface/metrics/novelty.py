"""Whether a generated set is new: each image's distance to its nearest training image, beside
the same distance for real held-out images; the share of near-copies (closer than the 1st
percentile of the held-out images' distances); and precision and recall of the generated set
against real images in a feature space (Kynkäänniemi et al., NeurIPS 2019: a sample counts as
inside a set's manifold when it lies within some member's distance to its k-th neighbour)."""

from __future__ import annotations

import numpy as np

CHUNK_ROWS = 2048  # query rows per distance block: bounds memory at CHUNK_ROWS x reference
NEAR_COPY_PERCENTILE = 1.0
PR_NEIGHBOURS = 3  # the paper's k


def _blocks(queries: np.ndarray, reference: np.ndarray):
    """(start, squared distances of a block of query rows to every reference row); only one
    block of queries is ever held in float64, whatever the dtype and size of the set."""
    r = np.asarray(reference, dtype=np.float64)
    r2 = (r * r).sum(axis=1)
    for s in range(0, len(queries), CHUNK_ROWS):
        block = np.asarray(queries[s:s + CHUNK_ROWS], dtype=np.float64)
        d2 = (block * block).sum(axis=1)[:, None] + r2[None, :] - 2.0 * block @ r.T
        yield s, np.maximum(d2, 0.0)


def nearest_distances(queries: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(N,) Euclidean distance from each query row to its nearest reference row."""
    out = np.empty(len(queries))
    for s, d2 in _blocks(queries, reference):
        out[s:s + len(d2)] = np.sqrt(d2.min(axis=1))
    return out


def kth_neighbour_radii(x: np.ndarray, k: int = PR_NEIGHBOURS) -> np.ndarray:
    """(N,) distance of each row to its k-th nearest other row of the same set."""
    out = np.empty(len(x))
    for s, d2 in _blocks(x, x):
        rows = np.arange(len(d2))
        d2[rows, s + rows] = np.inf  # a row is not its own neighbour
        out[s:s + len(d2)] = np.sqrt(np.partition(d2, k - 1, axis=1)[:, k - 1])
    return out


def coverage(queries: np.ndarray, reference: np.ndarray, radii: np.ndarray) -> float:
    """Share of query rows within some reference row's radius."""
    inside = np.zeros(len(queries), dtype=bool)
    r2 = np.asarray(radii, dtype=np.float64) ** 2
    for s, d2 in _blocks(queries, reference):
        inside[s:s + len(d2)] = (d2 <= r2[None, :]).any(axis=1)
    return float(inside.mean()) if len(inside) else float("nan")


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = PR_NEIGHBOURS
                     ) -> tuple[float, float]:
    """(precision, recall): fake rows inside the real manifold, real rows inside the fake one."""
    if len(real) <= k or len(fake) <= k:
        return float("nan"), float("nan")
    return (coverage(fake, real, kth_neighbour_radii(real, k)),
            coverage(real, fake, kth_neighbour_radii(fake, k)))


def novelty(generated: np.ndarray, train: np.ndarray, held_out: np.ndarray
            ) -> dict[str, float]:
    """Nearest-training-image distances of a generated set against real held-out images (rows
    are flattened pixels or features, the same space for all three)."""
    gen_d = nearest_distances(generated, train)
    held_d = nearest_distances(held_out, train)
    threshold = float(np.percentile(held_d, NEAR_COPY_PERCENTILE))
    return {"nn_median": float(np.median(gen_d)), "nn_median_held_out": float(np.median(held_d)),
            "near_copy_threshold": threshold,
            "near_copy_share": float((gen_d < threshold).mean()),
            "near_copy_share_held_out": float((held_d < threshold).mean())}
