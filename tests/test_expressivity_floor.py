"""The probe floor, cross-fitting and the reduction that keeps information, against known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from faceaudit.expressivity import estimate_expressivity, estimate_many
from faceaudit.expressivity.api import _folds
from faceaudit.expressivity.probe import dequantize, fit_probe, floor_target, probe_terms
from helpers import FAST, one_torch_thread, binary_mixture_mi, gaussian_task  # noqa: F401  (autouse fixture)


def dense_factor_task(n: int, d: int, mi: float, seed: int):
    """Y = b'X + e with X ~ N(0, F F' + D) (5 strong factors) and b dense but orthogonal to the factors:
    the top principal components (the factors first) keep only part of the signal.
    Closed form: I = 1/2 log(1 + b'Sb / var(e))."""
    r = np.random.default_rng(seed)
    F = r.normal(size=(d, 5)) * math.sqrt(3.0)
    S = F @ F.T + np.diag(r.uniform(0.5, 1.5, size=d))
    b = r.normal(size=d)
    b -= F @ np.linalg.lstsq(F, b, rcond=None)[0]
    b *= math.sqrt((math.exp(2 * mi) - 1) / float(b @ S @ b))
    x = r.normal(size=(n, d)) @ np.linalg.cholesky(S).T
    return x.astype(np.float32), x @ b + r.normal(size=n)


def test_folds_score_every_row_once():
    folds = _folds(601, 5, seed=3)
    allrows = np.concatenate(folds)
    assert sorted(allrows.tolist()) == list(range(601))
    assert {len(f) for f in folds} <= {120, 121}
    assert all(np.array_equal(a, b) for a, b in zip(folds, _folds(601, 5, seed=3)))  # seeded


@pytest.mark.parametrize("d, m", [(20, 400), (300, 120)])  # the d x d and the Gram-matrix paths
def test_ridge_probe_is_ridge_regression(d, m):
    rng = np.random.default_rng(d)
    x = rng.normal(size=(m, d))
    y = x[:, :3].sum(1) + rng.normal(size=m)
    p = fit_probe(x, y, 0)
    assert p.reg > 0  # a signal on 3 of the raw coordinates: a ridge, not a cut to top components
    ref = Ridge(alpha=p.reg).fit(x, y)
    np.testing.assert_allclose(p.w, ref.coef_, rtol=1e-6, atol=1e-8)
    assert p.b == pytest.approx(ref.intercept_, abs=1e-8)
    # the chosen ridge has the least leave-one-out error: a much weaker or stronger one is no better
    def loo(a: float) -> float:
        return float(np.mean([(y[i] - Ridge(alpha=a).fit(np.delete(x, i, 0), np.delete(y, i)).predict(x[i:i + 1])[0])
                              ** 2 for i in range(m)]))

    assert loo(p.reg) <= min(loo(p.reg * 30), loo(p.reg / 30)) * (1 + 1e-4)


def test_a_signal_in_the_top_components_gets_a_cut_not_a_ridge():
    # X = w Y + noise in 400 dimensions: the signal is the top principal component, and keeping it alone
    # beats every ridge (a ridge still fits 400 noisy coefficients)
    rng = np.random.default_rng(3)
    y = rng.normal(size=1500)
    w = rng.normal(size=400)
    x = y[:, None] * w / np.linalg.norm(w) * 2 + rng.normal(size=(1500, 400))
    p = fit_probe(x, y, 0)
    assert p.reg == -1
    test_x, test_y = x[:500], y[:500]
    p_train = fit_probe(x[500:], y[500:], 0)
    ridge = fit_probe(x[500:], y[500:], 0, reg=float(1.5))
    assert probe_terms(p_train, test_x, test_y, np.zeros(500)).mean() > probe_terms(ridge, test_x, test_y,
                                                                                    np.zeros(500)).mean()


def test_floor_is_the_closed_form_for_a_linear_gaussian():
    # the Gaussian probe is the true model here: its cross-fitted bound is the MI, within sampling error,
    # and the estimate reaches it
    x, y, truth = gaussian_task(4000, 8, 0.7, seed=2)
    r = estimate_expressivity(x, y, progress=False, null=False, **FAST)
    assert abs(r.probe_mi - truth) < 3 * r.probe_se + 0.01, (r.probe_mi, r.probe_se, truth)
    assert r.ci_high >= r.probe_mi
    assert len(r.folds_mi) == 5 and r.options["folds"] == 5


def test_floor_is_the_numerical_integral_for_a_binary_mixture():
    # equal-covariance Gaussian classes: logistic regression is the Bayes classifier, so its floor is the MI
    mu, n = 1.0, 4000
    rng = np.random.default_rng(5)
    c = rng.integers(0, 2, size=n)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    x[:, 0] += (2 * c - 1) * mu
    truth = binary_mixture_mi(mu)
    r = estimate_expressivity(x, c, kind="categorical", progress=False, null=False, **FAST)
    assert abs(r.probe_mi - truth) < 3 * r.probe_se + 0.01, (r.probe_mi, r.probe_se, truth)
    assert abs(r.mi - truth) < 0.05, (r.mi, truth)


def test_dense_signal_in_wide_correlated_features_is_kept():
    # the failure class of a PCA to 64 components: 128 factor-correlated features, a dense coefficient
    # vector; read whole, the estimate is within 10% of the closed form, and a 64-component PCA is not
    x, y = dense_factor_task(3000, 128, 0.75, seed=9)
    r = estimate_expressivity(x, y, progress=False, null=False, **FAST)
    assert r.reduced_dim is None and r.reduction_loss is None
    assert abs(r.mi - 0.75) < 0.075, r.mi
    low = estimate_expressivity(x, y, progress=False, null=False, max_dim=64, **FAST)
    assert low.reduced_dim == 64 and low.reduction_loss > 0.1
    assert any("keep only" in w for w in low.warnings), low.warnings
    assert low.mi < r.mi - 0.1


def test_a_wide_layer_keeps_the_width_its_probe_needs():
    # 400 features, max_dim 256: signal in the top-variance directions needs 128 components, no loss
    rng = np.random.default_rng(4)
    n = 2000
    y = rng.normal(size=n)
    top = rng.normal(size=(n, 20)) * 4 + y[:, None] * 0.8
    x = np.c_[top, rng.normal(size=(n, 380))].astype(np.float32)
    r = estimate_many({"wide": x}, {"y": (y, "continuous")}, progress=False, null=False, max_dim=256,
                      **FAST)[("wide", "y")]
    assert r.reduced_dim == 128 and r.reduction_loss <= 0.02
    assert not any("keep only" in w for w in r.warnings)


def test_the_floor_of_a_tied_attribute_is_finite_and_a_lower_bound():
    # ages in whole years: spread within their ties, then normal scores; the floor stays below the
    # closed-form MI of the continuous latent
    x, y, truth = gaussian_task(3000, 4, 0.8, seed=8)
    age = np.round(40 + 12 * y)
    z, nl = floor_target(age, 0, seed=1)
    assert len(np.unique(z)) == len(z) and np.isfinite(nl).all()
    assert nl[0] == pytest.approx(0.5 * math.log(2 * math.pi * math.e))
    spread = dequantize(age, 1)
    assert np.all(np.abs(spread - age) <= 0.5)
    r = estimate_expressivity(x, age, progress=False, null=False, **FAST)
    assert math.isfinite(r.probe_mi) and 0.3 < r.probe_mi < truth + 3 * r.probe_se


def test_an_absent_class_scores_a_finite_floor():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 3))
    y = rng.integers(0, 2, size=200)
    p = fit_probe(x, y, 3)  # class 2 never seen
    terms = probe_terms(p, x[:5], np.array([2, 2, 0, 1, 2]), np.zeros(5))
    assert np.isfinite(terms).all() and terms[0] < math.log(1 / 100)


def test_six_hundred_rows_give_a_usable_interval():
    # a quick audit's size: every row is a test row, so the interval is narrow and the null near 0
    rng = np.random.default_rng(12)
    n = 600
    c = rng.integers(0, 2, size=n)
    x = rng.normal(size=(n, 128)).astype(np.float32)
    x[:, :8] += (c[:, None] - 0.5) * 0.6
    r = estimate_expressivity(x, c, kind="categorical", progress=False, **FAST)
    assert (r.ci_high - r.ci_low) / 2 <= 0.12, (r.ci_low, r.ci_high)
    assert abs(r.null_mi) <= 0.05, r.null_mi
    assert r.ci_high >= r.probe_mi


def test_ledoit_wolf_covariance_matches_scikit_learn():
    from sklearn.covariance import ledoit_wolf

    from faceaudit.expressivity.critics import ledoit_wolf_cov

    rng = np.random.default_rng(0)
    for m, d in ((300, 50), (40, 120)):  # more rows than features, and fewer
        r = rng.normal(size=(m, d)) @ rng.normal(size=(d, d))
        r -= r.mean(0)
        np.testing.assert_allclose(ledoit_wolf_cov(r), ledoit_wolf(r, assume_centered=True)[0], rtol=1e-9, atol=1e-9)
