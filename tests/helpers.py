"""Small helpers shared by the test modules: closed-form MI, known-answer tasks, manifest writing, fast settings."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import integrate, stats

#: Critic settings for tests of the upper rooms (audit, trend, compare), where the estimate only has to
#: be roughly right; each module passes its own `max_steps`/`min_steps` on top.
FAST_CRITIC = {"eval_every": 25, "patience": 4, "hidden": 32, "batch_size": 256}

#: Training settings for the expressivity core's known-answer tests.
FAST = {"max_steps": 800, "patience": 4}


def fast_critic(max_steps: int, min_steps: int) -> dict:
    """`FAST_CRITIC` with a step budget: the estimator options the pipeline tests train with."""
    return {"max_steps": max_steps, "min_steps": min_steps, **FAST_CRITIC}


def gaussian_mi(rho: float) -> float:
    """I(X; Y) in nats for jointly Gaussian scalars X, Y with correlation rho: -1/2 log(1 - rho^2)."""
    return -0.5 * math.log(1 - rho**2)


def write_manifest(path: Path, rows: list[dict]) -> Path:
    """Write `rows` (dicts with the same keys) as a UTF-8 CSV manifest and return its path."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One intra-op torch thread for the module: the CI machine is shared, and more threads only spin."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def gaussian_task(n: int, d: int, rho: float, seed: int):
    """Y ~ N(0,1); X_0 = rho*Y + sqrt(1-rho^2)*noise, other columns independent noise.

    Only one coordinate pair is dependent, so I(X;Y) = -1/2 log(1 - rho^2) nats.
    """
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n)
    x = rng.normal(size=(n, d))
    x[:, 0] = rho * y + math.sqrt(1 - rho**2) * x[:, 0]
    return x.astype(np.float32), y, gaussian_mi(rho)


def binary_mixture_mi(mu: float) -> float:
    """I(X;Y) for Y ~ Bernoulli(1/2), X | Y ~ N((2Y-1) mu e_1, I): only x_1 matters, so a 1-D integral."""

    def integrand(t: float) -> float:
        p0, p1 = stats.norm.pdf(t, -mu), stats.norm.pdf(t, mu)
        px = 0.5 * (p0 + p1)
        q = p1 / (p0 + p1)
        h = -(q * math.log(q) if q > 0 else 0.0) - ((1 - q) * math.log(1 - q) if q < 1 else 0.0)
        return px * h

    h_cond, _ = integrate.quad(integrand, -mu - 12, mu + 12, limit=200, epsabs=1e-12)
    return math.log(2) - h_cond
