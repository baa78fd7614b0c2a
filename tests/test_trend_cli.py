"""`faceaudit trend` and `faceaudit compare` in-process (skipped until the commands are registered in the CLI)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from faceaudit.cli import main
from helpers import FEATURES_BACKEND, FEATURES_DIST, FEATURES_VERSION, save_features


def _command(name: str) -> None:
    if name not in main.commands:
        pytest.skip(f"`faceaudit {name}` is not registered in faceaudit.cli yet")


def _write_checkpoints(folder: Path, suffix: str) -> tuple[list[str], Path]:
    """A manifest of 400 images (never decoded) with an age, and three checkpoints of known features.

    `.feats` files are read by the test backend (helpers.FeatureFileBackend), `.npz` files by the
    faceaudit-features plugin.
    """
    rng = np.random.default_rng(3)
    n = 400
    age = rng.normal(size=n)
    paths = []
    for i in range(n):
        p = folder / f"{i:04d}.jpg"
        p.write_bytes(b"")
        paths.append(str(p))
    manifest = folder / "faces.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "age"])
        w.writerows([p, f"{a:.5f}"] for p, a in zip(paths, age))
    files = []
    for k, rho in enumerate((0.2, 0.8, 0.4)):
        x = rng.normal(size=(n, 3))
        x[:, 0] = rho * age + math.sqrt(1 - rho**2) * rng.normal(size=n)
        f = folder / f"ck{k}{suffix}"
        save_features(f, paths, embedding=x.astype(np.float32))
        files.append(str(f))
    return files, manifest


@pytest.fixture()
def checkpoints(tmp_path: Path, feature_backend: str) -> tuple[list[str], Path]:
    return _write_checkpoints(tmp_path, ".feats")


def _trend(files: list[str], manifest: Path, out: Path) -> Result:
    return CliRunner().invoke(main, ["trend", *files, "--data", str(manifest), "--attrs", "age", "--labels",
                                     "0,1k,2k", "--layers", "final", "--estimator", "entropy", "--quick",
                                     "--device", "cpu", "--out", str(out)])


def test_cli_trend(checkpoints: tuple[list[str], Path], tmp_path: Path) -> None:
    _command("trend")
    files, manifest = checkpoints
    out = tmp_path / "out"
    res = _trend(files, manifest, out)
    assert res.exit_code == 0, res.output
    assert (out / "trend.html").is_file() and (out / "trend.json").is_file()
    report = json.loads((out / "trend.json").read_text())  # the plugin that read the files is on record
    assert {c["backend_package"] for c in report["checkpoints"]} == {FEATURES_DIST}
    assert report["environment"]["plugins"] == f"{FEATURES_DIST} {FEATURES_VERSION} (backend {FEATURES_BACKEND})"
    assert f"{FEATURES_BACKEND} ({FEATURES_DIST} {FEATURES_VERSION})" in (out / "trend.html").read_text()
    res = CliRunner().invoke(main, ["trend", *files, "--data", str(manifest), "--attrs", "age", "--labels", "0,1k",
                                    "--out", str(out)])
    assert res.exit_code == 2 and "label" in res.output


def test_cli_trend_with_the_features_plugin(tmp_path: Path) -> None:
    """The real faceaudit-features plugin (installed in CI) reads .npz checkpoints and is on record."""
    pytest.importorskip("faceaudit_features")
    _command("trend")
    files, manifest = _write_checkpoints(tmp_path, ".npz")
    out = tmp_path / "out"
    res = _trend(files, manifest, out)
    assert res.exit_code == 0, res.output
    report = json.loads((out / "trend.json").read_text())
    assert {c["backend_package"] for c in report["checkpoints"]} == {"faceaudit-features"}
    assert report["environment"]["plugins"].startswith("faceaudit-features ")
    assert "features (faceaudit-features " in (out / "trend.html").read_text()


def test_cli_compare(checkpoints: tuple[list[str], Path], tmp_path: Path) -> None:
    _command("compare")
    files, manifest = checkpoints
    out = tmp_path / "cmp"
    res = CliRunner().invoke(main, ["compare", files[0], files[1], "--data", str(manifest), "--attrs", "age",
                                    "--layers", "final", "--estimator", "entropy", "--quick", "--device", "cpu",
                                    "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "compare.html").is_file()
    report = json.loads((out / "compare.json").read_text())
    assert {m["backend_package"] for m in report["models"]} == {FEATURES_DIST}
    assert report["environment"]["plugins"] == f"{FEATURES_DIST} {FEATURES_VERSION} (backend {FEATURES_BACKEND})"
    assert f"{FEATURES_BACKEND} ({FEATURES_DIST} {FEATURES_VERSION})" in (out / "compare.html").read_text()
