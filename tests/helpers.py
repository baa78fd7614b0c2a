"""Small helpers shared by the test modules: closed-form MI, known-answer tasks, manifest writing, fast settings."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from faceaudit.backends import Backend, LayerInfo, PrecomputedFeatures
from faceaudit.errors import ModelError

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


# --------------------------------------------------------------------------- a precomputed-features backend for tests

#: The distribution, version and entry point under which `FeatureFileBackend` is installed for a test module.
FEATURES_DIST, FEATURES_VERSION, FEATURES_BACKEND = "faceaudit-test-features", "0.0.1", "testfeatures"


class FeatureFileBackend(Backend, PrecomputedFeatures):
    """Features saved by `save_features` (a .feats file): one (n, dim) array per layer and the image `paths`.

    The trend, compare and pipeline tests feed known features through it, so they run whether or not the
    optional faceaudit-features plugin is installed; it is registered as a real plugin by the
    `feature_backend` fixture (conftest.py) and keeps the contract of `faceaudit.testing.check_backend`.
    """

    name = FEATURES_BACKEND
    suffixes = (".feats",)

    def __init__(self, path: str | Path, **options: Any) -> None:
        super().__init__(path, **options)
        try:
            with np.load(self.path, allow_pickle=False) as z:
                raw = {k: z[k] for k in z.files}
        except Exception as exc:
            raise ModelError(f"{self.path} is not a features file written by save_features ({exc}).") from exc
        paths = raw.pop("paths", None)
        if paths is None or not raw or any(np.ndim(v) != 2 or len(v) != len(paths) for v in raw.values()):
            raise ModelError(f"{self.path} needs 'paths' and one (n_paths, dim) array per layer.")
        self._rows = {os.path.normpath(str(p)): i for i, p in enumerate(paths)}
        self._arrays = {k: np.asarray(v, dtype=np.float32) for k, v in raw.items()}
        self._layers = [LayerInfo(k, "Precomputed", (None, a.shape[1]), i) for i, (k, a) in enumerate(self._arrays.items())]
        self._final = "embedding" if "embedding" in self._arrays else list(self._arrays)[-1]
        self._check_final(options.get("final_layer"))

    def lookup(self, paths: Sequence[str], layers: Sequence[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The rows of `paths` this file holds (matched by normalised path) and the found mask."""
        idx = np.array([self._rows.get(os.path.normpath(str(p)), -1) for p in paths], dtype=np.int64)
        found = idx >= 0
        return {n: self._arrays[n][idx[found]] for n in layers}, found


def save_features(path: Path, paths: Sequence[Any], **layers: np.ndarray) -> Path:
    """Write a .feats file for `FeatureFileBackend`: the image `paths` and one (n, dim) array per layer."""
    with open(path, "wb") as fh:  # a file handle: numpy would append .npz to the name
        np.savez(fh, paths=np.array([str(p) for p in paths]), **layers)
    return path


def install_plugin(root: Path, dist: str, version: str, module: str, entry_points: Mapping[str, str],
                   source: str | None = None) -> None:
    """A package on `root` (a sys.path entry): its dist-info with `faceaudit.backends` entry points, and the
    module's `source` when given (else `module` must already be importable)."""
    if source is not None:
        (root / f"{module}.py").write_text(source)
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "\n".join(f"{name} = {module}:{obj}" for name, obj in entry_points.items())
    (info / "entry_points.txt").write_text(f"[faceaudit.backends]\n{lines}\n")
