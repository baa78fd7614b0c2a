"""Image decoding with Pillow: any format Pillow reads, to uint8 RGB (H, W, 3).

EXIF orientation is NOT applied, because manifest landmarks are given in the
stored pixel grid of the file. High-bit-depth greyscale (16-bit PNG and TIFF,
Pillow modes I;16* and I) is scaled to 8 bits (x / 257), not clipped: Pillow's
own convert("RGB") clips it, turning a normal 16-bit face into a white square.
Floating-point images have no fixed range and are refused. Images larger than
Pillow's decompression-bomb limit are refused before they are decoded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from faceaudit.errors import InputError

if TYPE_CHECKING:
    from PIL import Image

_MAX_16BIT = 65535


def _to_rgb(im: "Image.Image", p: Path) -> np.ndarray:
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        grey = np.asarray(im).astype(np.int64)
        if grey.size and (grey.min() < 0 or grey.max() > _MAX_16BIT):
            raise InputError(
                f"Image {p} is a {mode} image with values outside 0..65535, which faceaudit cannot map to grey "
                "levels. Convert it to an 8-bit image."
            )
        grey8 = ((grey * 255 + _MAX_16BIT // 2) // _MAX_16BIT).astype(np.uint8)
        return np.repeat(grey8[..., None], 3, axis=2)
    if mode == "F":
        raise InputError(
            f"Image {p} has floating-point pixels, which have no fixed range of grey levels. Convert it to an "
            "8-bit image."
        )
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def decode_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode `path` to a uint8 RGB array (H, W, 3); raise InputError naming the file if unreadable."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    try:
        with Image.open(p) as im:
            return _to_rgb(im, p)
    except FileNotFoundError as exc:
        raise InputError(f"Image {p} does not exist. Check the manifest path.") from exc
    except Image.DecompressionBombError as exc:
        raise InputError(
            f"Image {p} is too large to decode safely ({exc}). Downscale it or drop it from the manifest."
        ) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"Image {p} cannot be decoded ({type(exc).__name__}: {exc}). Replace or drop it.") from exc

__all__ = [
    "decode_image",
]
