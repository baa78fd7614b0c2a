"""Alignment: known-answer similarity transforms, and crops that match the bundle's aligned faces."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from faceaudit.data.align import ARCFACE_TEMPLATE_112, align_face, umeyama, warp_affine
from faceaudit.errors import InputError


def test_umeyama_recovers_a_similarity() -> None:
    theta, scale, t = np.deg2rad(17.0), 1.7, np.array([5.0, -3.0])
    r = scale * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    src = np.random.default_rng(0).uniform(0, 100, (5, 2))
    m = umeyama(src, src @ r.T + t)
    np.testing.assert_allclose(m[:, :2], r, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-9)


def test_umeyama_never_reflects() -> None:
    src = ARCFACE_TEMPLATE_112.copy()
    mirrored = src * [-1, 1]
    m = umeyama(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0


def test_warp_identity_and_translation() -> None:
    img = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    same = warp_affine(img, np.array([[1.0, 0, 0], [0, 1.0, 0]]), (30, 20))
    np.testing.assert_array_equal(same, img)
    shifted = warp_affine(img, np.array([[1.0, 0, 2], [0, 1.0, 1]]), (30, 20))
    np.testing.assert_array_equal(shifted[1:, 2:], img[:-1, :-2])
    assert (shifted[0] == 0).all() and (shifted[:, :2] == 0).all()  # black border


def test_align_places_landmarks_on_template() -> None:
    # a black image with 5 white dots at known landmarks lands them on the template
    lm = np.array([[60.0, 80], [120, 70], [95, 110], [70, 140], [125, 132]])
    img = np.zeros((220, 200, 3), np.uint8)
    for x, y in lm:
        img[int(y) - 1 : int(y) + 2, int(x) - 1 : int(x) + 2] = 255
    crop = align_face(img, lm).astype(float).sum(2)
    m = umeyama(lm, ARCFACE_TEMPLATE_112)
    mapped = lm @ m[:, :2].T + m[:, 2]
    for x, y in mapped:
        assert crop[int(round(y)), int(round(x))] > 0
    with pytest.raises(InputError, match="5"):
        align_face(img, lm[:4])


@pytest.mark.realdata
def test_alignment_matches_bundle_crops(shared_data: Path) -> None:
    from faceaudit.data.images import decode_image

    root = shared_data / "lfw"
    with open(root / "manifest.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["raw_path"]]
    assert len(rows) >= 100
    diffs = []
    for r in rows[:100]:
        lm = np.array([[float(r[f"lm_x{k}"]), float(r[f"lm_y{k}"])] for k in range(1, 6)])
        crop = align_face(decode_image(root / r["raw_path"]), lm)
        ref = decode_image(root / r["path"])
        diffs.append(np.abs(crop.astype(float) - ref).mean())
    # the bundle's crops are JPEG re-encodings of cv2.warpAffine output: ~1 grey level apart
    assert np.mean(diffs) < 1.6, np.mean(diffs)
    assert np.max(diffs) < 3.0, np.max(diffs)
