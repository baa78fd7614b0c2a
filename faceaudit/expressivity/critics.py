"""Stacked statistics networks: G independent critics held in one set of tensors.

Every parameter has a leading critic axis, so a forward pass for all critics
is a handful of batched matmuls (torch.baddbmm) instead of G small ones.
Each critic is initialised from its own numpy Generator with its own true
input width, then zero-padded to the common width: zero input columns get
zero gradients and zero Adam updates, so a critic trained in a stack follows
the same trajectory as the same critic trained alone.

Critic form: T(x, y) = <f(x), g(y)> with f an MLP encoder of the features
(the heavy part, shared by every y) and g a small MLP of a 1-D continuous y
or a learned embedding of a category. Being separable, T can be evaluated
on all n x n (x_i, y_j) pairs of a batch with one matmul, which gives a
low-variance marginal term.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


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
    seeds: list[int], true_dims: list[int], shape: CriticShape, *, continuous: bool, conditional: bool
) -> dict[str, np.ndarray]:
    """Initialise G critics (one per seed) as padded numpy arrays."""
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
        if continuous:
            add("U1", _uniform(rng, 1, (1, hy)))
            add("c1", _uniform(rng, 1, (1, hy)))
            add("U2", _uniform(rng, hy, (hy, hy)))
            add("c2", _uniform(rng, hy, (1, hy)))
            add("U3", _uniform(rng, hy, (hy, k)))
            add("c3", _uniform(rng, hy, (1, k)))
        else:
            add("E", rng.normal(0.0, 1.0 / np.sqrt(k), size=(shape.n_classes, k)).astype(np.float32))
            add("eb", np.zeros((1, shape.n_classes), np.float32))
    return {name: np.stack(vals) for name, vals in keys.items()}


def encode(p: dict[str, Tensor], x: Tensor) -> Tensor:
    """f(x) for all critics: x (G, B, d) -> (G, B, head_out)."""
    a = torch.nn.functional.elu(torch.baddbmm(p["b1"], x, p["W1"]))
    a = torch.nn.functional.elu(torch.baddbmm(p["b2"], a, p["W2"]))
    return torch.baddbmm(p["b3"], a, p["W3"])


def embed_y(p: dict[str, Tensor], y: Tensor) -> Tensor:
    """g(y) for a continuous y: (G, B) -> (G, B, embed)."""
    b = torch.nn.functional.elu(torch.baddbmm(p["c1"], y.unsqueeze(-1), p["U1"]))
    b = torch.nn.functional.elu(torch.baddbmm(p["c2"], b, p["U2"]))
    return torch.baddbmm(p["c3"], b, p["U3"])


def class_logits(p: dict[str, Tensor], f: Tensor) -> Tensor:
    """T(x, c) for every class c: f (G, B, k) -> (G, B, C)."""
    return torch.baddbmm(p["eb"], f, p["E"].transpose(1, 2))


def soft_cap(t: Tensor, cap: float) -> Tensor:
    """Smooth upper bound min(t, cap): a critic that extrapolates to huge values on a few
    held-out pairs would otherwise dominate the log-mean-exp term (DV is shift-invariant,
    so only the range of T matters)."""
    return cap - torch.nn.functional.softplus(cap - t)
