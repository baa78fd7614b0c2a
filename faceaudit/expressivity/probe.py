"""Linear probes: the certified floor under every expressivity estimate, and the critics' starting point.

A probe is a regularised linear predictive model q(y | x) of the attribute from the features. Fitted on
some rows and scored on others, it gives the Barber-Agakov lower bound

    I(X; Y) >= H(Y) + E[log q(Y | X)]

whatever q is, so a cross-fitted probe (each row scored by a probe that never saw it) is a floor the
neural estimate must reach: a critic that ends below a plain linear probe has lost information.

* categorical attribute: multinomial logistic regression (scikit-learn, L-BFGS), its inverse
  regularisation C chosen by inner cross-validation on the fitting rows (held-out log-loss, a
  warm-started path from strong to weak regularisation);
* continuous attribute: linear regression with a Gaussian predictive N(y; x.w + b, s^2), regularised
  by a ridge or a cut to the top principal components, chosen by exact leave-one-out cross-validation and s^2 the leave-one-out mean squared residual
  (so the predictive is calibrated for rows it has not seen). For the floor a number is first
  replaced by its normal scores (ties spread by uniform noise first): an increasing map that keeps
  the MI (or lowers it, for the spread), after which h = log(2 pi e) / 2 exactly.

The same probe, written as a critic, is the linear head every neural critic starts from (see
:mod:`critics`): T(x, y) = log q(y | x) - log p(y).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

_RIDGE_GRID = np.logspace(-3, 4, 22)  # ridge strength per unit of the features' (standardised) variance x rows / 1000
_C_GRID = np.logspace(-3.0, 1.0, 9)  # logistic regression's inverse regularisation, strong to weak
_INNER_FOLDS = 3


@dataclass(frozen=True)
class Probe:
    """A fitted linear probe. Continuous: y ~ N(x.w + b, s2) (w (d,), b, s2). Categorical: log q(c | x) =
    log_softmax(x.w + b) with w (d, C), b (C,) over `n_classes` classes (absent classes get b = -1e4).
    `reg` is the chosen regularisation: logistic C; for a number a ridge strength (> 0) or minus the
    number of top principal components kept (< 0)."""

    w: np.ndarray
    b: np.ndarray | float
    s2: float
    n_classes: int
    reg: float

    def log_q(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """log q(y_i | x_i) for every row (nats)."""
        z = np.asarray(x, dtype=np.float64) @ self.w + self.b
        if self.n_classes == 0:
            r = np.asarray(y, dtype=np.float64) - z
            return -0.5 * (r * r / self.s2 + math.log(2 * math.pi * self.s2))
        z = z - z.max(1, keepdims=True)
        lp = z - np.log(np.exp(z).sum(1, keepdims=True))
        return lp[np.arange(len(z)), np.asarray(y, dtype=np.int64)]


def fit_probe(
    x: np.ndarray | None, y: np.ndarray, n_classes: int, *, seed: int = 0,
    val: tuple[np.ndarray, np.ndarray] | None = None, reg: float | None = None, basis: RidgeBasis | None = None,
) -> Probe:
    """Fit the probe of `y` (standardised float, or int codes below `n_classes`) on the rows `x` (m, d).

    The regularisation is `reg` when given; else, continuous: the ridge with the least exact
    leave-one-out error on these rows; categorical: the C with the least log-loss on the validation
    rows `val` (x, y) along a warm-started path, or, without `val`, on a stratified third of these
    rows held out for the choice (the final fit then uses all of them). Test rows never enter.
    `basis` (:func:`ridge_basis` of the same rows) saves the continuous fit its eigendecomposition."""
    if n_classes == 0:
        xx = None if basis is not None else np.asarray(x, dtype=np.float64)
        return _fit_ridge(xx, np.asarray(y, dtype=np.float64), reg, basis)
    return _fit_logistic(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.int64), int(n_classes), seed, val,
                         reg)


@dataclass(frozen=True)
class RidgeBasis:
    """The eigendecomposition ridge fits need from some rows of the features, whatever the attribute:
    column means `xm`, eigenvalues `lam` and the rows' coordinates `z` in the eigenbasis, and the map
    `back` from coefficients in that basis to weights on the features. Computed once per row set."""

    xm: np.ndarray
    lam: np.ndarray
    z: np.ndarray
    back: np.ndarray  # (d, k): w = back @ coef


def ridge_basis(x: np.ndarray) -> RidgeBasis:
    """Eigendecomposition of the centred rows `x` (m, d): of the d x d scatter when d <= m, else of the
    m x m Gram matrix (the fitted values lie in the row space either way)."""
    x = np.asarray(x, dtype=np.float64)
    m, d = x.shape
    xm = x.mean(0)
    xc = x - xm
    if d <= m:
        lam, v = np.linalg.eigh(xc.T @ xc)
        lam = np.clip(lam, 0.0, None)
        return RidgeBasis(xm, lam, xc @ v, v)
    lam, u = np.linalg.eigh(xc @ xc.T)
    keep = lam > 1e-9 * max(float(lam.max()), 1e-300)
    lam, u = lam[keep], u[:, keep]
    root = np.sqrt(lam)
    return RidgeBasis(xm, lam, u * root, xc.T @ (u / root))


def _fit_ridge(x: np.ndarray | None, y: np.ndarray, reg: float | None, basis: RidgeBasis | None = None) -> Probe:
    """Linear regression regularised by a ridge or by a cut to the top principal components, whichever
    has the least exact leave-one-out error (one eigendecomposition serves every candidate). A ridge
    suits a signal spread over many directions; the cut suits one concentrated in the top-variance
    directions, where a ridge in hundreds of dimensions still fits noise. `reg` > 0 is a ridge strength,
    `reg` < 0 keeps the top -reg components."""
    bs = basis if basis is not None else ridge_basis(x)  # type: ignore[arg-type]
    m = len(y)
    ym = y.mean()
    yc = y - ym
    zy = bs.z.T @ yc
    z2 = bs.z * bs.z
    k_all = len(bs.lam)
    top = np.argsort(bs.lam)[::-1]  # components by variance, largest first

    def shrink_of(r: float) -> np.ndarray:
        if r > 0:
            return 1.0 / (bs.lam + r)
        out = np.zeros(k_all)
        keep = top[: int(-r)]
        out[keep] = 1.0 / np.maximum(bs.lam[keep], 1e-12 * max(float(bs.lam.max()), 1e-300))
        return out

    if reg is None:
        ks = [k for k in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if k < min(k_all, m - 2)]
        cands = [float(a) for a in _RIDGE_GRID * (m / 1000.0)] + [-float(k) for k in ks]
    else:
        cands = [float(reg)]
    best = (math.inf, cands[0])
    for r in cands:
        shrink = shrink_of(r)
        fitted = bs.z @ (shrink * zy)
        h = z2 @ shrink + 1.0 / m  # leverage, the intercept included
        loo = (yc - fitted) / np.clip(1.0 - h, 1e-6, None)
        mse = float(np.mean(loo * loo))
        if mse < best[0]:
            best = (mse, r)
    s2, r = best
    w = bs.back @ (shrink_of(r) * zy)
    b = float(ym - bs.xm @ w)
    return Probe(w=w, b=b, s2=max(s2, 1e-6), n_classes=0, reg=r)


def _logistic(c: float, warm: bool) -> object:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=300, tol=1e-4, warm_start=warm)


def _fit_logistic(x: np.ndarray, y: np.ndarray, n_classes: int, seed: int,
                  val: tuple[np.ndarray, np.ndarray] | None, reg: float | None) -> Probe:
    """Multinomial logistic regression; C along a warm-started path from strong to weak regularisation,
    stopped once the held-out log-loss has risen twice in a row."""
    if len(np.unique(y)) < 2:  # one class among the fitting rows: q(c | x) = its smoothed frequency
        counts = np.bincount(y, minlength=n_classes) + 0.5
        return Probe(w=np.zeros((x.shape[1], n_classes)), b=np.log(counts / counts.sum()), s2=1.0,
                     n_classes=n_classes, reg=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings along the path: the held-out loss judges the fit
        if reg is None:
            if val is not None:
                xtr, ytr, xva, yva, refit = x, y, np.asarray(val[0], dtype=np.float64), np.asarray(val[1]), False
            else:
                te = _stratified_folds(y, _INNER_FOLDS, np.random.default_rng([int(seed), 77]))[0]
                tr = np.setdiff1d(np.arange(len(y)), te)
                xtr, ytr, xva, yva, refit = x[tr], y[tr], x[te], y[te], True
            mdl = _logistic(float(_C_GRID[0]), True)
            best, rising, prev = (math.inf, float(_C_GRID[0]), None), 0, math.inf
            for c in _C_GRID:
                mdl.set_params(C=float(c))
                mdl.fit(xtr, ytr)
                loss = -float(_full_log_proba(mdl, xva, n_classes)[np.arange(len(yva)), yva].sum())
                if loss < best[0]:
                    best = (loss, float(c), _probe_of(mdl, xtr, n_classes, float(c)))
                rising = rising + 1 if loss >= prev else 0
                prev = loss
                if rising >= 2:
                    break
            if not refit:
                return best[2]
            reg = best[1]
        mdl = _logistic(float(reg), False).fit(x, y)
    return _probe_of(mdl, x, n_classes, float(reg))


def _probe_of(mdl: object, x: np.ndarray, n_classes: int, c: float) -> Probe:
    """A fitted scikit-learn LogisticRegression (fitted on `x`) as a Probe over all `n_classes` classes.
    A class absent from the fitting rows gets the probability 0.5 / (rows + 0.5 classes) on average
    over those rows (a constant logit), not 0: a test row of that class must not score -inf."""
    d = x.shape[1]
    w = np.zeros((d, n_classes))
    b = np.zeros(n_classes)
    cls = mdl.classes_.astype(np.int64)  # type: ignore[attr-defined]
    if len(cls) == 2:  # scikit-learn's binary form: one logit for the second class
        w[:, cls[1]] = mdl.coef_[0]  # type: ignore[attr-defined]
        b[cls[0]], b[cls[1]] = 0.0, float(mdl.intercept_[0])  # type: ignore[attr-defined]
    else:
        w[:, cls] = mdl.coef_.T  # type: ignore[attr-defined]
        b[cls] = mdl.intercept_  # type: ignore[attr-defined]
    absent = np.setdiff1d(np.arange(n_classes), cls)
    if len(absent):
        z = x @ w[:, cls] + b[cls]
        lse = float(np.mean(np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)))
        b[absent] = lse + math.log(0.5 / (len(x) + 0.5 * n_classes))
    return Probe(w=w, b=b, s2=1.0, n_classes=n_classes, reg=c)


def _full_log_proba(mdl: object, x: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.full((len(x), n_classes), math.log(1e-6))
    out[:, mdl.classes_.astype(np.int64)] = mdl.predict_log_proba(x)  # type: ignore[attr-defined]
    return out


def _stratified_folds(y: np.ndarray, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """`k` folds of positions, each class dealt out in turn after a shuffle."""
    fold = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        pos = np.flatnonzero(y == c)
        pos = pos[rng.permutation(len(pos))]
        fold[pos] = (np.arange(len(pos)) + int(rng.integers(k))) % k
    return [np.flatnonzero(fold == f) for f in range(k)]


def dequantize(y: np.ndarray, seed: int) -> np.ndarray:
    """`y` with tied values spread by independent uniform noise as wide as the smallest gap between
    distinct values (ages in whole years, yaw in whole degrees). I(X; Y + U) <= I(X; Y) for noise U
    independent of both, so a floor computed on the spread values is still a floor for `y`.
    Untied values are returned as they are."""
    y = np.asarray(y, dtype=np.float64)
    u = np.unique(y)
    if len(u) == len(y):
        return y
    gap = float(np.diff(u).min()) if len(u) > 1 else 1.0
    return y + np.random.default_rng([int(seed), 31]).uniform(-0.5, 0.5, size=len(y)) * gap


def floor_target(y: np.ndarray, n_classes: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The attribute as the floor's probe predicts it, and each row's -log p(y_i) term.

    A category: its codes, with the plug-in class frequencies (their mean is H(Y)). A number: its normal
    scores after :func:`dequantize` (ties spread), an increasing map of Y + U, so that
    I(X; scores) = I(X; Y + U) <= I(X; Y); the scores are standard normal, so h = log(2 pi e) / 2 exactly,
    and a linear-Gaussian predictive fits a skewed attribute (ages from 1 to 100) far better than the
    raw values."""
    if n_classes:
        y = np.asarray(y, dtype=np.int64)
        p = np.bincount(y, minlength=n_classes) / len(y)
        return y, -np.log(p[y])
    from faceaudit.expressivity.reduction import normal_scores

    z = normal_scores(dequantize(y, seed))
    return z, np.full(len(z), 0.5 * math.log(2 * math.pi * math.e))


def probe_terms(probe: Probe, x: np.ndarray, y: np.ndarray, neg_log_p: np.ndarray) -> np.ndarray:
    """Each row's Barber-Agakov term log q(y_i | x_i) - log p(y_i); their mean is the probe's bound."""
    return probe.log_q(x, y) + neg_log_p


def head_from_probe(probe: Probe, d_pad: int, c_pad: int) -> dict[str, np.ndarray]:
    """The probe as the critic's linear head (zero-padded to `d_pad` inputs and `c_pad` classes).

    Continuous: keys Lw, Lb, Ls = log s^2, Lq = the y^2 coefficient 1/2 - 1/(2 s^2) of
    log N(y; m, s^2) - log N(y; 0, 1). Categorical: V, v0 (the logits, whose log-softmax is
    log q(c | x)) and eb = -log of the class frequencies in the fitting rows' probe, so that the
    class logits start at log q(c | x) - log p(c)."""
    d = probe.w.shape[0]
    if probe.n_classes == 0:
        lw = np.zeros((d_pad, 1))
        lw[:d, 0] = probe.w
        return {"Lw": lw, "Lb": np.full((1, 1), float(probe.b)), "Ls": np.full((1, 1), math.log(probe.s2)),
                "Lq": np.full((1, 1), 0.5 - 0.5 / probe.s2)}
    C = probe.n_classes
    v = np.zeros((d_pad, c_pad))
    v[:d, :C] = probe.w
    v0 = np.full((1, c_pad), -1e4)
    v0[0, :C] = probe.b
    return {"V": v, "v0": v0}

__all__ = [
    "Probe",
    "RidgeBasis",
    "dequantize",
    "fit_probe",
    "floor_target",
    "head_from_probe",
    "probe_terms",
    "ridge_basis",
]
