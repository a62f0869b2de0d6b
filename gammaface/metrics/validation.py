"""Input checks shared by the metric functions: malformed input is a ValueError with a sentence."""

from __future__ import annotations

import numpy as np


def labels(x: object, name: str) -> np.ndarray:
    """A 1-D integer array; integral floats and booleans are accepted, anything else refused."""
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}.")
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64, copy=False)
    if np.issubdtype(arr.dtype, np.floating):
        if np.isnan(arr).any():
            raise ValueError(f"{name} contains NaN at index {int(np.isnan(arr).argmax())}.")
        if not np.all(arr == np.round(arr)):
            bad = int((arr != np.round(arr)).argmax())
            raise ValueError(f"{name} must hold integer labels, got {arr[bad]!r} at index {bad}.")
        return arr.astype(np.int64)
    raise ValueError(f"{name} must hold integer labels, got values of type {arr.dtype}.")


def scores(x: object, name: str = "scores") -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}.")
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN at index {int(np.isnan(arr).argmax())}.")
    out = (arr < 0) | (arr > 1)
    if out.any():
        i = int(out.argmax())
        raise ValueError(f"{name} must lie in [0, 1], got {arr[i]!r} at index {i}.")
    return arr


def same_length(**arrays: np.ndarray) -> int:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise ValueError(f"inputs must have the same length: {shown}.")
    return next(iter(lengths.values()))


def binary_groups(groups: np.ndarray, name: str = "groups") -> np.ndarray:
    extra = np.setdiff1d(np.unique(groups), [0, 1])
    if extra.size:
        raise ValueError(f"{name} must be a binary 0/1 group here, got value {int(extra[0])}.")
    return groups


def matrix01(x: object, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D 0/1 matrix, got shape {arr.shape}.")
    if arr.dtype != bool:
        if np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
            raise ValueError(f"{name} contains NaN.")
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} must hold only 0 and 1.")
    return arr.astype(np.int64)
