"""Turning feature maps into vectors, one batch at a time (memory stays bounded).

Pooling specs (strings):

* ``"avg"`` (default): global average over the spatial axes, (N, C, H, W) -> (N, C).
* ``"max"``: global maximum over the spatial axes.
* ``"gridK"`` (e.g. ``"grid4"``): adaptive K x K spatial average, (N, C, H, W) -> (N, C*K*K);
  keeps coarse spatial layout, which global pooling throws away.
* ``"flatten"``: every value, (N, C*H*W); refused above ``FLATTEN_MAX_DIM`` values per image.

4-D tensors inside a model are read as (N, C, H, W) (ONNX and PyTorch convolution
layout); 3-D as (N, C, L); 2-D tensors are already vectors and pass through.
The model *input* is special: a global average of an image is just its mean colour,
so for the input layer ``avg`` and ``max`` become ``grid8`` (3 x 8 x 8 = 192 values,
an 8 x 8 thumbnail of the normalised face); an explicit ``gridK`` or ``flatten`` is kept.
"""

from __future__ import annotations

import re

import numpy as np

from faceaudit.errors import InputError

FLATTEN_MAX_DIM = 65536
INPUT_GRID = 8
POOLINGS = ("avg", "max", "gridK", "flatten")


def parse_pooling(spec: str) -> tuple[str, int]:
    """Validate a pooling spec; return (kind, k) with k the grid size (0 when unused)."""
    s = str(spec).strip().lower()
    if s in ("avg", "max", "flatten"):
        return s, 0
    m = re.fullmatch(r"grid:?(\d+)", s)
    if m and 1 <= int(m.group(1)) <= 64:
        return "grid", int(m.group(1))
    raise InputError(
        f"Unknown pooling {spec!r}. Use avg (global average), max, gridK (K x K spatial average, e.g. grid4) "
        "or flatten."
    )


def _adaptive_avg(x: np.ndarray, k: int) -> np.ndarray:
    """(N, C, H, W) -> (N, C, k, k) with torch.nn.AdaptiveAvgPool2d bin edges."""
    n, c, h, w = x.shape
    out = np.empty((n, c, k, k), dtype=np.float32)
    for i in range(k):
        h0, h1 = (i * h) // k, -((-(i + 1) * h) // k)
        for j in range(k):
            w0, w1 = (j * w) // k, -((-(j + 1) * w) // k)
            out[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3), dtype=np.float64)
    return out


def pool(
    x: np.ndarray, spec: str = "avg", *, channels_last: bool = False, is_input: bool = False
) -> np.ndarray:
    """Pool one layer's batch output to float32 (N, dim) according to `spec`."""
    kind, k = parse_pooling(spec)
    arr = np.asarray(x)
    if arr.ndim == 0:
        raise InputError("A layer returned a scalar; it has no batch dimension to pool.")
    if arr.ndim == 1:
        return arr.astype(np.float32, copy=False).reshape(-1, 1)
    if arr.ndim == 2:
        return arr.astype(np.float32, copy=False)
    if channels_last and arr.ndim == 4:
        arr = arr.transpose(0, 3, 1, 2)
    if arr.ndim == 3:
        arr = arr[:, :, :, None]
    elif arr.ndim > 4:
        arr = arr.reshape(arr.shape[0], arr.shape[1], -1, 1)
    if is_input and kind in ("avg", "max"):
        kind, k = "grid", INPUT_GRID
    n = arr.shape[0]
    if kind == "avg":
        out = arr.mean(axis=(2, 3), dtype=np.float64) if arr.dtype != np.float32 else arr.mean(axis=(2, 3))
    elif kind == "max":
        out = arr.max(axis=(2, 3))
    elif kind == "grid":
        out = _adaptive_avg(arr, k).reshape(n, -1)
    else:
        d = int(np.prod(arr.shape[1:]))
        if d > FLATTEN_MAX_DIM:
            raise InputError(
                f"flatten pooling would give {d} values per image (shape {list(arr.shape[1:])}), above the "
                f"cap of {FLATTEN_MAX_DIM}. Use gridK pooling (e.g. grid4) or a later layer."
            )
        out = arr.reshape(n, d)
    return np.ascontiguousarray(out, dtype=np.float32)


def pooled_dim(
    shape: tuple[int | None, ...] | None, spec: str = "avg", *, is_input: bool = False, channels_last: bool = False
) -> int | None:
    """Feature dimension a layer of `shape` (batch first) gives under `spec`, or None if unknown."""
    if shape is None:
        return None
    kind, k = parse_pooling(spec)
    dims = list(shape[1:])
    if channels_last and len(dims) == 3:
        dims = [dims[2], dims[0], dims[1]]
    if len(dims) <= 1:
        return dims[0] if dims else 1
    if is_input and kind in ("avg", "max"):
        kind, k = "grid", INPUT_GRID
    c = dims[0]
    if c is None:
        return None
    if kind in ("avg", "max"):
        return c
    if kind == "grid":
        return c * k * k
    if any(d is None for d in dims):
        return None
    return int(np.prod(dims))

__all__ = [
    "FLATTEN_MAX_DIM",
    "INPUT_GRID",
    "POOLINGS",
    "parse_pooling",
    "pool",
    "pooled_dim",
]
