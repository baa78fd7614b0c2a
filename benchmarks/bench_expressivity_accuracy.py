"""Accuracy of faceaudit's default expressivity estimator against known mutual information.

Run: python benchmarks/bench_expressivity_accuracy.py [--quick] [--n 5000] [--threads 1] [--option KEY=VALUE]
     [--tasks spiral,yaw] [--data-seed 2024]

Prints, per task: the true MI (nats), the default estimate (estimator "mine", cross-fitted over
5 folds, features read whole up to 1,024 dims) with its 95% CI, relative error and the linear
probe's floor, and a plain-MINE baseline
measured in the same run (DV + EMA gradient, concat critic 2x100 MLP, Adam 1e-4,
3,000 steps, batch 500, DV evaluated on a 30% held-out split), with times.

How each truth is known:
* linear-Gaussian (X = w*Y + N(0, I), Y ~ N(0,1)): closed form I = 1/2 log(1 + |w|^2).
* invertible transforms of that X (spiral rotation of the first two coordinates by an
  angle proportional to the radius; the "half-cube" map t -> sign(t)|t|^1.5 on every
  coordinate): MI is invariant under invertible maps of X, so the truth is the closed form;
  likewise for the attribute Y' = sinh(2Y) (skewless but extremely heavy-tailed).
* nonlinear 1-D latent tasks (X = A g(Y) + correlated Gaussian noise, age/yaw-like) and the
  heavy-tailed task (Y ~ Student-t(3), X = w*Y + noise): I = E[log p(x|y) - log p(x)] by
  Monte Carlo over 40,000 samples, with p(x) = int p(x|y) p(y) dy by quadrature on a fine
  grid of y (4,001 points); the MC standard error is printed in the task name column.
* binary Gaussian mixture (means +-mu e1, identity covariance): 1-D integral
  (scipy.integrate.quad) of H(Y|X), I = log 2 - H(Y|X); 5-class mixture (means on a
  pentagon of radius r in a 2-D subspace): Monte Carlo over 200,000 samples with stated SE.
* independent X, Y: I = 0.

The failure class of a lossy reduction (tasks marked "wide"): signal spread over every
coordinate of wide, factor-correlated features, which the top principal components do not keep.
* dense Gaussian (Y = b'X + e, X ~ N(0, S) with S = F F' + D, F a 5-factor loading, b dense and
  orthogonal to the factors, so a PCA, which keeps the factors first, keeps only part of it):
  closed form I = 1/2 log(1 + b'Sb / var(e)), b scaled to a chosen I, at 128 and 512 dimensions;
  its half-cube transform (t -> sign(t)|t|^1.5 on every coordinate, 128-d) keeps the closed form.
* binary and 5-class Gaussian mixtures in 512-d whose class covariances are low-rank plus a
  class-specific perturbation (S_c = F F' + D_c), means along dense directions: I = E[log p(x|c)
  - log p(x)] by Monte Carlo over 100,000 samples with exact Gaussian log-densities (SE printed).
* curve embeddings at 512-d with full-rank correlated noise (age-like: monotone with curvature;
  yaw-like: periodic): the latent-task Monte Carlo above (20,000 samples, quadrature over y).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import zlib

import numpy as np
import torch
from scipy import integrate, special, stats

from faceaudit.expressivity import estimate_expressivity


# ---------------------------------------------------------------- tasks
def _latent_mi_mc(g, A, noise_chol, prior_logpdf, grid, rng, n_mc=40_000, sampler=None):
    """MC estimate of I(X;Y) for X = A g(Y) + L eps with a 1-D Y (quadrature over y on `grid`)."""
    Linv = np.linalg.inv(noise_chol)
    y = sampler(rng, n_mc)
    mu = g(y) @ A.T
    x = mu + rng.normal(size=mu.shape) @ noise_chol.T
    z = x @ Linv.T  # whitened
    mg = (g(grid) @ A.T) @ Linv.T  # (m, d)
    lw = prior_logpdf(grid) + np.log(np.gradient(grid))
    lpxy = -0.5 * ((z - mu @ Linv.T) ** 2).sum(1)
    out = np.empty(n_mc)
    for s in range(0, n_mc, 2000):
        zz = z[s : s + 2000]
        d2 = (zz**2).sum(1)[:, None] - 2 * zz @ mg.T + (mg**2).sum(1)[None]
        out[s : s + 2000] = lpxy[s : s + 2000] - special.logsumexp(-0.5 * d2 + lw[None], axis=1)
    return float(out.mean()), float(out.std() / math.sqrt(n_mc))


def make_tasks(n: int, quick: bool):
    rng = np.random.default_rng(12345)
    tasks = []

    def lin(d, s, name, transform=None, y_map=None):
        def build(seed):
            r = np.random.default_rng(seed)
            w = r.normal(size=d)
            w *= math.sqrt(s) / np.linalg.norm(w)
            y = r.normal(size=n)
            x = y[:, None] * w + r.normal(size=(n, d))
            if transform is not None:
                x = transform(x)
            return x, (y if y_map is None else y_map(y)), "continuous"

        tasks.append((name, 0.5 * math.log(1 + s), 0.0, build))

    def spiral(x):
        x = x.copy()
        r = np.hypot(x[:, 0], x[:, 1])
        th = 1.5 * r
        c, s_ = np.cos(th), np.sin(th)
        x0 = c * x[:, 0] - s_ * x[:, 1]
        x1 = s_ * x[:, 0] + c * x[:, 1]
        x[:, 0], x[:, 1] = x0, x1
        return x

    def halfcube(x):
        return np.sign(x) * np.abs(x) ** 1.5

    lin(5, 2.0, "lin-gauss d=5")
    lin(5, 2.0, "spiral d=5", spiral)
    lin(5, 2.0, "half-cube d=5", halfcube)
    lin(5, 2.0, "sinh(2y) attribute d=5", y_map=lambda y: np.sinh(2 * y))
    if not quick:
        lin(64, 3.0, "lin-gauss d=64")
        lin(512, 3.0, "lin-gauss d=512")

    # nonlinear 1-D latent embeddings: age-like (monotone + curvature) and yaw-like (periodic)
    def latent(d, name, g, scale, prior="normal"):
        r = np.random.default_rng(zlib.crc32(name.encode()))  # stable across runs (str hash is salted)
        k = g(np.zeros(1)).shape[1]
        A = r.normal(size=(d, k)) * scale
        M = r.normal(size=(d, d)) / math.sqrt(d)
        cov = 0.5 * np.eye(d) + M @ M.T * 0.5
        L = np.linalg.cholesky(cov)
        if prior == "normal":
            grid = np.linspace(-8, 8, 4001)
            logpdf = stats.norm.logpdf
            sampler = lambda rr, m: rr.normal(size=m)  # noqa: E731
        else:
            grid = np.sinh(np.linspace(-7, 7, 4001))  # dense near 0, reaching |y| ~ 550
            logpdf = lambda t: stats.t.logpdf(t, 3)  # noqa: E731
            sampler = lambda rr, m: rr.standard_t(3, size=m)  # noqa: E731
        truth, se = _latent_mi_mc(g, A, L, logpdf, grid, np.random.default_rng(7), sampler=sampler)

        def build(seed):
            rr = np.random.default_rng(seed)
            y = sampler(rr, n)
            x = g(y) @ A.T + rr.normal(size=(n, d)) @ L.T
            return x, y, "continuous"

        tasks.append((f"{name} (MC se {se:.3f})", truth, se, build))

    latent(16, "age-like d=16", lambda y: np.c_[y, np.tanh(2 * y), 0.3 * y**2], 0.6)
    latent(32, "yaw-like d=32", lambda y: np.c_[np.sin(1.5 * y), np.cos(1.5 * y), 0.3 * y], 0.7)
    latent(8, "student-t3 d=8", lambda y: np.c_[y, np.zeros_like(y)], 0.4, prior="t")

    # categorical
    def binary(d, mu):
        def h(t):
            p0, p1 = stats.norm.pdf(t, -mu), stats.norm.pdf(t, mu)
            q = p1 / (p0 + p1)
            hq = -special.xlogy(q, q) - special.xlogy(1 - q, 1 - q)
            return 0.5 * (p0 + p1) * hq

        truth = math.log(2) - integrate.quad(h, -mu - 12, mu + 12, limit=200, epsabs=1e-12)[0]

        def build(seed):
            r = np.random.default_rng(seed)
            c = r.integers(0, 2, size=n)
            x = r.normal(size=(n, d))
            x[:, 0] += (2 * c - 1) * mu
            return x, c, "categorical"

        tasks.append((f"binary mixture d={d}", truth, 0.0, build))

    def five(d, radius):
        ang = 2 * math.pi * np.arange(5) / 5
        means2 = radius * np.c_[np.cos(ang), np.sin(ang)]
        r = np.random.default_rng(99)
        m = 200_000
        c = r.integers(0, 5, size=m)
        z = means2[c] + r.normal(size=(m, 2))
        ll = -0.5 * ((z[:, None, :] - means2[None]) ** 2).sum(-1)
        pmi = ll[np.arange(m), c] - special.logsumexp(ll, axis=1) + math.log(5)
        truth, se = float(pmi.mean()), float(pmi.std() / math.sqrt(m))

        def build(seed):
            rr = np.random.default_rng(seed)
            cc = rr.integers(0, 5, size=n)
            x = rr.normal(size=(n, d))
            x[:, :2] += means2[cc]
            return x, cc, "categorical"

        tasks.append((f"5-class mixture d={d} (MC se {se:.3f})", truth, se, build))

    binary(10, 1.0)
    five(10, 1.5)

    def indep(d, kind):
        def build(seed):
            r = np.random.default_rng(seed)
            x = r.normal(size=(n, d))
            y = r.normal(size=n) if kind == "continuous" else r.integers(0, 2, size=n)
            return x, y, kind

        tasks.append((f"independent {kind} d={d}", 0.0, 0.0, build))

    indep(10, "continuous")
    indep(10, "categorical")
    if not quick:
        indep(512, "continuous")
    if not quick:
        wide_tasks(tasks, n)
    return tasks


def _factor_cov(d: int, r: np.random.Generator, rank: int = 5, strength: float = 3.0, with_loadings: bool = False):
    """S = F F' + D: a few strong factors over a diagonal (the variance a PCA keeps first); with the loadings F."""
    F = r.normal(size=(d, rank)) * math.sqrt(strength)
    S = F @ F.T + np.diag(r.uniform(0.5, 1.5, size=d))
    return (S, F) if with_loadings else S


def wide_tasks(tasks: list, n: int) -> None:
    """The failure class of a lossy reduction: signal spread densely over wide, correlated features."""

    def dense(d: int, mi: float, name: str, transform=None):
        r = np.random.default_rng(zlib.crc32(name.encode()))
        S, loadings = _factor_cov(d, r, with_loadings=True)
        L = np.linalg.cholesky(S)
        b = r.normal(size=d)
        b -= loadings @ np.linalg.lstsq(loadings, b, rcond=None)[0]  # dense, outside the top (factor) components
        b *= math.sqrt((math.exp(2 * mi) - 1) / float(b @ S @ b))  # b'Sb / var(e) = e^{2I} - 1, var(e) = 1

        def build(seed):
            rr = np.random.default_rng(seed)
            x = rr.normal(size=(n, d)) @ L.T
            y = x @ b + rr.normal(size=n)
            return (x if transform is None else transform(x)), y, "continuous"

        tasks.append((name, mi, 0.0, build))

    def halfcube(x):
        return np.sign(x) * np.abs(x) ** 1.5

    dense(128, 0.75, "wide dense gaussian d=128")
    dense(512, 1.0, "wide dense gaussian d=512")
    dense(128, 0.75, "wide half-cube dense d=128", halfcube)

    def mixture(d: int, k: int, sep: float, pert: float, name: str):
        r = np.random.default_rng(zlib.crc32(name.encode()))
        F = r.normal(size=(d, 4)) * math.sqrt(2.0)
        D = np.diag(r.uniform(0.5, 1.5, size=d))
        covs = []
        for _ in range(k):
            P = r.normal(size=(d, 2)) * pert  # the class's own low-rank perturbation
            covs.append(F @ F.T + P @ P.T + D)
        dirs = r.normal(size=(k, d))
        means = sep * dirs / np.linalg.norm(dirs, axis=1, keepdims=True)  # dense directions, |mean| = sep
        chols = [np.linalg.cholesky(c) for c in covs]
        logdets = [2 * np.log(np.diag(L)).sum() for L in chols]

        def logpdf(x, c):
            z = np.linalg.solve(chols[c], (x - means[c]).T)
            return -0.5 * (z * z).sum(0) - 0.5 * logdets[c] - 0.5 * d * math.log(2 * math.pi)

        def sample(rr, m):
            c = rr.integers(0, k, size=m)
            x = np.empty((m, d))
            for j in range(k):
                sel = c == j
                x[sel] = means[j] + rr.normal(size=(int(sel.sum()), d)) @ chols[j].T
            return x, c

        xm, cm = sample(np.random.default_rng(5), 100_000)
        ll = np.stack([logpdf(xm, j) for j in range(k)], 1)
        pmi = ll[np.arange(len(cm)), cm] - special.logsumexp(ll, axis=1) + math.log(k)
        truth, se = float(pmi.mean()), float(pmi.std() / math.sqrt(len(pmi)))

        def build(seed):
            x, c = sample(np.random.default_rng(seed), n)
            return x, c, "categorical"

        tasks.append((f"{name} (MC se {se:.3f})", truth, se, build))

    mixture(512, 2, 1.6, 0.08, "wide binary mixture d=512")
    mixture(512, 5, 1.6, 0.08, "wide 5-class mixture d=512")

    def curve(d: int, name: str, g, scale: float):
        r = np.random.default_rng(zlib.crc32(name.encode()))
        k = g(np.zeros(1)).shape[1]
        A = r.normal(size=(d, k)) * scale
        L = np.linalg.cholesky(_factor_cov(d, r, rank=8, strength=1.0))
        grid = np.linspace(-8, 8, 2001)
        truth, se = _latent_mi_mc(g, A, L, stats.norm.logpdf, grid, np.random.default_rng(7), n_mc=20_000,
                                  sampler=lambda rr, m: rr.normal(size=m))

        def build(seed):
            rr = np.random.default_rng(seed)
            y = rr.normal(size=n)
            return g(y) @ A.T + rr.normal(size=(n, d)) @ L.T, y, "continuous"

        tasks.append((f"{name} (MC se {se:.3f})", truth, se, build))

    curve(512, "wide age-like curve d=512", lambda y: np.c_[y, np.tanh(2 * y), 0.3 * y**2], 0.12)
    curve(512, "wide yaw-like curve d=512", lambda y: np.c_[np.sin(1.5 * y), np.cos(1.5 * y), 0.3 * y], 0.12)


# ---------------------------------------------------------------- plain MINE baseline
def plain_mine(x, y, kind, seed=0, steps=3000, batch=500, lr=1e-4, ema=0.01):
    """MINE as commonly implemented: concat critic on (x, y), DV + EMA gradient, held-out DV."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = (x - x.mean(0)) / (x.std(0) + 1e-12)
    if kind == "categorical":
        yv = np.eye(int(y.max()) + 1)[y.astype(int)]
    else:
        yv = ((y - y.mean()) / y.std())[:, None]
    X = torch.tensor(x, dtype=torch.float32)
    Yt = torch.tensor(yv, dtype=torch.float32)
    perm = rng.permutation(len(X))
    nh = int(0.3 * len(X))
    te, tr = perm[:nh], perm[nh:]
    batch = min(batch, len(tr))  # few rows: a batch of all the training rows
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(X.shape[1] + Yt.shape[1], 100), torch.nn.ReLU(),
        torch.nn.Linear(100, 100), torch.nn.ReLU(), torch.nn.Linear(100, 1),
    )
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    m_ema = None
    for _ in range(steps):
        b = torch.from_numpy(rng.choice(tr, batch, replace=False))
        bm = torch.from_numpy(rng.choice(tr, batch, replace=False))
        tj = net(torch.cat([X[b], Yt[b]], 1)).mean()
        et = torch.exp(net(torch.cat([X[b], Yt[bm]], 1))).mean()
        m_ema = et.detach() if m_ema is None else (1 - ema) * m_ema + ema * et.detach()
        loss = -(tj - et / m_ema)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        tet = torch.from_numpy(te)
        tj = net(torch.cat([X[tet], Yt[tet]], 1)).mean()
        sh = tet[torch.randperm(len(tet), generator=g)]
        tm = torch.logsumexp(net(torch.cat([X[tet], Yt[sh]], 1)).squeeze(1), 0) - math.log(len(tet))
    del g
    return float(tj - tm)


def _literal(text: str):
    """'4000' -> 4000, '1e-3' -> 0.001, 'None' -> None, anything else stays a string."""
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a short subset (n=3000 unless --n given)")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--data-seed", type=int, default=2024, help="seed of the simulated data sets (another draw of every task)")
    ap.add_argument("--tasks", default="", help="comma-separated name fragments: run only the tasks that match one")
    ap.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE",
        help="estimator option to try instead of its default, e.g. --option max_steps=4000 (repeatable)",
    )
    args = ap.parse_args()
    options = {k: _literal(v) for k, v in (o.split("=", 1) for o in args.option)}
    torch.set_num_threads(args.threads)
    n = args.n or (3000 if args.quick else 5000)
    tasks = make_tasks(n, args.quick)
    if args.tasks:
        tasks = [t for t in tasks if any(k in t[0] for k in args.tasks.split(","))]
    print(f"n={n}, data seed {args.data_seed}; default estimator: mine, 5 folds, max_dim=1024; "
          f"options {options or 'default'}")
    hdr = (f"{'task':44s} {'truth':>7s} {'estimate':>8s} {'95% CI':>17s} {'err%':>7s} {'cover':>5s} {'floor':>6s} "
           f"{'null':>7s} {'s':>5s} | {'plain':>7s} {'err%':>7s} {'s':>5s}")
    print(hdr)
    print("-" * len(hdr))
    rel, relb, cover, indep_est, indep_base = [], [], [], [], []
    passes = 0
    for name, truth, _se, build in tasks:
        x, y, kind = build(args.data_seed)
        t0 = time.time()
        r = estimate_expressivity(x, y, kind=kind, progress=False, **options)
        t1 = time.time() - t0
        if args.no_baseline:
            b, t2 = float("nan"), 0.0
        else:
            t0 = time.time()
            b = plain_mine(x, y, kind)
            t2 = time.time() - t0
        cov = r.ci_low <= truth <= r.ci_high
        cover.append(cov)
        if truth > 0:
            passes += abs(r.mi - truth) <= max(0.1 * truth, 0.05)
            e, eb = (r.mi - truth) / truth, (b - truth) / truth
            rel.append(abs(e))
            relb.append(abs(eb))
            es, ebs = f"{100 * e:+7.1f}", f"{100 * eb:+7.1f}"
        else:
            indep_est.append(r.mi)
            indep_base.append(b)
            es, ebs = f"{r.mi:+7.3f}", f"{b:+7.3f}"
        print(
            f"{name:44s} {truth:7.3f} {r.mi:8.3f} [{r.ci_low:6.3f}, {r.ci_high:6.3f}] {es} {'yes' if cov else 'NO':>5s} "
            f"{r.probe_mi:6.3f} {r.null_mi:+7.3f} {t1:5.0f} | {b:7.3f} {ebs} {t2:5.0f}",
            flush=True,
        )
        for w in r.warnings:
            print(f"{'':6s}warning: {w}")
    print("-" * len(hdr))
    print(f"median |rel. error| on MI>0 tasks: default {100 * np.median(rel):.1f}%   plain MINE {100 * np.median(relb):.1f}%")
    print(f"MI>0 tasks within 10% or 0.05 nats: default {passes}/{len(rel)}")
    print(f"independent tasks (nats): default {['%.3f' % v for v in indep_est]}   plain MINE {['%.3f' % v for v in indep_base]}")
    print(f"CI covers the truth on {sum(cover)}/{len(cover)} tasks ({100 * np.mean(cover):.0f}%)")


if __name__ == "__main__":
    sys.exit(main())
