"""Head yaw (degrees) from five facial landmarks: a geometric proxy, not a pose estimator."""

from __future__ import annotations

import numpy as np

from faceaudit.errors import InputError


def yaw_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """Estimate head yaw in degrees from 5-point landmarks, so pose groups exist when a manifest has no yaw.

    Landmarks are (n, 5, 2) pixel coordinates (x right, y down) in the order eye on the image's left, eye on
    the image's right, nose tip, mouth corner on the image's left, mouth corner on the image's right (the
    ArcFace/InsightFace order). The in-plane rotation (roll) is removed using the eye line; the horizontal
    offset of the nose tip from the eye midpoint, divided by half the eye distance, is taken as sin(yaw):
    ``yaw = degrees(asin(clip((mid_x - nose_x) / (eye_dist / 2), -1, 1)))``, so it saturates at +-90.
    Sign: yaw > 0 means the face is turned toward the image's left (the subject's right), the AFLW2000-3D
    convention. It is a PROXY: measured against MediaPipe FaceMesh yaw it has a mean absolute error of
    about 2.5-5 degrees and a correlation of about 0.92-0.93 on LFW, UTKFace and FG-NET (see benchmarks/RESULTS.md);
    it degrades for strong profiles, where 2-D landmarks collapse. Rows with non-finite landmarks or
    coincident eyes give NaN.
    """
    lm = np.asarray(landmarks, dtype=float)
    if lm.ndim != 3 or lm.shape[1:] != (5, 2):
        raise InputError(f"landmarks must have shape (n, 5, 2) (x, y per point), got {lm.shape}")
    le, re, nose = lm[:, 0], lm[:, 1], lm[:, 2]
    d = re - le
    eye_dist = np.hypot(d[:, 0], d[:, 1])
    roll = np.arctan2(d[:, 1], d[:, 0])
    off = nose - (le + re) / 2.0
    # x component of the nose offset after rotating by -roll
    off_x = np.cos(roll) * off[:, 0] + np.sin(roll) * off[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = -off_x / (eye_dist / 2.0)
        yaw = np.degrees(np.arcsin(np.clip(ratio, -1.0, 1.0)))
    yaw[~np.isfinite(ratio) | (eye_dist <= 0)] = np.nan
    return yaw

__all__ = [
    "yaw_from_landmarks",
]
