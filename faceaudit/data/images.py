"""Image decoding with Pillow: any format Pillow reads, to uint8 RGB (H, W, 3).

EXIF orientation is NOT applied, because manifest landmarks are given in the
stored pixel grid of the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from faceaudit.errors import InputError


def decode_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode `path` to a uint8 RGB array (H, W, 3); raise InputError naming the file if unreadable."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    try:
        with Image.open(p) as im:
            rgb = im.convert("RGB")
            return np.asarray(rgb, dtype=np.uint8)
    except FileNotFoundError as exc:
        raise InputError(f"Image {p} does not exist. Check the manifest path.") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"Image {p} cannot be decoded ({type(exc).__name__}: {exc}). Replace or drop it.") from exc
