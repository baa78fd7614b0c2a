"""Decoding one shard: images to preprocessed arrays in a thread pool, then the one model call.

Both executors decode through `decode_batch` and run the model through
`infer_batch`, so a shard computed in this process and one computed by a Ray
actor come from the same code, image for image.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor as PoolExecutor
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from faceaudit.backends import Backend, check_features
from faceaudit.data.images import decode_image
from faceaudit.data.preprocess import PreprocessSpec
from faceaudit.errors import InputError

__all__ = ["DecodedBatch", "PendingBatch", "decode_batch", "infer_batch", "load_image", "row_landmarks"]


def load_image(path: str, landmarks: np.ndarray | None, spec: PreprocessSpec) -> np.ndarray:
    """One image decoded and preprocessed (aligned from `landmarks` when given); errors name the file."""
    img = decode_image(path)
    try:
        return spec(img, landmarks)
    except InputError as exc:
        raise InputError(f"Image {path}: {exc}") from exc


def row_landmarks(landmarks: np.ndarray | None, i: int) -> np.ndarray | None:
    """Landmarks of row i, or None (resize instead) when absent or not finite."""
    if landmarks is None or not np.isfinite(landmarks[i]).all():
        return None
    return landmarks[i]


@dataclass(frozen=True)
class DecodedBatch:
    """The images of one shard that could be read (`arrays`, in row order), which ones (`ok`), and why not."""

    arrays: list[np.ndarray]
    ok: np.ndarray
    errors: list[str]


class PendingBatch:
    """A shard whose images are being decoded; `result()` waits for them, like a Future."""

    def __init__(self, futures: Sequence[Future[np.ndarray]]) -> None:
        self._futures = list(futures)

    def result(self, strict: bool = False) -> DecodedBatch:
        """The decoded shard; an unreadable image is recorded, or raised under `strict`."""
        arrays: list[np.ndarray] = []
        ok = np.zeros(len(self._futures), dtype=bool)
        errors: list[str] = []
        for j, fut in enumerate(self._futures):
            try:
                arrays.append(fut.result())
                ok[j] = True
                errors.append("")
            except InputError as exc:
                if strict:
                    raise
                errors.append(str(exc))
        return DecodedBatch(arrays, ok, errors)


def decode_batch(
    pool: PoolExecutor, paths: Sequence[str], landmarks: np.ndarray | None, spec: PreprocessSpec
) -> PendingBatch:
    """Start decoding one shard's images on `pool`; `landmarks` is (len(paths), 5, 2) or None.

    Why: returning at once lets the local executor decode the next shards while
    the model runs this one; a Ray actor calls ``decode_batch(...).result()``.
    """
    return PendingBatch([pool.submit(load_image, p, row_landmarks(landmarks, j), spec) for j, p in enumerate(paths)])


def infer_batch(
    model: Backend, decoded: DecodedBatch, layers: Sequence[str], pooling: str
) -> dict[str, np.ndarray] | None:
    """Pooled features of the readable images of one shard, from one model call; None when none was readable."""
    if not decoded.arrays:
        return None
    feats = model.extract(np.stack(decoded.arrays), list(layers), pooling=pooling)
    check_features(model, feats, list(layers), len(decoded.arrays))
    return feats
