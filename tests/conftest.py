"""Shared fixtures: the real face-data bundle, small deterministic helpers."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from helpers import FEATURES_BACKEND, FEATURES_DIST, FEATURES_VERSION, install_plugin

os.environ.setdefault("FACEAUDIT_NO_PROGRESS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FACEAUDIT_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real face-data bundle (LFW, UTKFace, FG-NET, MobileFaceNet); skip when absent."""
    if not (SHARED_DATA / "models" / "mobilefacenet.onnx").is_file():
        pytest.skip(
            f"real face data not found at {SHARED_DATA} "
            "(set FACEAUDIT_SHARED_DATA to the bundle's folder to run this test)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def mobilefacenet(shared_data: Path) -> Path:
    """Path to the real MobileFaceNet ONNX model in the bundle."""
    return shared_data / "models" / "mobilefacenet.onnx"


class BundleEmbedder:
    """MobileFaceNet final-layer embeddings of bundle images, each image embedded once per test session.

    A plain onnxruntime pipeline, independent of faceaudit's backends (aligned 112x112 RGB crops,
    (x - 127.5) / 127.5, NCHW), so the real-data tests check faceaudit against an outside reference.
    """

    def __init__(self, model: Path) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        self._sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        self._input = self._sess.get_inputs()[0].name
        self._cache: dict[Path, np.ndarray] = {}

    def __call__(self, paths: list[Path]) -> np.ndarray:
        """Unnormalised float32 embeddings of `paths`, one row per path, in order."""
        from PIL import Image

        keys = [Path(p).resolve() for p in paths]
        todo = list(dict.fromkeys(k for k in keys if k not in self._cache))
        for s in range(0, len(todo), 64):
            chunk = todo[s : s + 64]
            batch = np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) for p in chunk])
            x = np.ascontiguousarray(((batch - 127.5) / 127.5).transpose(0, 3, 1, 2))
            for key, row in zip(chunk, self._sess.run(None, {self._input: x})[0]):
                self._cache[key] = row.astype(np.float32)
        return np.stack([self._cache[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)


@pytest.fixture(scope="session")
def embed_bundle(mobilefacenet: Path) -> BundleEmbedder:
    """Embed bundle images with MobileFaceNet, reusing every image already embedded in this session."""
    return BundleEmbedder(mobilefacenet)


@pytest.fixture(scope="module")
def feature_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`helpers.FeatureFileBackend` installed as a plugin for one test module; yields its backend name.

    Registered the way every plugin is (a dist-info with a `faceaudit.backends` entry point on sys.path),
    so faceaudit's own registry finds it and .feats files open without the faceaudit-features plugin.
    """
    root = tmp_path_factory.mktemp("feature_backend_site")
    install_plugin(root, FEATURES_DIST, FEATURES_VERSION, "helpers", {FEATURES_BACKEND: "FeatureFileBackend"})
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(root))
        importlib.invalidate_caches()
        yield FEATURES_BACKEND
    importlib.invalidate_caches()
