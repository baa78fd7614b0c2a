"""Seeded row subsampling for the estimators."""

from __future__ import annotations

import numpy as np

from faceaudit.errors import InputError

__all__ = ["subsample_rows"]


def subsample_rows(n_total: int, n_max: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most `n_max` of `n_total` rows, drawn uniformly without replacement.

    Why: the expressivity estimators need a few thousand rows, not the 470k of
    a large benchmark; a seeded uniform subsample keeps the estimate unbiased
    and reproducible, and sorting keeps rows in manifest order. Returns all
    rows when `n_max` is None or at least `n_total`.
    """
    if n_total < 0:
        raise InputError(f"n_total must be non-negative, got {n_total}.")
    if n_max is None or n_max >= n_total:
        return np.arange(n_total, dtype=np.int64)
    if n_max < 1:
        raise InputError(f"n_max must be at least 1 row, got {n_max}.")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_total, size=n_max, replace=False)).astype(np.int64)
