"""The shard schema: the row layout every executor writes and every reader reads, and the FeatureSet result.

A shard is ``batch_size`` consecutive images of the image list, computed by one
model call. Each shard has the columns ``row_id`` (int64, the image's index in
the list), ``path`` (string), ``ok`` (bool), ``error`` (string, null when ok)
and one ``fixed_size_list<float32>[dim]`` column per layer, named like the
layer (``layer:<name>`` if the name is one of the four above), null where
``ok`` is false. Both executors build shards with `shard_table`, so the local
and the Ray cache are byte-for-byte the same layout.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from faceaudit._atomic import atomic_open
from faceaudit.errors import InputError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "CACHE_META", "CACHE_VERSION", "RESERVED_COLUMNS", "SHARD_PATTERN", "FeatureSet", "assemble_shards",
    "layer_columns", "read_shard", "shard_table", "write_shard",
]

log = logging.getLogger(__name__)

#: Version of the cache layout; part of the key, so caches of another layout are never read.
CACHE_VERSION = 2
#: Name of the layout file beside the shards (underscore: Parquet readers skip it).
CACHE_META = "_cache.json"
#: File name of shard `b`.
SHARD_PATTERN = "shard_{:06d}.parquet"
#: The fixed columns of every shard; layer columns follow.
RESERVED_COLUMNS = ("row_id", "path", "ok", "error")


@dataclass(frozen=True)
class FeatureSet:
    """Pooled features per layer for the images that could be read.

    `features[layer]` is float32 (n_ok, dim), rows in input order of the images
    with `ok` True; `failed` names each skipped image and why.
    """

    features: Mapping[str, np.ndarray]
    ok: np.ndarray
    failed: list[tuple[str, str]]
    layers: list[str]
    paths: list[str]
    pooling: str
    model_sha256: str
    preprocess: dict[str, Any]
    cache_dir: str | None = None
    n_cached_batches: int = 0
    n_computed_batches: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.ok)

    @property
    def n_ok(self) -> int:
        return int(self.ok.sum())

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_images": self.n,
            "n_ok": self.n_ok,
            "n_failed": len(self.failed),
            "failed": [{"path": p, "reason": r} for p, r in self.failed],
            "layers": [{"name": l, "dim": int(self.features[l].shape[1])} for l in self.layers],
            "pooling": self.pooling,
            "model_sha256": self.model_sha256,
            "preprocess": self.preprocess,
            "cache_dir": self.cache_dir,
            "n_cached_batches": self.n_cached_batches,
            "n_computed_batches": self.n_computed_batches,
            "seconds": self.seconds,
            "executor": self.extra.get("executor", "local"),
        }


def layer_columns(layers: Sequence[str]) -> list[str]:
    """Parquet column name of each layer: the layer's own name, or ``layer:<name>`` if it is a reserved column."""
    return [f"layer:{n}" if n in RESERVED_COLUMNS else n for n in layers]


def shard_table(
    row_ids: Sequence[int],
    paths: Sequence[str],
    ok: np.ndarray,
    errors: Sequence[str],
    feats: Mapping[str, np.ndarray] | None,
    layers: Sequence[str],
    dims: Sequence[int],
) -> "pa.Table":
    """One shard as an Arrow table (the cache's row layout); `feats[layer]` holds the rows with `ok` only.

    Why: both executors build shards here, so the local and the Ray cache are byte-for-byte the same layout.
    """
    import pyarrow as pa

    ok = np.asarray(ok, dtype=bool)
    n = len(ok)
    validity = None if ok.all() else pa.array(ok).buffers()[1]
    cols: dict[str, pa.Array] = {
        "row_id": pa.array(np.asarray(row_ids, dtype=np.int64)),
        "path": pa.array(list(paths), pa.string()),
        "ok": pa.array(ok),
        "error": pa.array([None if good else str(e) for good, e in zip(ok, errors)], pa.string()),
    }
    fields = [pa.field(k, v.type) for k, v in cols.items()]
    for name, col, dim in zip(layers, layer_columns(layers), dims):
        full = np.zeros((n, dim), np.float32)
        if feats is not None and ok.any():
            got = np.asarray(feats[name], dtype=np.float32)
            if got.shape != (int(ok.sum()), dim):
                raise InputError(
                    f"Layer {name!r} gave features of shape {got.shape}, expected ({int(ok.sum())}, {dim})."
                )
            full[ok] = got
        typ = pa.list_(pa.float32(), dim)
        cols[col] = pa.Array.from_buffers(typ, n, [validity], children=[pa.array(full.reshape(-1))])
        fields.append(pa.field(col, typ, metadata={"faceaudit.layer": name}))
    return pa.Table.from_arrays(list(cols.values()), schema=pa.schema(fields))


def write_shard(path: Path, table: "pa.Table") -> None:
    """Write one shard atomically (temporary file beside it, then rename): complete or absent."""
    import pyarrow.parquet as pq

    with atomic_open(path, "wb") as fh:
        pq.write_table(table, fh, compression="snappy", use_dictionary=["path", "error"], write_statistics=["row_id"])


def read_shard(path: Path, row_ids: range, layers: Sequence[str], dims: Sequence[int]) -> "pa.Table | None":
    """A cached shard if it is complete and has the expected rows and columns; None (recompute) otherwise."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
        want = list(RESERVED_COLUMNS) + layer_columns(layers)
        if table.column_names != want:
            raise ValueError(f"columns {table.column_names} instead of {want}")
        if table.num_rows != len(row_ids) or table["row_id"].to_pylist() != list(row_ids):
            raise ValueError("its row_id column does not match the image list")
        for col, dim in zip(layer_columns(layers), dims):
            if table.schema.field(col).type != pa.list_(pa.float32(), dim):
                raise ValueError(f"column {col!r} is {table.schema.field(col).type}, not {dim} float32 values")
        return table
    except Exception as exc:  # a damaged or foreign file: recompute it
        log.warning("Recomputing cache shard %s (%s).", path, exc)
        return None


def assemble_shards(
    tables: Sequence["pa.Table"], layers: Sequence[str], dims: Sequence[int]
) -> tuple[dict[str, np.ndarray], np.ndarray, list[tuple[str, str]], list[str]]:
    """Features of ok rows per layer, the ok flags, the failures and the paths, in row order."""
    oks = [np.asarray(t["ok"].to_numpy(zero_copy_only=False), dtype=bool) for t in tables]
    ok_all = np.concatenate(oks) if oks else np.zeros(0, dtype=bool)
    paths: list[str] = []
    failed: list[tuple[str, str]] = []
    for t, ok in zip(tables, oks):
        p = t["path"].to_pylist()
        paths.extend(p)
        if not ok.all():
            errs = t["error"].to_pylist()
            failed.extend((p[j], str(errs[j])) for j in np.flatnonzero(~ok))
    features: dict[str, np.ndarray] = {}
    for name, col, dim in zip(layers, layer_columns(layers), dims):
        parts = []
        for t, ok in zip(tables, oks):
            if not ok.any():
                continue
            arr = t[col].combine_chunks()
            if not ok.all():
                arr = arr.filter(ok)
            parts.append(np.asarray(arr.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim))
        features[name] = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
    return features, ok_all, failed, paths
