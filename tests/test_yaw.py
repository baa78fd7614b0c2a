"""Yaw proxy from 5 landmarks: exact on a synthetic 3-D face, bounded error on the real manifests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from faceaudit.data import load_manifest, yaw_from_landmarks
from faceaudit.errors import InputError


def _project(yaw_deg: float, roll_deg: float = 0.0) -> np.ndarray:
    """Orthographic projection of a 3-D 5-point face rotated by yaw (about the vertical axis) then roll."""
    # eyes at +-w, nose tip protruding; image x to the right, y down; nose in the eye plane's depth offset
    pts = np.array([[-30, 0, 0], [30, 0, 0], [0, 25, 30], [-22, 50, 5], [22, 50, 5]], float)
    t = np.radians(yaw_deg)
    # positive yaw turns the face toward the image's left: the nose moves to -x
    rot_y = np.array([[np.cos(t), 0, -np.sin(t)], [0, 1, 0], [np.sin(t), 0, np.cos(t)]])
    p = pts @ rot_y.T
    r = np.radians(roll_deg)
    rot_z = np.array([[np.cos(r), -np.sin(r)], [np.sin(r), np.cos(r)]])
    return p[:, :2] @ rot_z.T + np.array([100.0, 120.0])


def test_known_answer_synthetic_geometry() -> None:
    # with the nose protruding by d and eyes at +-w, the proxy returns asin((d / w) * tan(yaw)) exactly
    yaws = np.array([-40.0, -20.0, -5.0, 0.0, 5.0, 20.0, 40.0])
    lm = np.stack([_project(y, roll_deg=17.0) for y in yaws])
    got = yaw_from_landmarks(lm)
    expect = np.degrees(np.arcsin(np.clip(30 / 30 * np.tan(np.radians(yaws)), -1, 1)))
    np.testing.assert_allclose(got, expect, atol=1e-9)
    nz = yaws != 0
    assert np.all(np.sign(got[nz]) == np.sign(yaws[nz]))  # sign convention: > 0 = turned toward image's left
    assert np.isnan(yaw_from_landmarks(np.full((1, 5, 2), np.nan)))[0]
    with pytest.raises(InputError):
        yaw_from_landmarks(np.zeros((3, 4, 2)))


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["lfw", "utkface", "fgnet"])
def test_proxy_error_on_real_manifests(shared_data: Path, name: str) -> None:
    m = load_manifest(shared_data / name / "manifest.csv", "yaw", check_files=False)
    import pandas as pd

    df = pd.read_csv(shared_data / name / "manifest.csv")
    ok = (df["yaw_source"] == "mediapipe").to_numpy()  # the reference is FaceMesh, not the bundle's own proxy
    proxy = yaw_from_landmarks(m.landmarks)[ok]
    ref = m.attributes["yaw"].values[ok]
    mae = float(np.mean(np.abs(proxy - ref)))
    corr = float(np.corrcoef(proxy, ref)[0, 1])
    detail = f"{name}: n={ok.sum()} MAE={mae:.2f} deg corr={corr:.3f} bias={np.mean(proxy - ref):+.2f} deg"
    # measured: lfw 4.94 / 0.927, utkface 2.52 / 0.917, fgnet 3.81 / 0.932; bounds leave a small margin
    assert mae < 6.0, detail
    assert corr > 0.9, detail
