"""Face alignment from 5 landmarks to the ArcFace/InsightFace 112x112 template.

A least-squares similarity transform (Umeyama 1991: rotation, uniform scale,
translation; no shear, no reflection) maps the landmarks onto the template, then
the image is warped with bilinear interpolation and black borders, following
OpenCV's warpAffine conventions (pixel centres at integer coordinates), so crops
match those made with ``cv2.warpAffine(..., INTER_LINEAR, BORDER_CONSTANT)``.
"""

from __future__ import annotations

import numpy as np

from faceaudit.errors import InputError

#: ArcFace template for a 112x112 crop, (x, y) pixels: image-left eye, image-right eye, nose, mouth left, mouth right.
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (2, 3) taking points `src` (n, 2) onto `dst` (n, 2)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise InputError(f"umeyama needs two (n, 2) point sets of the same shape, got {src.shape} and {dst.shape}.")
    ms, md = src.mean(0), dst.mean(0)
    s0, d0 = src - ms, dst - md
    var = (s0**2).sum(1).mean()
    if not np.isfinite(var) or var <= 0:
        raise InputError("Landmarks are degenerate (all at one point or not finite); cannot align.")
    u, s, vt = np.linalg.svd(d0.T @ s0 / len(src))
    d = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1, 1] = -1
    r = u @ d @ vt
    c = (s * np.diag(d)).sum() / var
    return np.hstack([c * r, (md - c * r @ ms)[:, None]])


def warp_affine(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Warp uint8 (H, W, C) `image` by forward affine `matrix` (2, 3) into `size` = (width, height).

    Bilinear, constant black border (outside pixels count as 0), rounded back to uint8.
    """
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[:, :, None]
    h, w = img.shape[:2]
    out_w, out_h = size
    m = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(m)
    ys, xs = np.mgrid[0:out_h, 0:out_w].astype(np.float64)
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    x0 = np.floor(sx).astype(np.int64)
    y0 = np.floor(sy).astype(np.int64)
    fx = (sx - x0)[:, :, None]
    fy = (sy - y0)[:, :, None]
    pad = np.zeros((h + 2, w + 2, img.shape[2]), dtype=np.float32)
    pad[1:-1, 1:-1] = img
    # indices into the padded image; anything further out reads the zero border
    x0p = np.clip(x0 + 1, 0, w + 1)
    x1p = np.clip(x0 + 2, 0, w + 1)
    y0p = np.clip(y0 + 1, 0, h + 1)
    y1p = np.clip(y0 + 2, 0, h + 1)
    outside = (x0 < -1) | (x0 > w - 1) | (y0 < -1) | (y0 > h - 1)
    val = (
        pad[y0p, x0p] * (1 - fx) * (1 - fy)
        + pad[y0p, x1p] * fx * (1 - fy)
        + pad[y1p, x0p] * (1 - fx) * fy
        + pad[y1p, x1p] * fx * fy
    )
    val[outside] = 0
    out = np.clip(np.rint(val), 0, 255).astype(np.uint8)
    return out if np.asarray(image).ndim == 3 else out[:, :, 0]


def align_face(image: np.ndarray, landmarks: np.ndarray, size: tuple[int, int] = (112, 112)) -> np.ndarray:
    """Align uint8 (H, W, 3) `image` from 5 landmarks (5, 2) (x, y, original pixels) to the ArcFace template.

    For a `size` other than 112x112 the template is scaled to it. Returns uint8 (height, width, 3).
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (5, 2):
        raise InputError(f"Alignment needs 5 (x, y) landmarks, shape (5, 2); got {lm.shape}.")
    if not np.isfinite(lm).all():
        raise InputError("Landmarks contain NaN/inf; cannot align this face.")
    w, h = size
    template = ARCFACE_TEMPLATE_112 * np.array([w / 112.0, h / 112.0])
    return warp_affine(image, umeyama(lm, template), (w, h))

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "align_face",
    "umeyama",
    "warp_affine",
]
