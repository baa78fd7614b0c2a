"""The executor seam: what an executor is given (a `ShardPlan`) and what it must do (`Executor.run`).

The driver (`extract_features`) owns the cache, the progress bar and the
result; an executor only computes the shards it is asked for, each with one
model call, and hands each finished shard table to the driver. Options of an
executor live on the executor object (``LocalExecutor(workers=4)``,
``RayExecutor(address=..., actors=...)``), not in the driver's signature.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from faceaudit.backends import Backend
from faceaudit.data.preprocess import PreprocessSpec


__all__ = ["Executor", "ShardPlan", "ShardSink"]

#: Called by an executor with (shard index, shard table) for every finished shard, in any order.
ShardSink = Callable[[int, "pa.Table"], None]


@dataclass(frozen=True, eq=False)
class ShardPlan:
    """Everything needed to compute any shard of one extraction: shard `b` is rows ``b*batch_size ..``.

    `landmarks` is (n, 5, 2) float64 or None; `dims` the pooled dimension of
    each layer; under `strict` an unreadable image raises instead of being recorded.
    """

    model: Backend
    paths: list[str]
    landmarks: np.ndarray | None
    layers: list[str]
    pooling: str
    spec: PreprocessSpec
    dims: list[int]
    batch_size: int
    strict: bool = False
    progress: bool | None = None

    @property
    def n_shards(self) -> int:
        return (len(self.paths) + self.batch_size - 1) // self.batch_size

    def rows(self, b: int) -> range:
        """Row ids (positions in `paths`) of shard `b`."""
        return range(b * self.batch_size, min(len(self.paths), (b + 1) * self.batch_size))

    def shard_paths(self, b: int) -> list[str]:
        return [self.paths[i] for i in self.rows(b)]

    def shard_landmarks(self, b: int) -> np.ndarray | None:
        """Landmarks of shard `b`'s rows (k, 5, 2), or None."""
        if self.landmarks is None:
            return None
        rows = self.rows(b)
        return self.landmarks[rows.start:rows.stop]


class Executor(abc.ABC):
    """Where shards are computed. Subclasses carry their own options and implement `run`.

    Why: the driver stays one copy (cache, resume, progress, result) whatever
    runs the model; a new executor is one class, not new driver parameters.
    """

    #: Recorded as ``FeatureSet.extra["executor"]``.
    name: ClassVar[str] = "executor"

    @abc.abstractmethod
    def run(self, plan: ShardPlan, todo: Sequence[int], finish: ShardSink) -> dict[str, Any]:
        """Compute the shards `todo` of `plan` and call `finish(b, table)` for each as it is done.

        Each table is built with `faceaudit.features.shard_table` from one model
        call on the shard's readable images. Returns what the run measured (it
        goes into ``FeatureSet.extra``).
        """
