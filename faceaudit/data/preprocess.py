"""Preprocessing spec: from a decoded image to the model's input tensor.

Steps: align from 5 landmarks (when given) or resize to the model's size
(bilinear), reorder channels (RGB/BGR), normalise ``(pixel - mean) / std`` and
lay out as CHW or HWC. The spec is a frozen dataclass whose `to_dict()` is part
of the feature-cache key, so changing any setting misses the cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from faceaudit.data.align import align_face


@dataclass(frozen=True)
class PreprocessSpec:
    """How images become model input; build it with `from_input_spec(model.input_spec)`."""

    height: int = 112
    width: int = 112
    layout: str = "NCHW"
    channel_order: str = "RGB"
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)
    align: bool = True  # use landmarks when they are given
    resize: str = "bilinear"

    @classmethod
    def from_input_spec(cls, spec: Any, **overrides: Any) -> "PreprocessSpec":
        """Preprocessing that matches a backend's InputSpec (optionally overridden)."""
        base = dict(
            height=spec.height, width=spec.width, layout=spec.layout, channel_order=spec.channel_order,
            mean=tuple(spec.mean), std=tuple(spec.std),
        )
        base.update(overrides)
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        return {
            "height": self.height, "width": self.width, "layout": self.layout,
            "channel_order": self.channel_order, "mean": list(self.mean), "std": list(self.std),
            "align": self.align, "resize": self.resize,
        }

    def to_pixels(self, image: np.ndarray, landmarks: np.ndarray | None = None) -> np.ndarray:
        """Aligned or resized uint8 RGB (height, width, 3) crop."""
        if landmarks is not None and self.align:
            return align_face(image, landmarks, (self.width, self.height))
        if image.shape[:2] == (self.height, self.width):
            return image
        from PIL import Image

        resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}[self.resize]
        return np.asarray(Image.fromarray(image).resize((self.width, self.height), resample), dtype=np.uint8)

    def to_tensor(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 RGB (H, W, 3) -> normalised float32 in the model's per-image layout (CHW or HWC)."""
        x = pixels.astype(np.float32)
        if self.channel_order == "BGR":
            x = x[:, :, ::-1]
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if self.layout == "NCHW":
            x = x.transpose(2, 0, 1)
        return np.ascontiguousarray(x, dtype=np.float32)

    def __call__(self, image: np.ndarray, landmarks: np.ndarray | None = None) -> np.ndarray:
        """Decoded uint8 RGB image -> model input for one image."""
        return self.to_tensor(self.to_pixels(image, landmarks))

__all__ = [
    "PreprocessSpec",
]
