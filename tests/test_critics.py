"""The critic's linear head, its attribute basis, the normalised held-out bound and the training partition
term, against known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import special, stats

from faceaudit.expressivity import critics, estimate_expressivity, get_estimator
from faceaudit.expressivity.training import _TINY, _log_partition, _references, Job, evaluate
from helpers import one_torch_thread, binary_mixture_mi, gaussian_task  # noqa: F401  (autouse fixture)


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


def _log_space_twin(est):
    """The same estimator, with a marginal transform that is numerically the identity but overrides the base
    method: its held-out evaluation cannot take the ratio-space path."""

    class LogSpace(type(est)):
        def transform_marginal(self, t):
            return t * 1.0

    return LogSpace()


@pytest.mark.parametrize("name", ["mine", "nwj"])
@pytest.mark.parametrize("case", ["trained-like", "sharp", "above-cap"])
def test_ratio_space_evaluation_matches_log_space(name, case):
    # the held-out bound of a normalised critic is summed in ratio space (a sigmoid and a division per pair);
    # the same estimator with a marginal transform that is numerically the identity takes the log-space path
    x, y, _ = gaussian_task(3000, 4, 0.8, seed=8)
    y = ((y - y.mean()) / y.std()).astype(np.float32)
    rows = np.random.default_rng(3).permutation(len(y))
    train, test = rows[:1500], rows[1500:2700]
    p = _untrained_critic(x, y, 0, train)
    n_refs = 1024
    if case == "sharp":  # a residual variance of 1e-5: most pairs far below float32's floor after exp
        p["Ls"][:] = math.log(1e-5)
        p["Lq"][:] = 0.5 - 0.5 / 1e-5
        n_refs = 16  # so that some rows have no reference near their own attribute value (the log-space fallback)
    elif case == "above-cap":  # h(x) of +20 nats: every pair is in the soft cap's bend or above it
        p["c3"][0, 0, 0] = 1.0
        p["W3"][0, :, 0] = 0.0
        p["b3"][0, 0, 0] = 20.0
    refs = rows[2700:2700 + n_refs].astype(np.int64)
    est = get_estimator(name)
    slow = _log_space_twin(est)
    assert est.identity_marginal() and not slow.identity_marginal()
    if case == "sharp":
        f = critics.encode(p, torch.from_numpy(x[test])[None])
        _, S = _log_partition(p, f, torch.from_numpy(y)[None], torch.from_numpy(refs)[None], est.cap)
        assert 0 < int((S < _TINY).sum()) < len(test)  # both paths occur in one evaluation
    v_fast, se_fast = _bound(est, p, x, y, test, True, refs)
    v_slow, se_slow = _bound(slow, p, x, y, test, True, refs)
    assert math.isfinite(v_fast) and math.isfinite(se_fast)
    assert v_fast == pytest.approx(v_slow, abs=2e-5, rel=1e-5)
    assert se_fast == pytest.approx(se_slow, abs=2e-6, rel=1e-4)


@pytest.mark.parametrize("log_space", [False, True])
def test_padded_rows_do_not_change_the_bound(log_space):
    # in a stack, a critic with fewer test rows is padded to the longest set: its padding must not enter its
    # bound or standard error (the column terms of the standard error sum over rows)
    x, y, _ = gaussian_task(3000, 4, 0.8, seed=9)
    y = ((y - y.mean()) / y.std()).astype(np.float32)
    rows = np.random.default_rng(4).permutation(len(y))
    p = _untrained_critic(x, y, 0, rows[:1500])
    test, refs = rows[1500:2700], rows[2700:2956].astype(np.int64)
    est = get_estimator("mine")
    if log_space:
        est = _log_space_twin(est)
    alone = _bound(est, p, x, y, test[:1000], True, refs)
    stack = {k: torch.cat([v, v]) for k, v in p.items()}
    idx = torch.from_numpy(np.stack([test, test]).astype(np.int64))
    mask = torch.ones_like(idx, dtype=torch.bool)
    mask[0, 1000:] = False  # critic 0: 1,000 rows and 200 rows of padding
    with torch.no_grad():
        v, se = evaluate(est, stack, torch.from_numpy(x)[None], torch.zeros(2, dtype=torch.long),
                         torch.from_numpy(y)[None].expand(2, -1), idx, mask, True,
                         {"ref_idx": torch.from_numpy(refs)[None].expand(2, -1)}, max_cols=None, which="test")
    assert float(v[0]) == pytest.approx(alone[0], abs=1e-5)
    assert float(se[0]) == pytest.approx(alone[1], rel=1e-4)
    assert float(se[1]) != pytest.approx(alone[1], rel=1e-3)  # critic 1 really has other rows


def _generative_critic(x, y, train, rank_index):
    """One critic started from a generative head (the ridge head switched off, the MLP adding nothing)."""
    p = _untrained_critic(x, y, 0, train)
    for k in ("Lw", "Lb", "Ls", "Lq"):
        p[k] = torch.zeros_like(p[k])
    head = critics.generative_head_init(x[train], y[train], x.shape[1])[rank_index]
    for k, v in head.items():
        p[k] = torch.from_numpy(np.asarray(v, dtype=np.float32))[None]
    return p


def _dense_linear_task(n, d, mi, seed):
    """x = b y + e in `d` dimensions, b dense, y and e standard normal: I = log(1 + |b|^2) / 2 exactly."""
    rng = np.random.default_rng(seed)
    b = rng.normal(size=d)
    b *= math.sqrt(math.exp(2 * mi) - 1) / np.linalg.norm(b)
    y = rng.normal(size=n)
    x = (y[:, None] * b + rng.normal(size=(n, d))).astype(np.float32)
    return x, ((y - y.mean()) / y.std()).astype(np.float32)


def test_generative_head_is_centred_at_its_best_attribute_value():
    # T(x, y) = -(phi - Q^+ a)' Q (phi - Q^+ a) / 2 <= 0: the raw log-likelihood ratio of a model in
    # hundreds of dimensions reaches tens of nats, where the critics' soft cap would flatten it
    x, y = _dense_linear_task(3000, 200, 1.5, seed=3)
    heads = critics.generative_head_init(x[:2000], y[:2000], 200)
    phi = critics.y_basis(torch.linspace(-4, 4, 801, dtype=torch.float64)[None]).numpy()[0]  # (801, p)
    for h in heads:
        a = x[2000:2200].astype(np.float64) @ h["Gw"] + h["Gc"]  # (200, p)
        t = a @ phi.T - 0.5 * ((phi @ h["GQ"]) * phi).sum(1)[None] - 0.5 * ((a @ h["GP"]) * a).sum(1)[:, None]
        assert t.max() <= 1e-6


def test_generative_head_reaches_a_dense_high_dimensional_truth():
    # the failure a capped, unshrunk head had: 1.5 nats spread over 200 coordinates
    x, y = _dense_linear_task(6000, 200, 1.5, seed=4)
    train, test = np.arange(4000), np.arange(4000, 6000)
    job = Job(x, "l", np.arange(6000), y, 0, seed=0, test_seed=1)
    refs = _references(job, test, 1024)
    est = get_estimator("mine")
    ridge, _ = _bound(est, _untrained_critic(x, y, 0, train), x, y, test, True, refs)
    values = [_bound(est, _generative_critic(x, y, train, i), x, y, test, True, refs) for i in range(3)]
    for value, se in values:
        assert abs(value - 1.5) < 3 * se + 0.03, (value, se)
    assert values[0][0] > ridge - 0.02, (values, ridge)


def test_generative_head_of_independent_features_adds_nothing():
    # the shrinkage of the singular values: with no signal every rank's head, even the full one, stays near 0
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2500, 256)).astype(np.float32)
    y = rng.normal(size=2500).astype(np.float32)
    train, test = np.arange(1500), np.arange(1500, 2500)
    job = Job(x, "l", np.arange(2500), y, 0, seed=0, test_seed=1)
    refs = _references(job, test, 1024)
    est = get_estimator("mine")
    for i in range(len(critics.GENERATIVE_RANKS)):
        value, se = _bound(est, _generative_critic(x, y, train, i), x, y, test, True, refs)
        assert value > -0.02 - 2 * se, (critics.GENERATIVE_RANKS[i], value, se)


def test_normalised_critic_is_floored():
    # a critic confidently wrong about a row scores it at most 7 nats below nothing, not -80
    from faceaudit.expressivity.training import _T_FLOOR, _normalized

    t = torch.tensor([[-80.0, 0.0, 3.0]])
    out = _normalized(t, torch.zeros_like(t), 1024)
    assert float(out.min()) == _T_FLOOR == -7.0
    assert float(out[0, 2]) == pytest.approx(math.log(1025) + 3 - math.log(1024 + math.exp(3)), abs=1e-5)


def test_nonlinear_shrinkage_beats_linear_shrinkage_on_a_two_level_spectrum():
    # population eigenvalues 1 and 6 in equal numbers, 200 dimensions, 600 rows: the sample spectrum is
    # smeared over both; one shrinkage factor (Ledoit-Wolf) cannot undo it, one per eigenvalue can
    rng = np.random.default_rng(8)
    d, m = 200, 600
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    lam = np.r_[np.ones(d // 2), np.full(d // 2, 6.0)]
    cov = (q * lam) @ q.T
    x = rng.normal(size=(m, d)) @ (q * np.sqrt(lam)).T
    prec = np.linalg.inv(cov)

    def err(est):
        return np.linalg.norm(np.linalg.inv(est) - prec) / np.linalg.norm(prec)

    r = x - x.mean(0)
    nls, lw = critics.nonlinear_shrinkage_cov(r, dof=m - 1), critics.ledoit_wolf_cov(r)
    assert err(nls) < 0.8 * err(lw), (err(nls), err(lw))
    assert np.allclose(nls, nls.T) and np.linalg.eigvalsh(nls).min() > 0
    with pytest.raises(ValueError, match="fewer features"):
        critics.nonlinear_shrinkage_cov(r[:150])


def test_generative_heads_of_the_standardised_view_read_only_its_columns():
    x, y = _dense_linear_task(2000, 40, 1.0, seed=9)
    both = np.concatenate([x, x ** 3], axis=1)  # two views of 40 features, the standardised one first
    heads = critics.generative_head_init(both, y, 96, std_cols=40)
    k = len(critics.GENERATIVE_RANKS)
    assert len(heads) == 2 * k
    for h in heads[k:]:
        assert not h["Gw"][40:].any() and h["Gw"][:40].any()
    # every call gives as many heads, so critics of layers of any width stack: too few rows for the nonlinear
    # shrinkage (Ledoit-Wolf on the standardised columns instead), or no known view (the first set again)
    few = critics.generative_head_init(both[:60], y[:60], 96, std_cols=40)
    assert len(few) == 2 * k and not any(h["Gw"][40:].any() for h in few[k:])
    unknown = critics.generative_head_init(both, y, 96)
    assert len(unknown) == 2 * k and all(a is b for a, b in zip(unknown[:k], unknown[k:]))
    # a refit fits one head, the same one the list gives at that index (and of the same kind as its first fit)
    for i in (0, k - 1, k, 2 * k - 1):
        one = critics.generative_head(both, y, 96, i, std_cols=40)
        assert all(np.array_equal(one[key], heads[i][key]) for key in heads[i]), i
        assert all(np.array_equal(critics.generative_head(both, y, 96, i)[key], unknown[i][key]) for key in one), i
    assert np.array_equal(critics.generative_head(both, y, 96, k, std_cols=40, choice_rows=60)["Gw"],
                          critics.generative_head_init(both, y, 96, std_cols=40, choice_rows=60)[k]["Gw"])
    assert not np.array_equal(heads[k]["Gw"],
                              critics.generative_head_init(both, y, 96, std_cols=40, choice_rows=60)[k]["Gw"])


def test_critics_of_layers_of_any_width_train_in_one_stack():
    # a narrow layer gets generative heads with nonlinear shrinkage, a layer as wide as its rows cannot:
    # both give as many candidate heads, so their critics still stack (and a kept head is refitted)
    from helpers import FAST
    from faceaudit.expressivity.training import train_jobs

    rng = np.random.default_rng(12)
    y = rng.normal(size=400).astype(np.float32)
    narrow = np.c_[y, np.sin(2 * y), rng.normal(size=(400, 6))].astype(np.float32)
    wide = (rng.normal(size=(400, 300)) + y[:, None] * 0.2).astype(np.float32)
    jobs = [Job(np.c_[narrow, narrow], "n", np.arange(400), y, 0, 1, std_cols=8),
            Job(np.c_[wide, wide], "w", np.arange(400), y, 0, 2, std_cols=300)]
    fits = train_jobs(jobs, get_estimator("mine", **FAST), progress=False)
    assert [np.isfinite(f.value) for f in fits] == [True, True]
    assert fits[0].value > 0.3, fits[0].value
