"""The one measuring pipeline: trend and compare select rows as the audit does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from faceaudit.compare import CompareConfig, run_compare
from faceaudit.errors import InputError
from faceaudit.pipeline import MIN_READABLE_IMAGES
from faceaudit.trend import TrendConfig, run_trend
from helpers import fast_critic, save_features, write_manifest

#: The checkpoints are .feats files of known features, read by the test backend (helpers.FeatureFileBackend).
pytestmark = pytest.mark.usefixtures("feature_backend")

FAST = fast_critic(max_steps=60, min_steps=20)


def _checkpoints(root: Path, n: int, n_models: int = 2) -> tuple[Path, list[Path]]:
    """`n` images (never decoded) with an age, and `n_models` precomputed-feature checkpoints that carry it."""
    rng = np.random.default_rng(7)
    paths = []
    for i in range(n):
        p = root / "images" / f"img_{i:04d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
        paths.append(p)
    age = rng.normal(size=n)
    manifest = write_manifest(root / "faces.csv", [{"path": str(p), "age": f"{a:.6f}"} for p, a in zip(paths, age)])
    files = []
    for k in range(n_models):
        emb = np.c_[age + rng.normal(size=n), rng.normal(size=(n, 3))].astype(np.float32)
        files.append(save_features(root / f"step_{k}.feats", paths, embedding=emb))
    return manifest, files


def _trend(manifest: Path, files: list[Path], out: Path, **kw) -> object:
    return run_trend(TrendConfig(checkpoints=files, manifest=manifest, attrs="age:continuous", layers="final",
                                 estimator="entropy", seeds=1, device="cpu", out_dir=out, progress=False,
                                 check_input_spec=False, estimator_options=FAST, **kw))


def test_trend_and_compare_subsample_for_the_estimators_like_the_audit(tmp_path: Path) -> None:
    manifest, files = _checkpoints(tmp_path, 120)
    trend = _trend(manifest, files, tmp_path / "trend", expressivity_max_rows=80)
    assert trend.report["data"]["n_used"] == 120
    assert any("random subset of 80 of 120 images" in w for w in trend.report["warnings"])
    assert {e["n"] for e in trend.report["expressivity"]} == {80}
    cmp = run_compare(CompareConfig(models=files, manifest=manifest, attrs="age:continuous", layers="final",
                                    estimator="entropy", seeds=1, device="cpu", out_dir=tmp_path / "cmp",
                                    progress=False, check_input_spec=False, estimator_options=FAST,
                                    expressivity_max_rows=80))
    assert {e["n"] for e in cmp.report["expressivity"]} == {80}


def test_trend_stops_below_the_audits_minimum_of_readable_images(tmp_path: Path) -> None:
    manifest, files = _checkpoints(tmp_path, MIN_READABLE_IMAGES - 1)
    with pytest.raises(InputError, match=f"Only {MIN_READABLE_IMAGES - 1} of .* read by every checkpoint"):
        _trend(manifest, files, tmp_path / "out")


def test_the_test_backend_keeps_the_backend_contract(tmp_path: Path, feature_backend: str) -> None:
    from faceaudit.testing import CHECKS, check_backend
    from helpers import FeatureFileBackend

    rng = np.random.default_rng(0)
    paths = [str(tmp_path / f"img_{i}.jpg") for i in range(9)]
    f = save_features(tmp_path / "m.feats", paths, mid=rng.normal(size=(9, 5)).astype(np.float32),
                      embedding=rng.normal(size=(9, 3)).astype(np.float32))
    assert check_backend(FeatureFileBackend, f, paths=paths) == list(CHECKS)
