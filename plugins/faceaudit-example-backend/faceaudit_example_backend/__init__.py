"""A minimal faceaudit backend: a PCA "face model" saved as NAME.pcaface.npz.

The file holds `mean` (side*side,) and `components` (k, side*side) of grey face
images; the model's layers are `input`, `grey` (the grey image, flattened) and
`pca` (the k PCA coefficients, its face embedding).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from faceaudit.backends import Backend, InputSpec, LayerInfo
from faceaudit.errors import InputError, ModelError

_SPEC_KEYS = ("channel_order", "mean", "std")


class PcaFaceBackend(Backend):
    name = "pcaface"                      # the same as the entry-point name
    suffixes = (".pcaface.npz",)          # longer than the features plugin's ".npz", so it wins

    def __init__(self, path: str | Path, **options: Any) -> None:
        super().__init__(path, **options)
        unknown = set(options) - {"final_layer", "trust_pickle", *_SPEC_KEYS}
        if unknown:
            raise InputError(f"Unknown option(s) {sorted(unknown)} for the pcaface backend.")
        try:
            with np.load(self.path, allow_pickle=False) as f:   # never unpickle
                mean = np.asarray(f["mean"], np.float32)
                components = np.asarray(f["components"], np.float32)
        except Exception as exc:
            raise ModelError(
                f"{self.path} is not a .pcaface.npz file ({type(exc).__name__}: {exc}). "
                "Save one with numpy.savez(path, mean=..., components=...)."
            ) from exc
        side = int(round(mean.size ** 0.5))
        if mean.ndim != 1 or side * side != mean.size or components.ndim != 2 or components.shape[1] != mean.size:
            raise ModelError(
                f"{self.path}: 'mean' must have side*side values and 'components' shape (k, side*side); "
                f"got {mean.shape} and {components.shape}."
            )
        self._mean, self._components = mean, components
        self._input_spec = InputSpec(height=side, width=side).with_overrides(
            source=f"options for {self.path.name}", **{k: options.get(k) for k in _SPEC_KEYS}
        )
        self._layers = [
            LayerInfo("input", "Input", (None, 3, side, side), 0),   # faceaudit's preprocessed face
            LayerInfo("grey", "Grey", (None, side * side), 1),
            LayerInfo("pca", "PCA", (None, len(components)), 2),
        ]
        self._final = "pca"
        self._check_final(options.get("final_layer"))

    def _run(self, batch: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        # batch: float32 (N, 3, side, side), already (pixel - mean) / std in the spec's channel order
        grey = batch.mean(axis=1).reshape(len(batch), -1)
        out = {"grey": grey, "pca": (grey - self._mean) @ self._components.T}
        return {n: out[n] for n in names}
