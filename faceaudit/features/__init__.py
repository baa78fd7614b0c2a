"""Driving feature extraction over a data set: shards, decoding, a resumable Parquet cache, executors.

Images are decoded (Pillow) and preprocessed in a thread pool while the model
runs the previous batch (`LocalExecutor`), or by actors of a Ray cluster
(`RayExecutor`). Each batch of ``batch_size`` consecutive images is one
*shard*: one model call, written atomically as one Parquet file in a cache
folder keyed by everything that changes the numbers. Modules: `schema` (the
shard layout and `FeatureSet`), `cache` (the cache folder), `decode` (one
`decode_batch` for both executors), `executor` (the seam), `local`, `ray`,
and `extract` (the driver, `extract_features`).
"""

from __future__ import annotations

from faceaudit.features.cache import FeatureCache, read_feature_cache
from faceaudit.features.decode import DecodedBatch, decode_batch, infer_batch
from faceaudit.features.executor import Executor, ShardPlan
from faceaudit.features.extract import EXECUTORS, extract_features, resolve_executor
from faceaudit.features.local import LocalExecutor
from faceaudit.features.ray import RayExecutor
from faceaudit.features.sampling import subsample_rows
from faceaudit.features.schema import (
    CACHE_META, CACHE_VERSION, RESERVED_COLUMNS, SHARD_PATTERN, FeatureSet, layer_columns, shard_table, write_shard,
)

__all__ = [
    "CACHE_META", "CACHE_VERSION", "EXECUTORS", "RESERVED_COLUMNS", "SHARD_PATTERN", "DecodedBatch", "Executor",
    "FeatureCache", "FeatureSet", "LocalExecutor", "RayExecutor", "ShardPlan", "decode_batch", "extract_features",
    "infer_batch", "layer_columns", "read_feature_cache", "resolve_executor", "shard_table", "subsample_rows",
    "write_shard",
]
