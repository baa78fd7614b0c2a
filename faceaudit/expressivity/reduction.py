"""Gaussianisation and, for very wide layers only, a reduction whose information loss is measured.

MI is invariant under invertible maps, so replacing each feature by its normal
scores (an increasing map per coordinate) costs nothing and undoes coordinate-wise
nonlinearities, while any
projection can only lose information: an attribute's signal need not lie in a
layer's top-variance directions. So the critics read every standardised feature
up to ``max_dim`` (default 1,024; a critic's first layer is one matmul). Wider
features (``gridK`` pooling, ``flatten``, unpooled maps) are projected on their top
principal components (randomized SVD, float32, fitted on a row subsample) and
whitened; for each attribute the width kept is grown from 128 until a linear
probe on the projection reaches 98% of the same probe on all the features (see
:func:`choose_width`). The width is reported as ``reduced_dim`` and the loss
that remains as ``reduction_loss``.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import special, stats

DEFAULT_MAX_DIM = 1024
MAX_REDUCTION_LOSS = 0.02  # a reduction keeps at least 98% of the linear probe's information
_WIDTH_ROWS = 3000  # rows the probe comparison of widths uses
_MIN_WIDTH = 128
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


def gaussianize(x: np.ndarray) -> np.ndarray:
    """Each feature replaced by its normal scores (see :func:`normal_scores`; tied values share their
    average rank, a constant feature becomes 0), float32. An increasing map of every coordinate, so the
    MI with any attribute is unchanged, while a coordinate-wise nonlinearity of the features (a cube,
    a saturation, a skew) is undone before the critics read them: a linear probe and a small MLP
    then see what they can model."""
    x = np.asarray(x)
    n = x.shape[0]
    out = np.empty(x.shape, dtype=np.float32)
    for start in range(0, x.shape[1], 256):  # column blocks bound the float64 rank arrays' memory
        ranks = stats.rankdata(x[:, start : start + 256], axis=0, method="average")
        out[:, start : start + 256] = special.ndtri((ranks - 0.5) / n)
    return out


def feature_views(x: np.ndarray) -> np.ndarray:
    """Every feature twice, standardised and through its normal scores: (n, 2d) float32. Both are
    invertible maps of each coordinate, so the MI is unchanged; a probe or a critic then reads whichever
    view makes the relation simpler. Normal scores undo a coordinate-wise nonlinearity (a cube, a
    saturation, a skew), but bend a relation that was linear in a feature whose shape comes from the
    attribute itself (a uniform or heavy-tailed attribute seen through noise), which the standardised
    view keeps linear."""
    return np.concatenate([standardize(x), gaussianize(x)], axis=1)


def reduce_features(x: np.ndarray, max_dim: int | None, *, seed: int = 0) -> tuple[np.ndarray, int | None]:
    """The critics' input: both views of `x` (:func:`feature_views`, 2d columns) and, when `x` has more
    than `max_dim` features, the views' projection on their top `max_dim` principal components.

    Returns (float32 array, reduced_dim or None when no reduction was made).
    The projection is fitted on at most 20,000 rows with a seeded randomized SVD,
    then applied to all rows in chunks; components are whitened.
    """
    if max_dim is None or x.shape[1] <= max_dim:
        return feature_views(x), None
    x = feature_views(x)
    n = x.shape[0]
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


def choose_width(
    x: np.ndarray, x_red: np.ndarray, rows: np.ndarray, y: np.ndarray, n_classes: int, *, seed: int = 0,
) -> tuple[int, float, float]:
    """The narrowest leading block of the projection `x_red` that keeps the attribute's linear information.

    `y` is the attribute on the rows `rows` of the layer's features `x` and of `x_red`. A 3-fold
    cross-fitted probe bound of `y` is computed on at most 3,000 of those rows from both views of
    all the features (:func:`feature_views`, through the rows' full-rank coordinates, which an L2-regularised
    linear probe cannot tell from the features themselves) and from the first 128, 256, ... columns of
    `x_red`; the first width within ``MAX_REDUCTION_LOSS`` of the full bound is kept (else all of
    `x_red`). Returns (width, relative loss at that width, full bound in nats); a loss is 0 when the
    full bound is not above 0.01 nats (nothing to lose)."""
    from faceaudit.expressivity.probe import fit_probe, floor_target, probe_terms

    n, k_max = len(rows), x_red.shape[1]
    rng = np.random.default_rng([int(seed), 515])
    pos = np.sort(rng.permutation(n)[: min(n, _WIDTH_ROWS)])
    sub = rows[pos]
    yy, nl = floor_target(y[pos], n_classes, seed=seed)
    fold = rng.permutation(len(pos)) % 3

    def bound(x: np.ndarray) -> float:
        terms = np.empty(len(pos))
        for f in range(3):
            te, tr = fold == f, fold != f
            p = fit_probe(x[tr], yy[tr], n_classes, seed=seed)
            terms[te] = probe_terms(p, x[te], yy[te], nl[te])
        return float(terms.mean())

    xs = feature_views(x[sub]).astype(np.float64)
    xs -= xs.mean(0)
    lam, u = np.linalg.eigh(xs @ xs.T)  # full-rank coordinates of the rows: same Gram matrix, same probe
    keep = lam > 1e-9 * max(float(lam.max()), 1e-300)
    full = bound(u[:, keep] * np.sqrt(lam[keep]))
    widths = [w for w in (_MIN_WIDTH * 2**i for i in range(32)) if w < k_max] + [k_max]
    loss = 0.0
    for w in widths:
        got = bound(x_red[sub, :w])
        loss = max(0.0, (full - got) / full) if full > 0.01 else 0.0
        if loss <= MAX_REDUCTION_LOSS:
            return w, loss, full
    return k_max, loss, full

__all__ = [
    "DEFAULT_MAX_DIM",
    "HEAVY_TAIL_IQR",
    "MAX_REDUCTION_LOSS",
    "choose_width",
    "feature_views",
    "gaussianize",
    "normal_scores",
    "reduce_features",
    "scale_attribute",
    "standardize",
]
