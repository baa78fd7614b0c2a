"""Run settings shared by run, trend and compare, and the one rule for which rows are measured.

One definition keeps the three commands' flags, defaults and row selection in
step: the quick preset, the subsample for the estimators, the minimum number of
readable images and how many failed images a report lists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceaudit.report.schema import SCHEMA_VERSION

__all__ = [
    "EXPRESSIVITY_MAX_ROWS",
    "MAX_FAILED_LISTED",
    "MIN_READABLE_IMAGES",
    "QUICK_ESTIMATOR_OPTIONS",
    "QUICK_MAX_DIM",
    "QUICK_MAX_IMAGES",
    "SCHEMA_VERSION",
    "RunSettings",
    "cache_root",
    "choose_rows",
    "estimator_settings",
    "layers_spec",
]

QUICK_MAX_IMAGES = 2000
#: Faster estimator settings used with `quick=True` by run, trend, compare (and the demo's trend).
QUICK_ESTIMATOR_OPTIONS: dict[str, Any] = {
    "max_steps": 300, "min_steps": 50, "eval_every": 25, "patience": 3, "hidden": 32, "batch_size": 256,
    "folds": 3,
}
#: Features are reduced to at most this many principal components with `quick=True`.
QUICK_MAX_DIM = 16
#: MINE needs thousands of rows, not millions: larger runs are subsampled for the estimators (not for fairness).
EXPRESSIVITY_MAX_ROWS = 20_000
#: A run stops when fewer images than this could be read (by every model).
MIN_READABLE_IMAGES = 10
#: The report lists at most this many of the images that could not be read.
MAX_FAILED_LISTED = 20


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """What `run`, `trend` and `compare` share: the data, the extraction and the estimators.

    One definition keeps the three commands' flags and defaults in step; each
    command's config adds only what is its own.
    """

    manifest: Path | None = None  # None: the built-in phantom faces (see faceaudit.demo.default_data)
    attrs: str | Sequence[str]
    n_faces: int | None = None  # size of the phantom set when `manifest` is None [default: 1,200]
    layers: str | Sequence[str] = "auto"
    estimator: str = "mine"
    estimator_options: Mapping[str, Any] = field(default_factory=dict)
    seeds: int | None = None
    device: str = "auto"
    quick: bool = False
    pooling: str = "avg"
    batch_size: int = 64
    align: bool = False
    backend: str | None = None
    backend_options: Mapping[str, Any] = field(default_factory=dict)
    #: Per-model input-spec keys (trend, compare), keyed by the model's path, file name or label; win over
    #: the spec keys in backend_options for that model.
    input_specs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Check the input spec against channel-order/normalisation variants on a sample of pairs (see spec_check).
    check_input_spec: bool = True
    cache_dir: Path | None = None
    strict: bool = False
    seed: int = 0
    trust_pickle: bool = False
    max_images: int | None = None
    max_dim: int | None = None
    #: The estimators see a seeded random subset of at most this many of the readable images (None: all).
    expressivity_max_rows: int | None = EXPRESSIVITY_MAX_ROWS
    executor_options: Mapping[str, Any] = field(default_factory=dict)
    progress: bool | None = None

    @property
    def n_seeds(self) -> int:
        return self.seeds if self.seeds is not None else 1


def estimator_settings(config: RunSettings) -> tuple[dict[str, Any], int | None]:
    """Estimator options and max_dim in effect: the quick preset, then the user's options on top."""
    options: dict[str, Any] = dict(QUICK_ESTIMATOR_OPTIONS) if config.quick else {}
    options.update(dict(config.estimator_options))
    max_dim = config.max_dim if config.max_dim is not None else (QUICK_MAX_DIM if config.quick else None)
    return options, max_dim


def choose_rows(n: int, config: RunSettings) -> np.ndarray:
    """Row indices to audit: all, or a seeded random subset under --quick / max_images."""
    cap = config.max_images or (QUICK_MAX_IMAGES if config.quick else None)
    if cap is None or n <= cap:
        return np.arange(n)
    rng = np.random.default_rng(config.seed)
    return np.sort(rng.choice(n, size=cap, replace=False))


def cache_root(config: RunSettings, out_dir: Path) -> Path:
    """The feature cache folder: `cache_dir`, else ``OUT/cache``."""
    return Path(config.cache_dir) if config.cache_dir else Path(out_dir) / "cache"


def layers_spec(config: RunSettings) -> str:
    """The layer spec as the report's settings record it."""
    return config.layers if isinstance(config.layers, str) else ",".join(config.layers)
