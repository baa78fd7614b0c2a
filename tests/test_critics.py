"""The critic's linear head, its attribute basis, the normalised held-out bound and the training partition
term, against known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import special, stats

from faceaudit.expressivity import critics, estimate_expressivity, get_estimator
from faceaudit.expressivity.training import _references, Job, evaluate
from test_expressivity import _one_thread, binary_mixture_mi, gaussian_task  # noqa: F401  (autouse fixture)


def _untrained_critic(x, y, n_classes, train, seed=0):
    """One critic as training starts: the closed-form linear head fitted on `train`, MLP part adding nothing."""
    d = x.shape[1]
    shape = critics.CriticShape(d, 32, 16, 32, n_classes, 16)
    lin = critics.linear_head_init(x[train], y[train], n_classes, d, n_classes)
    init = critics.init_params([seed], [d], shape, continuous=n_classes == 0, conditional=False, linear=[lin])
    return {k: torch.from_numpy(v) for k, v in init.items()}


def _bound(est, params, x, y, rows, continuous, refs=None):
    X = torch.from_numpy(x)[None]
    Y = torch.from_numpy(y.astype(np.float32 if continuous else np.int64))[None]
    idx = torch.from_numpy(rows.astype(np.int64))[None]
    aux = {} if continuous else {"class_valid": torch.ones((1, 1, int(y.max()) + 1), dtype=torch.bool)}
    if refs is not None:
        aux["ref_idx"] = torch.from_numpy(refs)[None]
    with torch.no_grad():
        v, se = evaluate(est, params, X, torch.zeros(1, dtype=torch.long), Y, idx, torch.ones_like(idx, dtype=torch.bool),
                         continuous, aux, max_cols=None, which="test")
    return float(v[0]), float(se[0])


def test_linear_head_starts_at_the_gaussian_critic():
    # for linear-Gaussian data the untrained critic is already (near) optimal: its held-out DV bound
    # matches the closed-form MI, within the test rows' sampling error
    x, y, truth = gaussian_task(12_000, 8, 0.7, seed=3)
    y = ((y - y.mean()) / y.std()).astype(np.float32)
    rows = np.random.default_rng(0).permutation(len(y))
    train, test = rows[:8000], rows[8000:]
    p = _untrained_critic(x, y, 0, train)
    value, se = _bound(get_estimator("mine"), p, x, y, test, True)
    assert abs(value - truth) < 3 * se + 0.01, (value, se, truth)
    assert value > 0.25  # a random critic would give about 0


def test_lda_head_starts_at_the_bayes_classifier():
    mu = 1.0
    rng = np.random.default_rng(4)
    n = 12_000
    c = rng.integers(0, 2, size=n)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    x[:, 0] += (2 * c - 1) * mu
    truth = binary_mixture_mi(mu)
    rows = rng.permutation(n)
    p = _untrained_critic(x, c, 2, rows[:8000])
    value, se = _bound(get_estimator("mine"), p, x, c, rows[8000:], False)
    assert abs(value - truth) < 3 * se + 0.01, (value, se, truth)


def test_normalised_bound_ignores_a_function_of_x():
    # T + h(x) has the same normalised critic as T, so with references the held-out bound does not move;
    # without them the DV bound pays for the wrong h
    x, y, truth = gaussian_task(6000, 4, 0.7, seed=5)
    y = ((y - y.mean()) / y.std()).astype(np.float32)
    rows = np.random.default_rng(1).permutation(len(y))
    train, test = rows[:4000], rows[4000:]
    est = get_estimator("mine")
    job = Job(x, "l", np.arange(len(y)), y, 0, seed=0, test_seed=1)
    refs = _references(job, test, 1024)
    assert not np.isin(refs, test).any()
    p = _untrained_critic(x, y, 0, train)
    base_norm, _ = _bound(est, p, x, y, test, True, refs)
    base_raw, _ = _bound(est, p, x, y, test, True)
    q = {k: v.clone() for k, v in p.items()}
    q["W3"][0, :, 0] = torch.from_numpy(np.random.default_rng(2).normal(0, 1.0, size=q["W3"].shape[1]).astype(np.float32))
    q["c3"][0, 0, 0] = 1.0  # g's first channel is the constant 1, so f's first channel adds h(x) to T
    shifted_norm, _ = _bound(est, q, x, y, test, True, refs)
    shifted_raw, _ = _bound(est, q, x, y, test, True)
    assert shifted_norm == pytest.approx(base_norm, abs=1e-4)
    assert shifted_raw < base_raw - 0.05
    assert abs(base_norm - truth) < 0.06


def test_linear_head_option_is_checked_and_can_be_turned_off():
    from faceaudit.errors import InputError

    x, y, truth = gaussian_task(2000, 4, 0.7, seed=6)
    with pytest.raises(InputError, match="linear_head"):
        estimate_expressivity(x, y, progress=False, linear_head="yes")
    with pytest.raises(InputError, match="norm_refs"):
        estimate_expressivity(x, y, progress=False, norm_refs=-1)
    r = estimate_expressivity(x, y, progress=False, seeds=1, null=False, linear_head=False, norm_refs=0, max_steps=800)
    assert abs(r.mi - truth) < 0.15


def periodic_task(n: int, seed: int, amp: float = 1.2) -> tuple[np.ndarray, np.ndarray, float, float]:
    """X = amp [sin 2y, cos 2y] + N(0, I), plus 2 noise columns; y ~ N(0, 1) (a yaw-like relation).
    Returns x, y, the true MI and its Monte Carlo standard error: I = E[log p(x|y) - log p(x)] over
    20,000 fresh samples, with p(x) = int p(x|y) p(y) dy by quadrature on 2,001 points of [-8, 8]."""
    rng = np.random.default_rng(seed)

    def mean(t):
        return amp * np.c_[np.sin(2 * t), np.cos(2 * t)]

    y = rng.normal(size=n)
    x = np.c_[mean(y) + rng.normal(size=(n, 2)), rng.normal(size=(n, 2))].astype(np.float32)
    mc = np.random.default_rng(seed + 1)
    ym = mc.normal(size=20_000)
    xm = mean(ym) + mc.normal(size=(20_000, 2))
    grid = np.linspace(-8, 8, 2001)
    log_w = stats.norm.logpdf(grid) + np.log(np.gradient(grid))
    mg = mean(grid)
    sq = (xm**2).sum(1)[:, None] - 2 * xm @ mg.T + (mg**2).sum(1)[None]
    log_px = special.logsumexp(-0.5 * sq + log_w[None], axis=1)  # the 2-pi terms cancel in the ratio
    log_ratio = -0.5 * ((xm - mean(ym)) ** 2).sum(1) - log_px
    return x, y, float(log_ratio.mean()), float(log_ratio.std() / math.sqrt(len(log_ratio)))


def test_attribute_basis_makes_a_periodic_relation_quick_to_learn():
    # the attribute branch sees y and Gaussian bumps of y, so sin/cos of y are near-linear in its inputs;
    # 600 steps suffice here (an MLP of the bare scalar y was 8% low after 600 steps on this task)
    assert critics.y_basis(torch.zeros(1, 3)).shape == (1, 3, 1 + critics.N_BUMPS)
    x, y, truth, mc_se = periodic_task(4000, seed=0)
    assert mc_se < 0.01
    r = estimate_expressivity(x, y, progress=False, null=False, max_steps=600)
    assert abs(r.mi - truth) < 0.05 * truth, (r.mi, truth)
    assert r.ci_low <= truth <= r.ci_high, (r.ci_low, r.ci_high, truth)


def test_capped_partition_term_matches_the_direct_formula():
    # the training partition term log mean_i sum_j w_ij exp(soft_cap(t_ij)) computed through
    # e^cap * sigmoid(t - cap) must equal the direct float64 formula, values and gradients, for
    # critic values far below, near and far above the cap (no overflow, no underflow to -inf)
    est = get_estimator("mine")
    gen = torch.Generator().manual_seed(3)
    B, M = 64, 16
    logw = torch.full((1, B, M), -math.log(M), dtype=torch.float64)
    logw[0, :M] = -math.log(M - 1)
    logw[0, :M].fill_diagonal_(-math.inf)
    for loc, scale in [(0.0, 1.0), (est.cap, 3.0), (3 * est.cap, 10.0), (-60.0, 5.0)]:
        t = (loc + scale * torch.randn((3, B, M), generator=gen, dtype=torch.float64)).requires_grad_(True)
        got = est._capped_log_mean_exp(t, logw)
        (g_got,) = torch.autograd.grad(got.sum(), t)
        capped = est.cap - torch.log1p(torch.exp(est.cap - t))
        want = torch.logsumexp((capped + logw).flatten(1), 1) - math.log(B)
        (g_want,) = torch.autograd.grad(want.sum(), t)
        assert torch.isfinite(got).all()
        np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=0, atol=1e-9)
        np.testing.assert_allclose(g_got.numpy(), g_want.numpy(), rtol=1e-7, atol=1e-12)
