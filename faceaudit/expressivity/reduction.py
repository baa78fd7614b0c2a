"""Standardisation and dimension reduction of layer features.

MI is invariant under invertible maps, so standardising costs nothing; a
critic on 10^4-10^5 raw dimensions, however, overfits and is slow. Features
wider than ``max_dim`` are projected on their top ``max_dim`` principal
components (randomized SVD, float32, computed from a row subsample so memory
stays bounded) and whitened. The number kept is reported as ``reduced_dim``.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import special, stats

DEFAULT_MAX_DIM = 64
_PCA_ROWS = 20000  # rows used to fit the projection (bounded memory)


def standardize(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per column (constant columns become 0), float32."""
    x = np.asarray(x, dtype=np.float32)
    mu = x.mean(axis=0, dtype=np.float64)
    sd = x.std(axis=0, dtype=np.float64)
    sd[sd < 1e-12] = 1.0
    return ((x - mu) / sd).astype(np.float32)


HEAVY_TAIL_IQR = 0.5  # a standardised attribute's middle half narrower than this (a Gaussian's: 1.35) is heavy-tailed


def normal_scores(y: np.ndarray) -> np.ndarray:
    """Phi^-1((rank - 1/2) / n) of each value (tied values share their average rank): an increasing map
    of y, so I(X; Y) is unchanged, with a standard normal distribution whatever y's."""
    ranks = stats.rankdata(np.asarray(y, dtype=np.float64), method="average")
    return special.ndtri((ranks - 0.5) / len(ranks))


def scale_attribute(y: np.ndarray) -> tuple[np.ndarray, str | None]:
    """A continuous attribute as the critics read it, and a note when it was not simply standardised.

    Standardised (zero mean, unit variance) as a rule. When its middle half spans less than
    ``HEAVY_TAIL_IQR`` standard deviations (a sinh or cube of a latent, a Student-t with 2 degrees of
    freedom, a Cauchy), almost every row sits in one bump of the critic's basis and a few rows lie
    tens of standard deviations away, where the critic extrapolates wildly on held-out rows; the
    attribute is then replaced by its normal scores, a monotone map that leaves the MI unchanged.
    """
    y = np.asarray(y, dtype=np.float64)
    z = (y - y.mean()) / y.std()
    q75, q25 = np.percentile(z, [75, 25])
    if q75 - q25 >= HEAVY_TAIL_IQR:
        return z, None
    return normal_scores(y), (
        f"attribute is heavy-tailed (its middle half spans {q75 - q25:.2f} standard deviations; a Gaussian's "
        "spans 1.35), so it was replaced by its normal scores, an increasing map that leaves the MI unchanged."
    )


def reduce_features(x: np.ndarray, max_dim: int | None, *, seed: int = 0) -> tuple[np.ndarray, int | None]:
    """Standardise `x` and, when wider than `max_dim`, project it on its top principal components.

    Returns (reduced float32 array, reduced_dim or None when no reduction was made).
    The projection is fitted on at most 20,000 rows with a seeded randomized SVD,
    then applied to all rows in chunks; components are whitened.
    """
    x = standardize(x)
    n, d = x.shape
    if max_dim is None or d <= max_dim:
        return x, None
    k = int(min(max_dim, n - 1))
    rng = np.random.default_rng(seed)
    fit_rows = rng.choice(n, size=min(n, _PCA_ROWS), replace=False) if n > _PCA_ROWS else np.arange(n)
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        a = torch.from_numpy(x[fit_rows])
        _, s, v = torch.svd_lowrank(a, q=min(k + 10, min(a.shape)), niter=4)
    finally:
        torch.random.set_rng_state(gen_state)
    v = v[:, :k].numpy().astype(np.float32)
    out = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, 8192):
        out[start : start + 8192] = x[start : start + 8192] @ v
    return standardize(out), k
