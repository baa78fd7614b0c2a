"""The example backend keeps faceaudit's backend contract, and computes what it says."""

from pathlib import Path

import numpy as np

from faceaudit.backends import open_model
from faceaudit.testing import check_backend
from faceaudit_example_backend import PcaFaceBackend


def tiny_model(folder: Path, side: int = 16, k: int = 8) -> Path:
    rng = np.random.default_rng(0)
    components = np.linalg.qr(rng.standard_normal((side * side, k)))[0].T   # k orthonormal rows
    path = folder / "tiny.pcaface.npz"
    np.savez(path, mean=np.zeros(side * side), components=components)
    return path


def test_conforms_to_the_backend_contract(tmp_path: Path) -> None:
    check_backend(PcaFaceBackend, tiny_model(tmp_path))


def test_pca_coefficients(tmp_path: Path) -> None:
    model = open_model(tiny_model(tmp_path))
    batch = np.random.default_rng(1).standard_normal((4, 3, 16, 16)).astype(np.float32)
    got = model.extract(batch, ["grey", "pca"])
    grey = batch.mean(axis=1).reshape(4, -1)
    np.testing.assert_allclose(got["grey"], grey, rtol=1e-6)
    np.testing.assert_allclose(got["pca"], grey @ model._components.T, rtol=1e-5, atol=1e-6)
