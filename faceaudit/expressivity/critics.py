"""Stacked statistics networks: G independent critics held in one set of tensors.

Every parameter has a leading critic axis, so a forward pass for all critics
is a handful of batched matmuls (torch.baddbmm) instead of G small ones.
Each critic is initialised from its own numpy Generator with its own true
input width, then zero-padded to the common width: zero input columns get
zero gradients and zero Adam updates, so a critic trained in a stack follows
the same trajectory as the same critic trained alone.

Critic form: T(x, y) = <f(x), g(y)> with f an MLP encoder of the features
(the heavy part, shared by every y) and, for a 1-D continuous y, g a learned
linear map of y and fixed Gaussian bumps of y (see :func:`y_basis`; with
``y_hidden`` > 0, a two-hidden-layer MLP of them), or a learned embedding of a
category. The bumps already span smooth functions of y, and the MLP was no
more accurate on the ground-truth suite while taking a quarter of a step.
Being separable, T can be evaluated on all n x n (x_i, y_j) pairs of a batch
with one matmul, which gives a low-variance marginal term.

With the linear head (``linear_head=True``, the default) the critic also holds
its fold's linear probe (see :mod:`probe`), fitted on the job's training rows:
for a continuous (standardised) y, T_lin(x, y) = log N(y; m(x), s^2) - log N(y; 0, 1)
with m the regularised linear regression, written separably by appending
[m/s^2, -m^2/(2 s^2) - log s, q] to f(x) and [y, 1, y^2] to g(y) (q, the y^2
coefficient, is learned freely after); for a category, the logistic regression's
log-posterior added to the class logits (whose bias starts at -log p(c)). The MLP
part starts at zero output, so training begins from the probe and learns the
nonlinear remainder. A continuous critic may instead start from a generative head
(:func:`generative_head_init`, x | y Gaussian with a mean that follows the attribute's
basis), which stays fixed while the rest trains, when it validates better.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from faceaudit.expressivity.probe import Probe, fit_probe, head_from_probe


N_BUMPS = 15  # Gaussian bumps of the attribute basis, centred on -3 .. 3 standard deviations
_BUMP_WIDTH = 6.0 / (N_BUMPS - 1)  # one centre spacing


@dataclass(frozen=True)
class CriticShape:
    """Sizes of the stacked networks."""

    d_in: int  # padded input width
    hidden: int
    embed: int
    y_hidden: int
    n_classes: int  # 0 for a continuous attribute
    head_out: int  # encoder output width (embed for critics; task-specific for conditional models)


def _uniform(rng: np.random.Generator, fan_in: int, shape: tuple[int, ...]) -> np.ndarray:
    bound = 1.0 / np.sqrt(max(fan_in, 1))
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


def init_params(
    seeds: list[int], true_dims: list[int], shape: CriticShape, *, continuous: bool, conditional: bool,
    linear: list[dict[str, np.ndarray]] | None = None,
) -> dict[str, np.ndarray]:
    """Initialise G critics (one per seed) as padded numpy arrays.

    `linear` (one :func:`linear_head_init` dict per critic) adds the linear head and
    starts the MLP part at zero output."""
    keys: dict[str, list[np.ndarray]] = {}

    def add(name: str, arr: np.ndarray) -> None:
        keys.setdefault(name, []).append(arr)

    h, k, hy = shape.hidden, shape.embed, shape.y_hidden
    for seed, d in zip(seeds, true_dims):
        rng = np.random.default_rng([int(seed), 90210])
        w1 = np.zeros((shape.d_in, h), np.float32)
        w1[:d] = _uniform(rng, d, (d, h))
        add("W1", w1)
        add("b1", _uniform(rng, d, (1, h)))
        add("W2", _uniform(rng, h, (h, h)))
        add("b2", _uniform(rng, h, (1, h)))
        add("W3", _uniform(rng, h, (h, shape.head_out)))
        add("b3", _uniform(rng, h, (1, shape.head_out)))
        if conditional:
            continue
        if continuous and hy == 0:  # g linear in the basis of y
            add("U3", _uniform(rng, 1 + N_BUMPS, (1 + N_BUMPS, k)))
            add("c3", _uniform(rng, 1 + N_BUMPS, (1, k)))
        elif continuous:
            add("U1", _uniform(rng, 1, (1 + N_BUMPS, hy)))
            add("c1", _uniform(rng, 1, (1, hy)))
            add("U2", _uniform(rng, hy, (hy, hy)))
            add("c2", _uniform(rng, hy, (1, hy)))
            add("U3", _uniform(rng, hy, (hy, k)))
            add("c3", _uniform(rng, hy, (1, k)))
        else:
            add("E", rng.normal(0.0, 1.0 / np.sqrt(k), size=(shape.n_classes, k)).astype(np.float32))
            add("eb", np.zeros((1, shape.n_classes), np.float32))
    out = {name: np.stack(vals) for name, vals in keys.items()}
    if linear is not None and not conditional:
        for name in ("U3", "c3", "E"):  # the MLP part adds nothing at first: training starts from the linear fit
            if name in out:
                out[name][:] = 0.0
        for name in linear[0]:
            out[name] = np.stack([lin[name] for lin in linear]).astype(np.float32)
    return out


def linear_head_init(
    x: np.ndarray | None, y: np.ndarray | None, n_classes: int, d_pad: int, c_pad: int,
    probe: Probe | None = None,
) -> dict[str, np.ndarray]:
    """The linear head of a critic: the linear probe of `y` on the training rows `x` (m, d), zero-padded.

    `probe` is used when given (else it is fitted here, see :func:`probe.fit_probe`). Continuous y:
    keys Lw, Lb, Ls, Lq, the critic log N(y; x.w + b, s^2) - log N(y; 0, 1) of the ridge probe.
    Categorical y: V, v0, the logistic probe's logits (log q(c | x) is their log-softmax), and, when
    `y` is given, eb = -log of its class frequencies, the class bias that turns log q(c | x) into
    log q(c | x) - log p(c).
    """
    if probe is None:
        probe = fit_probe(x, y, n_classes)
    head = head_from_probe(probe, d_pad, c_pad)
    if n_classes and y is not None:
        counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes).astype(np.float64)
        eb = np.zeros((1, c_pad))
        eb[0, :n_classes] = -np.log((counts + 0.5) / (counts + 0.5).sum())
        head["eb"] = eb
    return head


def encode(p: dict[str, Tensor], x: Tensor) -> Tensor:
    """f(x) for all critics: x (G, B, d) -> (G, B, head_out), plus 3 (linear head) or C (LDA head) columns."""
    h = p["W1"].shape[-1]
    # the head's linear map of x (Lw or V) rides in the first layer's matmul as extra columns: the
    # (G, B, d) batch is read once forward and once for the weight gradient, not again per thin matmul
    w, b = p["W1"], p["b1"]
    for wk, bk in (("Lw", "Lb"), ("Gw", "Gc"), ("V", "v0")):
        if wk in p:
            w, b = torch.cat([w, p[wk]], -1), torch.cat([b, p[bk]], -1)
    z = torch.baddbmm(b, x, w)
    a = torch.nn.functional.elu(z[..., :h])
    a = torch.nn.functional.elu(torch.baddbmm(p["b2"], a, p["W2"]))
    f = torch.baddbmm(p["b3"], a, p["W3"])
    if "Lw" in p:  # linear-Gaussian head: [m/s^2, -m^2/(2 s^2) - log(s^2)/2, q], paired with g's [y, 1, y^2]
        m = z[..., h : h + 1]  # (G, B, 1)
        inv = torch.exp(-p["Ls"])
        f = torch.cat([f, m * inv, -0.5 * m * m * inv - 0.5 * p["Ls"], p["Lq"].expand_as(m)], -1)
    if "Gw" in p:  # generative head: [a, 1, -a P a / 2] with a = (x - c) M, paired with g's [phi(y), -phi Q phi / 2, 1]
        a = z[..., h + 1 :]
        centre = -0.5 * (torch.bmm(a, p["GP"]) * a).sum(-1, keepdim=True)
        f = torch.cat([f, a, torch.ones_like(a[..., :1]), centre], -1)
    elif "V" in p:  # LDA head: the log-posterior of every class, added to the class logits
        f = torch.cat([f, torch.log_softmax(z[..., h:], -1)], -1)
    return f


def y_basis(y: Tensor) -> Tensor:
    """The attribute branch's input: a standardised y and Gaussian bumps around fixed centres,
    (G, B) -> (G, B, 1 + N_BUMPS). A periodic or saturating function of y (yaw, age) is then
    close to linear in the inputs, which an MLP of a bare scalar learns only slowly; y itself
    carries the trend beyond the outermost centres (heavy tails)."""
    yy = y.unsqueeze(-1)
    centres = torch.linspace(-3.0, 3.0, N_BUMPS, device=y.device, dtype=y.dtype)
    return torch.cat([yy, torch.exp(-0.5 * ((yy - centres) / _BUMP_WIDTH) ** 2)], -1)


def embed_y(p: dict[str, Tensor], y: Tensor) -> Tensor:
    """g(y) for a continuous y: (G, B) -> (G, B, embed), plus [y, 1, y^2] with the linear head.
    Linear in :func:`y_basis` by default; an MLP of it when the critics have hidden layers (U1, U2)."""
    b = y_basis(y)
    if "U1" in p:  # y_hidden > 0
        b = torch.nn.functional.elu(torch.baddbmm(p["c1"], b, p["U1"]))
        b = torch.nn.functional.elu(torch.baddbmm(p["c2"], b, p["U2"]))
    g = torch.baddbmm(p["c3"], b, p["U3"])
    if "Lw" in p:
        yy = y.unsqueeze(-1)
        g = torch.cat([g, yy, torch.ones_like(yy), yy * yy], -1)
    if "Gw" in p:
        phi = y_basis(y)
        quad = -0.5 * (torch.bmm(phi, p["GQ"]) * phi).sum(-1, keepdim=True)
        g = torch.cat([g, phi, quad, torch.ones_like(quad)], -1)
    return g


def ledoit_wolf_cov(r: np.ndarray) -> np.ndarray:
    """The Ledoit-Wolf shrunk covariance of centred rows `r` (m, d): (1 - s) S + s mu I with S = r'r / m,
    mu = tr(S) / d and s the Ledoit-Wolf (2004) optimal shrinkage, from the closed form
    sum_i ||r_i r_i' - S||^2 = sum_i ||r_i||^4 - m ||S||^2: one pass over the rows beside S itself
    (the same value as scikit-learn's ``ledoit_wolf``, which also forms the d x d matrix of squares)."""
    m, d = r.shape
    S = r.T @ r / m
    mu = float(np.trace(S)) / d
    s_norm2 = float((S * S).sum())
    delta2 = (s_norm2 - 2 * mu * np.trace(S) + d * mu * mu) / d  # ||S - mu I||^2 / d
    beta2 = (float(((r * r).sum(1) ** 2).sum()) / m - s_norm2) / (m * d)
    shrink = 0.0 if delta2 <= 0 else min(max(beta2, 0.0), delta2) / delta2
    out = (1.0 - shrink) * S
    out[np.diag_indices(d)] += shrink * mu
    return out


def nonlinear_shrinkage_cov(r: np.ndarray, dof: int | None = None) -> np.ndarray:
    """The analytical nonlinear shrinkage of the covariance of centred rows `r` (m, d), d < dof (Ledoit & Wolf
    2020, Annals of Statistics 48(5)): each sample eigenvalue is replaced by its asymptotically best value,
    from a kernel estimate of the spectral density and its Hilbert transform. Where Ledoit-Wolf moves every
    eigenvalue toward their mean by one factor, this moves each by its own, which matters for a
    Mahalanobis distance in hundreds of dimensions. `dof` is the residuals' degrees of freedom (rows less
    the fitted columns; default m)."""
    m, d = r.shape
    n = int(dof or m)
    if d >= n:
        raise ValueError(f"nonlinear shrinkage needs fewer features ({d}) than degrees of freedom ({n})")
    lam, u = np.linalg.eigh(r.T @ r / n)
    lam = np.clip(lam, 1e-12 * max(float(lam.max()), 1e-300), None)
    h = n ** (-1.0 / 3.0)
    band = h * lam[None, :]  # the kernel's width at each eigenvalue (column j)
    t = (lam[:, None] - lam[None, :]) / band
    dens = (3 / 4 / math.sqrt(5)) * np.mean(np.maximum(1 - t * t / 5, 0) / band, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        hilb = (-3 / 10 / math.pi) * t + (3 / 4 / math.sqrt(5) / math.pi) * (1 - t * t / 5) * np.log(
            np.abs((math.sqrt(5) - t) / (math.sqrt(5) + t)))
    edge = np.abs(t) == math.sqrt(5)
    hilb[edge] = ((-3 / 10 / math.pi) * t)[edge]
    hilb = np.mean(hilb / band, axis=1)
    c = d / n
    best = lam / ((math.pi * c * lam * dens) ** 2 + (1 - c - math.pi * c * lam * hilb) ** 2)
    return (u * best) @ u.T


GENERATIVE_RANKS = (1, 2, 3, 5, 8, 1 + N_BUMPS)  # ranks of the generative head that validation chooses among


def generative_head_init(x: np.ndarray | None, y: np.ndarray | None, d_pad: int, *, std_cols: int | None = None,
                         choice_rows: int | None = None) -> list[dict[str, np.ndarray]]:
    """Critics of a Gaussian model of the features given the attribute, fitted on training rows `x` (m, d),
    `y` (m,), zero-padded to `d_pad` inputs: one per rank in ``GENERATIVE_RANKS`` (x and y None: the zero
    head, which adds nothing, alone), then as many again: with `std_cols` (the number of leading columns of
    `x` that are the standardised features, the first of its two views) these read those columns only,
    with the covariance's nonlinear shrinkage (:func:`nonlinear_shrinkage_cov`; the two views together are
    nearly collinear, which it does not survive) when there are enough rows for it (`choice_rows`, default
    the rows given: a refit passes its first fit's, so that it refits the same kind of head), else with
    Ledoit-Wolf's; without `std_cols` they repeat the first set. Every call thus returns the same number of
    heads, so critics of several layers can be stacked and a head named by its index.

    x | y ~ N(B phi(y) + c, S), phi the attribute's basis (:func:`y_basis`), B by least squares (a small
    ridge), S the residuals' Ledoit-Wolf shrunk covariance. Up to a function of x alone, which the
    normalised held-out critic removes, log N(x; B phi + c, S) = phi' a - phi' Q phi / 2 with
    a = M' (x - c), M = S^-1 B and Q = B' S^-1 B: keys Gw = M (d, p), Gc = -c M (1, p), GQ = Q (p, p).
    This is what linear discriminant analysis is for a category: it reads a mean of the features that
    moves with the attribute along a curve (age, yaw), which a regression of y on x, linear in x, cannot.

    Two corrections make it usable in hundreds of dimensions:

    * The head is centred: GP = Q^+ adds the function of x alone -a' Q^+ a / 2, so that
      T = -(phi - Q^+ a)' Q (phi - Q^+ a) / 2 <= 0 (a lies in Q's range). The raw log-likelihood
      ratio reaches tens of nats, where the critics' soft cap would flatten it.
    * The estimated B is noise beyond its signal: in the whitened space S^-1/2 B, scaled by the basis'
      own covariance, the noise adds tau = tr(S_sample S^-1) / m to every squared singular value
      (m rows, a p x d matrix of independent errors). Each singular value s is shrunk to
      max(s^2 - tau, 0) / s (its signal's length times the cosine between the noisy and the true
      direction, the best estimate of a spike in this model), and B is also cut to its top r
      directions, each r a candidate."""
    p = 1 + N_BUMPS
    zero = {"Gw": np.zeros((d_pad, p)), "Gc": np.zeros((1, p)), "GQ": np.zeros((p, p)), "GP": np.zeros((p, p))}
    if x is None or y is None:
        return [zero]
    x = np.asarray(x, dtype=np.float64)
    heads = _head_set(x, y, zero, 0, std_cols, choice_rows)
    if std_cols is None or not 0 < std_cols < x.shape[1]:
        return heads + heads  # the same dicts again: validation skips them
    return heads + _head_set(x, y, zero, 1, std_cols, choice_rows)


def generative_head(x: np.ndarray, y: np.ndarray, d_pad: int, index: int, *, std_cols: int | None = None,
                    choice_rows: int | None = None) -> dict[str, np.ndarray]:
    """Head `index` of :func:`generative_head_init` with the same arguments, fitting only its own set (a refit
    needs one head, not all of them)."""
    p = 1 + N_BUMPS
    zero = {"Gw": np.zeros((d_pad, p)), "Gc": np.zeros((1, p)), "GQ": np.zeros((p, p)), "GP": np.zeros((p, p))}
    k = len(GENERATIVE_RANKS)
    known = std_cols is not None and 0 < std_cols < x.shape[1]
    which = index // k if known else 0
    return _head_set(np.asarray(x, dtype=np.float64), y, zero, which, std_cols, choice_rows)[index % k]


def _head_set(x: np.ndarray, y: np.ndarray, zero: dict[str, np.ndarray], which: int, std_cols: int | None,
              choice_rows: int | None) -> list[dict[str, np.ndarray]]:
    """Set `which` of the generative heads: 0 reads all of `x` with Ledoit-Wolf's covariance; 1 reads the
    first `std_cols` columns with the nonlinear shrinkage when there are enough rows, else Ledoit-Wolf's."""
    if which == 0:
        return _generative_heads(x, y, zero, ledoit_wolf_cov)
    p = 1 + N_BUMPS
    cols = x.shape[1] if std_cols is None else std_cols
    if cols < (len(y) if choice_rows is None else choice_rows) - 2 * p:
        return _generative_heads(x[:, :cols], y, zero, lambda r: nonlinear_shrinkage_cov(r, dof=len(y) - p - 1))
    return _generative_heads(x[:, :cols], y, zero, ledoit_wolf_cov)


def _generative_heads(x: np.ndarray, y: np.ndarray, zero: dict[str, np.ndarray], cov_fn: Any
                      ) -> list[dict[str, np.ndarray]]:
    """:func:`generative_head_init`'s heads, one per rank, fitted on all of `x` with the covariance `cov_fn`."""
    p = 1 + N_BUMPS
    m, d = x.shape
    phi = y_basis(torch.from_numpy(np.asarray(y, dtype=np.float64))[None]).numpy()[0]
    pm, xm = phi.mean(0), x.mean(0)
    pc, xc = phi - pm, x - xm
    bt = np.linalg.solve(pc.T @ pc + 1e-3 * m * np.eye(p), pc.T @ xc)  # (p, d) = B'
    c = xm - pm @ bt
    resid = xc - pc @ bt
    cov = cov_fn(resid)
    lam, v = np.linalg.eigh(cov)
    lam = np.clip(lam, 1e-12 * max(float(lam.max()), 1e-300), None)
    bw = (bt @ v) / np.sqrt(lam)  # (p, d): B' S^-1/2 in the eigenbasis
    tau = float(((resid @ v) ** 2).sum(0) @ (1.0 / lam)) / (m * m)  # tr(S_sample S^-1) / m
    # reduced-rank regression: the directions that carry most of the fitted mean's variance, measured
    # with the basis' own covariance on the left and the noise's on the right
    pl, pv = np.linalg.eigh(pc.T @ pc / m + 1e-6 * np.eye(p))
    root = (pv * np.sqrt(pl)) @ pv.T
    inv_root = (pv / np.sqrt(pl)) @ pv.T
    u, sv, wt = np.linalg.svd(root @ bw, full_matrices=False)
    sv = np.clip(sv * sv - tau, 0.0, None) / np.maximum(sv, 1e-300)
    out = []
    for r in GENERATIVE_RANKS:
        r = min(r, len(sv))
        bw_r = inv_root @ ((u[:, :r] * sv[:r]) @ wt[:r])  # (p, d), rank r
        mm = v @ (bw_r / np.sqrt(lam)).T  # S^-1 B_r, (d, p)
        q = bw_r @ bw_r.T
        head = {k: a.copy() for k, a in zero.items()}
        head["Gw"][:d] = mm
        head["Gc"][0] = -c @ mm
        head["GQ"][:] = q
        head["GP"][:] = np.linalg.pinv(q, rcond=1e-10, hermitian=True)
        out.append(head)
    return out


def class_logits(p: dict[str, Tensor], f: Tensor) -> Tensor:
    """T(x, c) for every class c: f (G, B, k) -> (G, B, C)."""
    k = p["E"].shape[-1]
    logits = torch.baddbmm(p["eb"], f[..., :k], p["E"].transpose(1, 2))
    return logits + f[..., k:] if "V" in p else logits


def soft_cap(t: Tensor, cap: float) -> Tensor:
    """Smooth upper bound min(t, cap): a critic that extrapolates to huge values on a few
    held-out pairs would otherwise dominate the log-mean-exp term (DV is shift-invariant,
    so only the range of T matters)."""
    return cap - torch.nn.functional.softplus(cap - t)

__all__ = [
    "CriticShape",
    "GENERATIVE_RANKS",
    "N_BUMPS",
    "class_logits",
    "embed_y",
    "encode",
    "generative_head",
    "generative_head_init",
    "init_params",
    "ledoit_wolf_cov",
    "linear_head_init",
    "nonlinear_shrinkage_cov",
    "soft_cap",
    "y_basis",
]
