"""95 % intervals for paired differences: Student t over seeds, percentile bootstrap over images.

A downstream arm is compared with the baseline trained from the same seed on the same real
images and scored on the same evaluation images, so the quantity with an interval is the
per-seed difference, not either level. Over seeds the interval is the t interval of the mean
difference; with one seed there is no spread over seeds to use, and the interval is a paired
bootstrap over the evaluation images (both classifiers' predictions resampled together), which
says how much the evaluation set alone moves the difference and nothing about training noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import stats

LEVEL = 0.95
NAN = float("nan")


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int  # seeds (t) or 1 (bootstrap)
    kind: str  # "t", "bootstrap" or "none"

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def below(self, zero: float = 0.0) -> bool:
        return bool(np.isfinite(self.high) and self.high < zero)

    def above(self, zero: float = 0.0) -> bool:
        return bool(np.isfinite(self.low) and self.low > zero)


def t_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """The Student t interval of the mean of `values` (NaNs dropped); with fewer than two finite
    values the bounds are NaN."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return Interval(NAN, NAN, NAN, 0, "none")
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, NAN, NAN, n, "none")
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * x.std(ddof=1) / np.sqrt(n))
    return Interval(mean, mean - half, mean + half, n, "t")


def paired_bootstrap(statistic: Callable[[np.ndarray], float], n: int, seed: int,
                     repeat: int = 1000, level: float = LEVEL) -> Interval:
    """Percentile interval of `statistic(rows)` over `repeat` resamples of the row indices
    0..n-1 drawn with replacement; the statistic computes the difference on the given rows of
    both prediction sets, so the pairing is kept. Non-finite resamples (a group left empty) are
    dropped."""
    if n == 0:
        return Interval(NAN, NAN, NAN, 0, "none")
    rng = np.random.default_rng(seed)
    point = float(statistic(np.arange(n)))
    values = np.array([statistic(rng.integers(0, n, n)) for _ in range(repeat)], dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return Interval(point, NAN, NAN, 1, "none")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return Interval(point, float(low), float(high), 1, "bootstrap")


def seeds_for_half_width(std: float, half_width: float, most: int = 1000) -> int | None:
    """The fewest seeds whose t interval of a mean with this standard deviation is no wider
    than `half_width` on each side (None if more than `most`)."""
    if not np.isfinite(std) or std <= 0:
        return 2
    for n in range(2, most + 1):
        if stats.t.ppf(0.5 + LEVEL / 2, n - 1) * std / np.sqrt(n) <= half_width:
            return n
    return None
